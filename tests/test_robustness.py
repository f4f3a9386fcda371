"""Bad input never escapes as anything but SpecError (docs/design.md §2.1: no tracebacks).

Properties (hypothesis; the profile comes from NLC_HYPOTHESIS_PROFILE, see conftest.py):
(a) random text, unicode, control characters and NULs -> `nlc.loads` raises SpecError or loads;
(b) mutations of every seed spec (examples/*.nl + inline specs): tokens and characters deleted,
    duplicated, swapped; keywords, punctuation and unicode inserted; numbers made huge, zero or
    negative; expressions and statements nested thousands deep -> SpecError or a program that
    prints and reparses to itself, never RecursionError or any other exception;
(c) the same for YAML: mutated YAML twins of the seeds and random YAML documents;
(d) the CLI: `nlc check` and `nlc fmt --check` on mutated files exit 0 or 1 (never 3, an
    internal error) and print no traceback;
(e) large input: the front end's work (counted in function calls) grows linearly with the spec,
    brackets nested deeper than 256 and specs over the size limit are refused up front, and spec
    paths that are FIFOs, devices, sockets or folders end with a code instead of hanging.
Deterministic cases pin the nastiest inputs (deep nesting, huge numbers, long chains).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nlc
from nlc.cli import main
from nlc.yaml_printer import print_yaml

from spec_strategies import (INLINE, load_or_none, mutated, mutation, random_yaml, seed_texts,
                             valid_programs)

ROOT = Path(__file__).resolve().parent.parent
SEEDS = seed_texts()
YAML_SEEDS = [print_yaml(p) for p in map(load_or_none, SEEDS) if p is not None]  # YAML twins of the seeds


def check_front_end(text: str, path: str = "<string>") -> None:
    """Loading either raises SpecError (with renderable diagnostics) or gives a printable program."""
    try:
        prog = nlc.loads(text, path)
    except nlc.SpecError as e:
        assert e.diagnostics, "a SpecError without diagnostics"
        for d in e.diagnostics:
            assert d.code[0] == "E" and d.code[1:].isdigit()
            d.render()
            json.dumps(d.to_json())
        str(e)
        return
    printed = nlc.print_program(prog)
    again = nlc.loads(printed)
    assert again == prog, f"print/reparse changed the program:\n{printed}"
    assert nlc.print_program(again) == printed


# ---- (a) random text ------------------------------------------------------------------------

GRAMMAR_WORDS = ["model", "optimizer", "m", "(", ")", "{", "}", "block", "b", "let", "a", "=", "x", "out",
                 "level", "state", "mlp", "dim", "context", "k", ",", "v", "period", "16", "tokens", "repeat",
                 "2", "+", "-", "*", "/", "**", "linear", "1e999", "online", "never", "#", "\n", "loss",
                 "params", "grad", "update", "lr", "0.5", "true", "init", "learned", "objective", "l2"]


@given(st.text())
@example("")
@example("\x00")
@example("model")
@example("model m {")
@example("model m { block b { out = x } }\x00")
@example("\ufeffmodel m { block b { out = x } }")
@example("model m { block b { out = x } }\u2028")
def test_random_text_only_raises_spec_error(text):
    check_front_end(text)


@given(st.text(st.characters(codec=None, blacklist_categories=()), max_size=200))
def test_random_text_any_code_point(text):
    check_front_end(text)


@given(st.lists(st.sampled_from(GRAMMAR_WORDS), max_size=60).map(" ".join))
def test_random_grammar_words(text):
    check_front_end(text)


@given(st.text(), st.sampled_from(["<string>", "x.nl", "x.yaml", "x.yml"]))
def test_random_text_any_format(text, path):
    check_front_end(text, path)


# ---- (b) mutated specs -------------------------------------------------------------------


@settings(max_examples=settings().max_examples * 3)
@given(mutated(SEEDS))
def test_mutated_specs_only_raise_spec_error(text):
    check_front_end(text)


@given(valid_programs().flatmap(mutation))
def test_mutated_random_programs_only_raise_spec_error(text):
    check_front_end(text)


@given(st.sampled_from(SEEDS), st.data())
def test_parameter_overrides_only_raise_spec_error(text, data):
    prog = load_or_none(text)
    if prog is None:
        return
    names = [p.name for p in prog.params] + ["dim", "vocab", "nope"]
    name = data.draw(st.sampled_from(names))
    value = data.draw(st.one_of(st.integers(), st.floats(), st.booleans(), st.sampled_from(
        [0, -1, 10**40, 2**62, 2**63, float("inf"), float("nan"), None, "abc", [1], 1j])))
    try:
        nlc.loads(text, **{name: value})
    except nlc.SpecError as e:
        assert e.diagnostics


SEED = INLINE["titans"]
OUT_EXPR = "out = linear(memory(q), dim)"


def _deep(kind: str) -> str:
    if kind == "paren":
        return SEED.replace(OUT_EXPR, "out = " + "(" * 10000 + "linear(memory(q), dim)" + ")" * 10000)
    if kind == "neg":
        return SEED.replace(OUT_EXPR, "out = " + "- " * 10000 + "linear(memory(q), dim)")
    if kind == "sum":
        return SEED.replace("chunk = 4", "chunk = " + " + ".join(["1"] * 5000))
    if kind == "pow":
        return SEED.replace("chunk = 4", "chunk = " + " ** ".join(["1"] * 5000))
    if kind == "call":
        return SEED.replace(OUT_EXPR, "out = " + "silu(" * 5000 + "x" + ")" * 5000)
    if kind == "tuple":
        return SEED.replace("context (k, v)", "context " + "(" * 5000 + "k, v" + ")" * 5000)
    if kind == "repeat":
        return "model m {\n" + "repeat 2 {\n" * 3000 + "block b { out = x }\n" + "}\n" * 3000 + "}\n"
    if kind == "block":
        return "model m {\n" + "block b {\n" * 3000 + "out = x\n" + "}\n" * 3000 + "}\n"
    if kind == "level":
        return "model m {\n block b {\n" + "level l {\n" * 3000 + "}\n" * 3000 + "out = x }\n}\n"
    if kind == "let_chain":  # each let uses the next one: forward references 2000 long
        lets = "\n".join(f"let a{i} = silu(a{i + 1})" for i in range(2000))
        return f"model m {{\n block b {{\n{lets}\n let a2000 = x\n out = a0\n }}\n}}\n"
    if kind == "like_chain":
        levels = "\n".join(f"level l{i} {{ state like(l{i + 1})\n context (x, x) }}" for i in range(1000))
        return (f"model m {{\n block b {{\n{levels}\n level l1000 {{ state mlp(dim)\n context (x, x) }}\n"
                f" out = {' + '.join(f'l{i}(x)' for i in range(0, 1001, 50))}\n }}\n}}\n")
    if kind == "read_chain":  # a let reads a level whose state size is a let that reads the next level ...
        body = []
        for i in range(500):
            body.append(f"let c{i} = 4 + 0 * mean(l{i + 1}(x))")
            body.append(f"level l{i} {{ state mlp(c{i})\n context (x, x) }}")
        body.append("level l500 { state mlp(dim)\n context (x, x) }")
        return "model m {\n block b {\n" + "\n".join(body) + "\n out = l0(x)\n }\n}\n"
    if kind == "many_lets":
        lets = "\n".join(f"let a{i + 1} = a{i} + x" for i in range(5000))
        return f"model m {{\n block b {{\n let a0 = x\n{lets}\n out = a5000\n }}\n}}\n"
    if kind == "params":
        params = ", ".join(f"p{i + 1} = p{i} + 1" for i in range(3000))
        return f"model m(p0 = 1, {params}) {{\n block b {{ out = x * p3000 }}\n}}\n"
    if kind == "long_line":
        return SEED.replace(OUT_EXPR, "out = " + "x" * 1_000_000)
    if kind == "brackets":
        return "(" * 100_000
    raise AssertionError(kind)


DEEP = ["paren", "neg", "sum", "pow", "call", "tuple", "repeat", "block", "level", "let_chain",
        "like_chain", "read_chain", "many_lets", "params", "long_line", "brackets"]


@pytest.mark.parametrize("kind", DEEP)
def test_deep_nesting_and_long_chains(kind):
    check_front_end(_deep(kind))


@pytest.mark.parametrize("number", ["1e999", "1" + "0" * 40, "0", "-1", "9" * 5000, "0" * 5000 + "1",
                                    "1e-400", "4611686018427387905", "2 ** 10000", "10 ** 40", "1 / 0",
                                    "(-1) ** 0.5", "1e308 * 10", "sqrt(-1)", "exp(1000)", "0.0", "-0"])
@pytest.mark.parametrize("where", ["chunk = 4", "depth = 2", "dim = 32", "0.01", "4 * dim", "conv(linear(h, dim), 4)"])
def test_weird_numbers(number, where):
    replacement = {"chunk = 4": f"chunk = {number}", "depth = 2": f"depth = {number}",
                   "dim = 32": f"dim = {number}", "0.01": number, "4 * dim": f"{number} * dim",
                   "conv(linear(h, dim), 4)": f"conv(linear(h, dim), {number})"}[where]
    check_front_end(SEED.replace(where, replacement, 1))


# ---- (c) YAML --------------------------------------------------------------------------------


@settings(max_examples=settings().max_examples * 2)
@given(mutated(YAML_SEEDS, yaml_mode=True))
def test_mutated_yaml_only_raises_spec_error(text):
    check_front_end(text, "x.yaml")


@given(random_yaml())
def test_random_yaml_only_raises_spec_error(text):
    check_front_end(text, "x.yaml")


YAML_CASES = {
    "recursive_alias": "model: m\nbody: &a\n  - block b: *a\n",
    "billion_laughs": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
                      "model: m\nbody: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    "python_tag": "model: !!python/object/apply:os.system ['true']\n",
    "deep_flow": "model: m\nbody: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep_map": "model: m\nbody: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "deep_repeats": "model: m\nbody:\n" + "".join("  " * i + "- repeat 1:\n" for i in range(150))
                    + "  " * 150 + "- block b:\n" + "  " * 151 + "- out: x\n",
    "bad_names": "model: m\nbody:\n - block é x:\n   - let 1a: x\n   - out: x\n",
    "deep_expr": "model: m\nbody:\n - block b:\n   - out: " + "(" * 10000 + "x" + ")" * 10000 + "\n",
    "huge_number": "model: m\nparams: {a: " + "9" * 5000 + "}\nbody: []\n",
    "empty": "",
    "only_comment": "# nothing\n",
    "two_documents": "model: m\n---\nmodel: n\n",
    "tab_indent": "model: m\nbody:\n\t- block b: []\n",
    "null_everything": "model: ~\nparams: ~\nbody: ~\n",
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_yaml_cases(case):
    check_front_end(YAML_CASES[case], "x.yaml")


# ---- (d) the CLI -----------------------------------------------------------------------------

CLI_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert code in (0, 1), f"nlc {' '.join(argv)} exited {code}:\n{text}"
    assert "Traceback" not in text and "internal error" not in text, text
    return code, text


@CLI_SETTINGS
@given(text=st.one_of(mutated(SEEDS), mutated(YAML_SEEDS, yaml_mode=True).map(lambda t: "YAML" + t)))
def test_cli_check_and_fmt_on_mutated_specs(tmp_path, capsys, text):
    if text.startswith("YAML"):
        path = tmp_path / "spec.yaml"
        text = text[4:]
    else:
        path = tmp_path / "spec.nl"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    capsys.readouterr()
    code, _ = _run_cli(capsys, ["check", str(path)])
    _run_cli(capsys, ["check", "--json", str(path)])
    fmt_code, _ = _run_cli(capsys, ["fmt", "--check", str(path)])
    if code == 0 and path.suffix == ".nl":
        # a spec that checks can be formatted, after which it is canonical and still checks
        assert _run_cli(capsys, ["fmt", str(path)])[0] == 0
        assert _run_cli(capsys, ["fmt", "--check", str(path)])[0] == 0
        assert _run_cli(capsys, ["check", str(path)])[0] == 0
    elif code == 1:
        assert fmt_code == 1


@CLI_SETTINGS
@given(data=st.binary(max_size=300))
def test_cli_on_random_bytes(tmp_path, capsys, data):
    path = tmp_path / "spec.nl"
    path.write_bytes(data)
    capsys.readouterr()
    _run_cli(capsys, ["check", str(path)])
    _run_cli(capsys, ["fmt", "--check", str(path)])


@pytest.mark.parametrize("kind", ["repeat", "let_chain", "paren", "brackets"])
def test_cli_on_deep_specs(tmp_path, capsys, kind):
    path = tmp_path / "deep.nl"
    path.write_text(_deep(kind))
    _run_cli(capsys, ["check", str(path)])
    _run_cli(capsys, ["fmt", "--check", str(path)])


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999", "0", "-1", "1" + "0" * 40, "true"])
def test_cli_parameter_overrides(tmp_path, capsys, value):
    path = tmp_path / "titans.nl"
    path.write_text(SEED)
    _run_cli(capsys, ["check", "-p", f"dim={value}", str(path)])
    _run_cli(capsys, ["check", "-p", f"chunk={value}", str(path)])


@pytest.mark.parametrize("name", ["missing.nl", "a" * 5000 + ".nl", "folder", "empty.nl", "empty.yaml"])
def test_cli_on_unreadable_or_odd_paths(tmp_path, capsys, name):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.nl").write_text("")
    (tmp_path / "empty.yaml").write_text("")
    path = str(tmp_path / name)
    assert _run_cli(capsys, ["check", path])[0] == 1
    assert _run_cli(capsys, ["fmt", "--check", path])[0] == 1
    with pytest.raises(nlc.SpecError):
        nlc.load(path)


# ---- (e) large input and paths that are not files ------------------------------------------
# Scaling is measured by counting Python function calls (cProfile), never by wall time: a front
# end that is linear does about 4 times the calls for an input 4 times as large.


def _calls_to_load(text: str, path: str) -> int:
    """The number of Python function calls `nlc.loads(text, path)` makes (SpecError allowed)."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        nlc.loads(text, path)
    except nlc.SpecError:
        pass
    finally:
        profile.disable()
    return pstats.Stats(profile).total_calls


def _growth(make, path: str, n: int) -> float:
    """How many times more calls loading make(4 n) takes than loading make(n)."""
    _calls_to_load(make(1), path)  # build the parsers first: their one-off cost is not the input's
    return _calls_to_load(make(4 * n), path) / _calls_to_load(make(n), path)


def _commented_lets(n: int) -> str:  # every line carries a comment: comments were attached in quadratic time
    lets = "".join(f"    let a{i + 1} = a{i} + x  # step {i}\n" for i in range(n))
    return f"# a long chain\nmodel m {{\n  block b {{  # the block\n    let a0 = x\n{lets}    out = a{n}\n  }}\n}}\n"


def _commented_levels(n: int) -> str:
    levels = "".join(f"    # level {i}\n    level l{i} {{  # opens\n      state mlp(dim)  # state\n"
                     f"      context (x, x)\n    }}\n    let s{i + 1} = s{i} + l{i}(x)\n" for i in range(n))
    return f"model m {{\n  block b {{\n    let s0 = x\n{levels}    out = s{n}  # last\n  }}\n}}\n"


def _yaml_lets(n: int) -> str:  # each YAML expression used to be parsed after a blanked copy of the whole file
    lets = "".join(f"      - let a{i + 1}: a{i} + x\n" for i in range(n))
    return f"model: m\nbody:\n  - block b:\n      - let a0: x\n{lets}      - out: a{n}\n"


def _yaml_levels(n: int) -> str:
    levels = "".join(f"      - level l{i}:\n          state: mlp(dim)\n          context: (x, x)\n"
                     f"          online: true\n      - let s{i + 1}: s{i} + l{i}(x)\n" for i in range(n))
    return f"model: m\nbody:\n  - block b:\n      - let s0: x\n{levels}      - out: s{n}\n"


@pytest.mark.parametrize("make, path, n", [(_commented_lets, "m.nl", 150), (_commented_levels, "m.nl", 40),
                                           (_yaml_lets, "m.yaml", 150), (_yaml_levels, "m.yaml", 40)],
                         ids=["nl_commented_lets", "nl_commented_levels", "yaml_lets", "yaml_levels"])
def test_front_end_work_grows_linearly(make, path, n):
    nlc.loads(make(n), path)  # the inputs are valid specs: the whole front end runs
    assert _growth(make, path, n) < 6


def test_deep_brackets_are_rejected_before_parsing():
    def parens(n: int) -> str:
        return "model m {\n block b {\n  out = " + "(" * n + "x" + ")" * n + "\n }\n}\n"

    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(parens(1000))
    assert e.value.codes == ["E108"] and "brackets nested more than 256 deep" in str(e.value)
    assert e.value.diagnostics[0].span.col == len("  out = ") + 255  # inside `model {` and `block {`: the 257th bracket
    assert _growth(parens, "m.nl", 2000) < 1.5  # a million `(` cost what a thousand do
    yaml_text = "model: m\nbody:\n - block b:\n   - out: " + "(" * 1000 + "x" + ")" * 1000 + "\n"
    with pytest.raises(nlc.SpecError) as e:  # YAML reads every character, but lark no longer parses them
        nlc.loads(yaml_text, "m.yaml")
    assert e.value.codes == ["E108"]
    span = e.value.diagnostics[0].span
    assert (span.line, span.col, span.text) == (4, len("   - out: ") + 257, "(")


def test_a_spec_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.nl"
    with open(big, "wb") as f:  # sparse: nothing is written, and nothing must be read
        f.truncate(10 * 2**20)
    with pytest.raises(nlc.SpecError) as e:
        nlc.load(big)
    assert e.value.codes == ["E121"]
    assert str(e.value) == (f"error[E121]: {big} is too large: 10485760 bytes (the limit is 262144 bytes)\n"
                            "  = hint: specs are a few kilobytes; for a larger one raise the limit: "
                            "NLC_MAX_SPEC_BYTES=524288")
    text = SEED + "#" * (1000 - len(SEED))
    monkeypatch.setenv("NLC_MAX_SPEC_BYTES", "1000")
    nlc.loads(text)  # at the limit
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text + "\n", "m.yaml")
    assert e.value.codes == ["E121"] and "1001 characters (the limit is 1000 bytes)" in str(e.value)
    monkeypatch.setenv("NLC_MAX_SPEC_BYTES", "lots")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(SEED)
    assert e.value.codes == ["E121"] and "NLC_MAX_SPEC_BYTES='lots' is not a positive whole number" in str(e.value)


def _socket(path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


PATH_KINDS = {  # kind: (how to make it at a path, or an existing path; the code it must end with)
    "fifo": (lambda p: os.mkfifo(p), "E604"),
    "dev_zero": ("/dev/zero", "E604"),
    "dev_null": ("/dev/null", "E604"),
    "socket": (_socket, "E604"),
    "directory": (lambda p: p.mkdir(), "E601"),
    "symlink_to_dev_zero": (lambda p: p.symlink_to("/dev/zero"), "E604"),
}


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
def test_a_spec_path_that_is_not_a_regular_file_ends_with_a_code(tmp_path, kind):
    """`nlc check` and `nlc fmt` end (a FIFO used to block forever, /dev/zero to fill memory) with the
    code; in a child process with a timeout and a memory cap, so that a regression fails the test."""
    make, code = PATH_KINDS[kind]
    if isinstance(make, str):
        path = Path(make)
        if not path.exists():
            pytest.skip(f"no {make} here")
    else:
        path = tmp_path / f"{kind}.nl"
        try:
            make(path)
        except (AttributeError, OSError, NotImplementedError) as e:  # no mkfifo, AF_UNIX or symlinks here
            pytest.skip(f"cannot make a {kind}: {e}")
    script = ("import sys; from nlc.cli import main\n"
              "sys.exit(max(main(['check', sys.argv[1]]), main(['fmt', '--check', sys.argv[1]])))")
    try:
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                              timeout=120, preexec_fn=_cap_memory, cwd=ROOT, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"nlc check/fmt on a {kind} did not finish in 120 s")
    assert done.returncode == 1, done.stderr
    assert done.stderr.count(f"error[{code}]") == 2, done.stderr  # once from check, once from fmt
    assert "Traceback" not in done.stderr
    if kind in ("directory", "socket", "dev_null"):  # cannot hang even before the fix: the API in this process too
        with pytest.raises(nlc.SpecError) as e:
            nlc.load(path)
        assert e.value.codes == [code]


def _cap_memory() -> None:
    """In the child: at most 4 GiB of address space, so that reading /dev/zero fails fast, not the machine."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    except (ImportError, ValueError, OSError):
        pass


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
