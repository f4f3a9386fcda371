"""Nothing a user controls becomes code: injection through file names and run folders, and
spec names that collide with what generated code (or nn.Module) owns.

Issue: a spec file name holding a newline or triple quotes used to be pasted into the
generated header, so `nlc compile` / `nlc.build` ran it; names such as `forward`, `to`,
`training`, `f`, `model` or `full` checked cleanly, then crashed the build.
"""

from __future__ import annotations

import builtins
import json
import keyword
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nlc
from nlc.cli import main as nlc_main
from nlc.codegen.safety import audit_source
from nlc.names import BLOCK_ATTRIBUTES, GENERATOR_NAMES, GENERATOR_SUFFIXES, NameAllocator, py_name
from nlc.testing import check_matches_reference, check_streaming
from nlc.testing.settings import for_property

ROOT = Path(__file__).resolve().parent.parent
TITANS = (ROOT / "examples" / "titans_lmm.nl").read_text()
ADAM = (ROOT / "examples" / "adam.nl").read_text()

# File names a careless or hostile user can create: each tries to end a comment or a
# docstring and run `touch CANARY` (relative: the test runs in a temporary folder).
PAYLOAD = "__import__('os').system('touch CANARY')"
HOSTILE_NAMES = [
    f"a\n{PAYLOAD}\n#",
    f'b"""\n{PAYLOAD}\n"""#',
    f"c'''\n{PAYLOAD}\n'''#",
    f'd"\n{PAYLOAD}\n"',
    f"e\\\n{PAYLOAD}\n#",
    f"f\r{PAYLOAD}\r#",
    f"g\u2028{PAYLOAD}\u2029#",
    f"h\x0b\x0c{PAYLOAD}\x85#",
    f'i"""; {PAYLOAD}; """',
    "import os",
    "__init__",
    "class",
]


def _audit_ok(source: str) -> None:
    audit_source(source, "test")  # raises SpecError E505 on anything nlc does not mean to emit
    header = source.splitlines()[:3]
    assert all(line.startswith("# ") for line in header), header


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
@pytest.mark.parametrize("spec", ["model", "optimizer"])
def test_hostile_spec_file_names_never_run(tmp_path, monkeypatch, name, spec):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{name}.nl"
    path.write_text(TITANS.replace("dim = 64", "dim = 8") if spec == "model" else ADAM)
    prog = nlc.load(path)
    source = nlc.generate(prog)
    _audit_ok(source)
    if spec == "model":
        model = nlc.build(prog)
        model(torch.zeros(1, 4, dtype=torch.long))
    else:
        nlc.build_optimizer(path, [nn.Parameter(torch.zeros(2))])
    out = tmp_path / "out.py"
    assert nlc_main(["compile", str(path), "-o", str(out)]) == 0
    subprocess.run([sys.executable, str(out)], cwd=tmp_path, check=True, capture_output=True)
    assert not (tmp_path / "CANARY").exists()


def test_edited_run_config_never_runs_code(tmp_path, monkeypatch):
    """`nlc eval` rebuilds a model from a run's config.json: an edited spec path must not become code."""
    from nlc.train import loop

    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "tiny.nl"
    spec.write_text(TITANS.replace("dim = 64", "dim = 8").replace("layers = 2", "layers = 1"))
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    run = tmp_path / "run"
    loop.train(str(spec), run, task="lm", data=[str(data)], steps=2, batch=2, seq=16, quiet=True, eval_batches=1)
    config = json.loads((run / "config.json").read_text())
    for name in HOSTILE_NAMES[:4]:
        config["spec"]["path"] = name
        (run / "config.json").write_text(json.dumps(config))
        proc = subprocess.run([sys.executable, "-m", "nlc", "eval", str(run), "--batches", "1"], cwd=tmp_path,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize("bad", [
    "import os\n",
    "from subprocess import run\n",
    "exec('1')\n",
    "x = eval\n",
    "x = (lambda: 1)\n",
    "x = torch.__class__\n",
    "x = getattr(torch, 'zeros')\n",
    "def f():\n    global y\n",
    "x = [y async for y in z]\n",
    "with open('f') as g:\n    pass\n",
    "x = 1 +\n",
])
def test_the_audit_rejects_what_nlc_never_emits(bad):
    with pytest.raises(nlc.SpecError) as e:
        audit_source("import torch\n" + bad, "bad")
    assert e.value.diagnostics[0].code == "E505"


def test_the_audit_accepts_every_checked_in_module():
    for path in sorted((ROOT / "generated").glob("*.py")):
        _audit_ok(path.read_text())


# ---- names -------------------------------------------------------------------------------------

NAME_POOL = sorted(
    {n for n in keyword.kwlist + keyword.softkwlist if n.isidentifier()}
    | {"print", "len", "range", "dict", "list", "type", "super", "object", "id", "exec", "eval", "open"}
    | {n for n in dir(nn.Module) if not n.startswith("__")}
    | {"__class__", "__init__", "__dict__", "__call__", "__foo", "__x__", "_", "__"}
    | GENERATOR_NAMES | BLOCK_ATTRIBUTES
    | {f"q{suffix}" for suffix in GENERATOR_SUFFIXES} | {"period4_ends", "m_init", "m_state", "f", "model", "Model"}
    - {"true", "false"}  # the language's own booleans
)
# a grammar keyword cannot be a name (`let`, `level`, `block`, `out`, `state`, ...): the parser says so
GRAMMAR_WORDS = {"model", "optimizer", "let", "out", "block", "repeat", "level", "state", "init", "context",
                 "objective", "update", "lr", "retain", "period", "tokens", "steps", "never", "online", "debias",
                 "true", "false"}

SPEC = """\
model {model}(dim = 8, chunk = 4, {param} = 2) {{
  repeat {param} {{
    block {block} {{
      let {a} = rmsnorm(x)
      let {b} = linear({a}, dim)
      level {m} {{
        state mlp(dim, 2 * dim, depth = 2, residual = true)
        init learned
        context (l2norm({b}), {b})
        objective l2
        update momentum(beta = sigmoid(linear({a}, 1)))
        lr 0.1
        period chunk tokens
      }}
      out = linear({m}({b}), dim) + {a}
    }}
  }}
  block {block2} {{
    let {a} = rmsnorm(x)
    level {s} {{
      state mlp(dim, dim)
      init learned
      context loss
      objective dot
      update gd
      lr 0.01
      period 2 steps
    }}
    out = {s}({a})
  }}
}}
"""


def _ok(name: str) -> bool:
    return name.isidentifier() and name not in GRAMMAR_WORDS


names = st.sampled_from([n for n in NAME_POOL if _ok(n)])


@for_property("names")
@given(st.fixed_dictionaries({k: names for k in ("model", "param", "block", "block2", "a", "b", "m", "s")}))
def test_any_name_the_grammar_accepts_builds_and_agrees(chosen):
    if len({chosen[k] for k in ("param", "a", "b", "m", "s")}) < 5 or chosen["block"] == chosen["block2"] \
            or chosen["param"] in ("dim", "chunk"):
        return  # names in one scope must differ (E203 says so); the spec declares dim and chunk itself
    text = SPEC.format(**chosen)
    try:
        prog = nlc.loads(text)
        nlc.check(prog)
    except nlc.SpecError as e:
        # the only names check may refuse are builtins and parameters that a definition would shadow
        assert {d.code for d in e.diagnostics} <= {"E204"}, e.render()
        return
    tokens = torch.randint(0, 256, (2, 8))
    check_matches_reference(prog, tokens)
    check_streaming(prog, tokens)


def test_py_name_is_one_to_one_and_never_reserved():
    alloc = NameAllocator()
    pool = [n for n in NAME_POOL] + [n + "_" for n in NAME_POOL]
    got = [alloc.take(n) for n in pool]
    assert len(set(got)) == len(got)
    for n in got:
        assert n.isidentifier() and not keyword.iskeyword(n)
        assert n not in dir(builtins) and n not in dir(nn.Module) and n not in GENERATOR_NAMES
        assert not n.startswith("__") and not n.endswith(GENERATOR_SUFFIXES)
    assert py_name("memory") == "memory" and py_name("forward") == "forward_" and py_name("__x") == "v__x"


def test_block_attributes_list_is_complete():
    """Every attribute the generated and reference classes add to nn.Module is reserved."""
    prog = nlc.loads(SPEC.format(model="m", param="layers", block="b", block2="c", a="a", b="k", m="mem", s="slow"))
    loss = nlc.loads("model l(dim = 8) { block b { level cms { state mlp(dim) context loss period 2 tokens }\n"
                     "out = cms(x) } }")  # a model with a `context loss` level in tokens has more
    base = set(dir(nn.Module()))
    models = [nlc.build(p, **kw) for p in (prog, loss) for kw in ({}, {"backend": "reference"})]
    for model in models:
        for obj in (model, *model.blocks):
            extra = {n for n in dir(obj) if not n.startswith("_")} - base - set(obj._modules)
            assert extra <= BLOCK_ATTRIBUTES, (type(obj).__name__, extra - BLOCK_ATTRIBUTES)
