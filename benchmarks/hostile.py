#!/usr/bin/env python3
"""A census of hostile input (issue #17): for each of the issue's nine classes, generate a corpus,
run every input the way a user would, and count what each gets.

Outcomes of one input:
    ok         accepted and ran
    coded      refused with a diagnostic that has a code (Exxx; the code is recorded)
    traceback  a Python traceback, `internal error`, an uncoded exception or a crash: a BUG
    canary     the input ran code (a CANARY file appeared in its working folder): a BUG
    hang       it did not finish within its time limit: a BUG
    wrong      accepted, but the class can tell it should not have been (a state of another model,
               a duplicate YAML key, outputs that differ between the back ends): a BUG

Every input runs in a forked child of this process (nlc and torch are imported once, before the
fork) in a fresh temporary working folder, with a cap on its address space and a time limit, so
that a hang, a runaway allocation or a crash is one counted outcome, not the end of the census.
The corpora reuse the test suite's where it has them (tests/test_hostile_codegen.py,
tests/test_train_hostile.py, tests/test_robustness.py, tests/test_streaming_api.py).

    OMP_NUM_THREADS=1 python benchmarks/hostile.py                  # all classes, a few minutes
    python benchmarks/hostile.py --classes 2,8 --out census.json     # some classes, JSON of every input
    python benchmarks/hostile.py --quick                             # a few inputs a class

Exit status: 0 when no input got a BUG outcome, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # nlc of this checkout, and the test corpora

import torch  # noqa: E402

import nlc  # noqa: E402
from nlc.cli import main as nlc_main  # noqa: E402

BUGS = ("traceback", "canary", "hang", "wrong")
OUTCOMES = ("ok", "coded") + BUGS
TITANS = str(ROOT / "examples" / "titans_lmm.nl")
HOPE = str(ROOT / "examples" / "hope.nl")
TINY = ["-p", "dim=8", "-p", "layers=1", "-p", "chunk=4"]
TRAIN_TINY = TINY + ["--batch", "1", "--seq", "8", "--steps", "2", "--eval-batches", "1", "--quiet"]
EXTRA_BYTES = 3 << 30  # the address space an input may add to this process's before it fails


@dataclass
class Result:
    cls: int
    name: str
    outcome: str
    codes: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class Case:
    """One input: run(workdir) -> (outcome, codes, detail), in a child, in a fresh folder."""
    name: str
    run: Callable[[Path], tuple[str, list[str], str]]
    timeout: float = 60.0


# ---- running one input --------------------------------------------------------------------------

CODE = re.compile(r"(?:error|warning)\[(E\d{3})\]")


def cli(argv: list[str], expect: str | None = None) -> tuple[str, list[str], str]:
    """`nlc ARGV` in this process, its output captured, classified. expect="refused": acceptance is wrong."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = nlc_main([str(a) for a in argv])
        except SystemExit as e:  # argparse: usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return classify(rc, err.getvalue(), expect)


def classify(rc: int, err: str, expect: str | None = None) -> tuple[str, list[str], str]:
    codes = CODE.findall(err)
    errors = re.findall(r"error\[(E\d{3})\]", err)
    if "Traceback" in err or "internal error" in err or rc == 3:
        return "traceback", codes, err.strip()[-400:]
    if rc == 0:
        if expect == "refused":
            return "wrong", codes, "accepted: " + err.strip()[-200:]
        return "ok", codes, ""
    if errors:
        return "coded", errors, err.strip().splitlines()[0][:200]
    return "traceback", codes, f"exit {rc} without a code: {err.strip()[-300:]}"


def api(call: Callable[[], object], expect: str | None = None) -> tuple[str, list[str], str]:
    """A Python API call: a SpecError is coded, any other exception a traceback."""
    try:
        call()
    except nlc.SpecError as e:
        return "coded", list(e.codes), str(e).splitlines()[0][:200]
    except Exception as e:  # noqa: BLE001 - what the census counts
        return "traceback", [], f"{type(e).__name__}: {str(e)[:300]}"
    if expect == "refused":
        return "wrong", [], "accepted"
    return "ok", [], ""


def _cap_address_space() -> None:
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + EXTRA_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def isolated(case: Case, cls: int) -> Result:
    """Run case in a forked child in a fresh folder: its outcome, or hang / crash / canary as seen from here."""
    work = Path(tempfile.mkdtemp(prefix="nlc-hostile-"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        try:
            os.chdir(work)
            os.setpgid(0, 0)
            _cap_address_space()
            outcome = case.run(work)
        except BaseException as e:  # noqa: BLE001
            outcome = ("traceback", [], f"{type(e).__name__}: {str(e)[:300]}")
        with os.fdopen(w, "w") as f:
            f.write(json.dumps(list(outcome)))
        os._exit(0)
    os.close(w)
    data, deadline = b"", time.monotonic() + case.timeout
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([f], [], [], max(left, 0))
            if not ready:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                break
            chunk = os.read(f.fileno(), 1 << 16)
            if not chunk:
                break
            data += chunk
    _, status = os.waitpid(pid, 0)
    canary = any(p.name.startswith("CANARY") for p in work.rglob("*"))
    shutil.rmtree(work, ignore_errors=True)
    if canary:
        return Result(cls, case.name, "canary", [], "a CANARY file appeared")
    if not data and time.monotonic() >= deadline:
        return Result(cls, case.name, "hang", [], f"no answer in {case.timeout:.0f} s")
    if not data:
        return Result(cls, case.name, "traceback", [], f"the child died: status {status}")
    outcome, codes, detail = json.loads(data)
    return Result(cls, case.name, outcome, codes, detail)


# ---- corpora ------------------------------------------------------------------------------------

def _tiny_titans() -> str:
    return Path(TITANS).read_text().replace("dim = 64", "dim = 8").replace("layers = 2", "layers = 1")


def _corpus_text(folder: Path) -> Path:
    f = folder / "corpus.txt"
    f.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}  # value {i}\n" for i in range(3000)))
    return f


# (1) code execution: file names and edited run records that try to run `touch CANARY`

def class1_code_execution(quick: bool, shared: Path) -> list[Case]:
    from test_hostile_codegen import ADAM, HOSTILE_NAMES, PAYLOAD

    breakers = ["\n", '"""', "'''", '"', "'", "\\", "\r", "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\x1c",
                "\x1d", "\x1e", "\\\n", "\r\n", "#", "{", "}", "%s", "{0}", "*)", "-->", "\t"]  # no `/`: a file name
    names = list(HOSTILE_NAMES) + [f"{b}{PAYLOAD}{b}#" for b in breakers]
    names += ["def", "lambda", "__import__", "__builtins__", "None", "True", "__name__", "𝔡𝔢𝔣"]
    if quick:
        names = names[:3]
    cases = []
    for i, name in enumerate(names):
        for kind, text in (("model", _tiny_titans()), ("optimizer", ADAM)):
            cases.append(Case(f"file name {i} ({kind})", _compile_and_run(name, kind, text)))
    if not quick:
        cases += _edited_run_records(names[:12], shared)
        cases += [Case(f"run folder and data named {i}", _named_run(name), timeout=120) for i, name in enumerate(names[:8])]
    return cases


def _named_run(name: str):
    """`nlc train` with --out and --data named `name`, then `nlc eval` of that run."""
    def run(work: Path):
        data = _write(work / f"{name}.txt", "the quick brown fox jumps over the lazy dog. " * 200)
        got = cli(["train", TITANS, "--out", work / name, *TRAIN_TINY, "--data", data])
        if got[0] != "ok":
            return got
        return cli(["eval", work / name, "--tokens", "64"])
    return run


def _compile_and_run(name: str, kind: str, text: str):
    def run(work: Path):
        path = work / f"{name}.nl"
        path.write_text(text)
        prog = nlc.load(path)
        if kind == "model":
            nlc.build(prog)(torch.zeros(1, 4, dtype=torch.long))
        else:
            nlc.build_optimizer(path, [torch.nn.Parameter(torch.zeros(2))])
        got = cli(["compile", path, "-o", work / "out.py"])
        if got[0] != "ok":
            return got
        import runpy

        runpy.run_path(str(work / "out.py"))  # the generated module, as `python out.py` would run it
        return got
    return run


def _base_run(shared: Path) -> Path:
    """A finished tiny titans run (checkpoints at 2 and 4), made once and copied by each input."""
    run = shared / "titans"
    if not run.exists():
        from test_train_hostile import _opts

        from nlc.train import loop
        loop.train(TITANS, run, **_opts(str(_corpus_text(shared))))
    return run


def _edited_run_records(names: list[str], shared: Path) -> list[Case]:
    from test_hostile_codegen import PAYLOAD

    def edit_config(change: Callable[[dict], None], command: str):
        def run(work: Path):
            copy = work / "run"
            shutil.copytree(_base_run(shared), copy)
            config = json.loads((copy / "config.json").read_text())
            change(config)
            (copy / "config.json").write_text(json.dumps(config))
            argv = (["eval", copy, "--tokens", "64"] if command == "eval"
                    else ["train", TITANS, "--out", copy, "--resume", "--quiet"])
            return cli(argv)
        return run

    edits = {f"spec.path {i}": (lambda c, n=n: c["spec"].update(path=n)) for i, n in enumerate(names)}
    edits["spec.text with a payload"] = lambda c: c["spec"].update(text=c["spec"]["text"] + f"\n# {PAYLOAD}\n")
    edits["spec.name a payload"] = lambda c: c["spec"].update(name=f'x"""\n{PAYLOAD}\n"""')
    edits["params a payload"] = lambda c: c["train"]["params"].update(dim=PAYLOAD)
    edits["params key a payload"] = lambda c: c["train"]["params"].update({f"x=1)\n{PAYLOAD}\n#": 1})
    return [Case(f"run config {k} ({cmd})", edit_config(e, cmd), timeout=120)
            for k, e in edits.items() for cmd in ("eval", "resume")]


# (2) names: each name of the pool in each role of a spec: check, build, run, and agree with the reference

def class2_names(quick: bool, shared: Path) -> list[Case]:
    from test_hostile_codegen import NAME_POOL, SPEC

    from nlc.names import GENERATOR_NAMES
    base = dict(model="m", param="layers", block="b", block2="c", a="a", b="k", m="mem", s="slow")
    wanted = ["f", "model", "Model", "chunk", "full", "__class__", "forward", "training", "parameters", "state_dict",
              "to", "cuda", "type", "print", "match", "case", "_", "__init__", "__dict__", "self", "x", "torch",
              "nn", "F", "math", "super", "None", "dim", "tokens", "state", "level"]
    pool = list(dict.fromkeys(wanted + sorted(GENERATOR_NAMES) + NAME_POOL))
    pool = pool[:6] if quick else pool[:100]
    roles = ["a", "b", "m", "s", "param", "block", "model"]
    cases = []
    for i, name in enumerate(pool):
        role = roles[i % len(roles)]
        cases.append(Case(f"{role} = {name}", _names_run(SPEC.format(**{**base, role: name}))))
    return cases


def _names_run(text: str):
    def run(work: Path):
        got = api(lambda: nlc.check(nlc.loads(text)))
        if got[0] != "ok":
            return got
        prog = nlc.loads(text)
        torch.manual_seed(0)
        compiled = nlc.build(prog).double()
        torch.manual_seed(0)
        reference = nlc.build(prog, backend="reference").double()
        tokens = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(0))
        a, b = compiled(tokens), reference(tokens)
        if not torch.allclose(a, b, rtol=1e-6, atol=1e-8):
            return "wrong", [], f"generated and reference outputs differ by {(a - b).abs().max().item():.3g}"
        return "ok", [], ""
    return run


# (3) a kill at each fsync and rename of the first checkpoint save: resuming ends as an unkilled run

def class3_kill(quick: bool, shared: Path) -> list[Case]:
    text = str(_corpus_text(shared))
    from test_train_hostile import _argv, _opts

    from nlc.train import loop
    reference = shared / "whole"
    loop.train(TITANS, reference, **_opts(text))
    events = isolated(Case("count", _kill_run(_argv(text), None)), 3).detail.split("\n")
    first_of_second = next(i for i, e in enumerate(events) if "step_00000004" in e)
    points = list(range(1, first_of_second + 2))
    if quick:
        points = points[:2]
    return [Case(f"kill at {events[n - 1]}", _kill_and_resume(_argv(text), n, reference), timeout=180)
            for n in points]


TMP_NAME = re.compile(r"(^|/)[.]([^/]+)[.][^./]+[.]tmp$")


def _kill_run(argv: list[str], n: int | None):
    """Run `nlc train`; count the fsyncs and renames in its folder and SIGKILL itself before the n-th."""
    def run(work: Path):
        folder, seen = work / "run", []
        real_fsync, real_replace = os.fsync, os.replace

        def event(op, path):
            path = str(path)
            if path.startswith(str(folder) + os.sep):
                name = TMP_NAME.sub(r"\1\2", os.path.relpath(path, folder))  # .NAME.RANDOM.tmp is NAME
                seen.append(f"{op} {name}")
                if len(seen) == n:
                    os.kill(os.getpid(), signal.SIGKILL)

        os.fsync = lambda fd: (event("fsync", os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1]
        os.replace = lambda s, d, *a, **k: (event("rename", d), real_replace(s, d, *a, **k))[1]
        got = cli(argv + ["--out", folder])
        return got[0], got[1], "\n".join(seen)
    return run


def _kill_and_resume(argv: list[str], n: int, reference: Path):
    def run(work: Path):
        from test_train_hostile import _same_run

        kill = os.fork()
        if kill == 0:
            _kill_run(argv, n)(work)
            os._exit(0)
        _, status = os.waitpid(kill, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            return "traceback", [], f"the run was not killed at event {n}: status {status}"
        folder, codes = work / "run", []
        resumed = cli(argv + ["--out", folder, "--resume"])
        codes += resumed[1]
        if resumed[0] == "coded":  # E620: killed before config.json existed: start it again
            restarted = cli(argv + ["--out", folder])
            codes += restarted[1]
            if restarted[0] != "ok":
                return restarted[0], codes, restarted[2]
        elif resumed[0] != "ok":
            return resumed
        try:
            _same_run(folder, reference)
        except AssertionError as e:
            return "wrong", codes, f"the resumed run differs from the unkilled one: {str(e)[:200]}"
        return "ok", codes, ""
    return run


# (4) size: parameter overrides far past the budgets

def class4_size(quick: bool, shared: Path) -> list[Case]:
    huge = ["10**12", "10**9", str(2 ** 62), "1e18"]
    cases = []
    for spec in sorted((ROOT / "examples").glob("*.nl")):
        prog = nlc.load(spec)
        for p in prog.params:
            for value in huge[:2]:
                cases.append(Case(f"{spec.stem} -p {p.name}={value}", _size_check(spec, p.name, value), timeout=30))
    text = _tiny_titans()
    edits = {"mlp depth 10**9": ("depth = 2, residual", "depth = 1000000000, residual"),
             "mlp width 10**12": ("4 * dim", "1000000000000 * dim"),
             "repeat 10**9": ("repeat layers", "repeat 1000000000"),
             "conv 10**9": ("conv(linear(h, dim), 4)", "conv(linear(h, dim), 1000000000)"),
             "chunk 10**9": ("chunk = 16", "chunk = 1000000000"),
             "period 10**18": ("period chunk tokens", "period 1000000000000000000 tokens")}
    for name, (old, new) in edits.items():
        if old in text:
            cases.append(Case(f"titans {name} (text)", _size_text(text.replace(old, new)), timeout=30))
    for value in huge:
        cases.append(Case(f"nlc.build(titans, dim={value})", lambda w, v=value: api(
            lambda: nlc.build(nlc.load(TITANS), dim=int(float(eval(v)))), expect="refused"), timeout=30))
        cases.append(Case(f"nlc train -p dim={value}", lambda w, v=value: cli(
            ["train", TITANS, "--out", w / "run", *TRAIN_TINY, "-p", f"dim={eval(v)}"], expect="refused"), timeout=30))
    return cases[::7] if quick else cases


def _size_check(spec: Path, name: str, value: str):
    def run(work: Path):
        got = cli(["check", spec, "-p", f"{name}={eval(value)}"])
        if got[0] != "ok":
            return got
        # a parameter check lets through (it sizes nothing): compiling, building and running must not allocate
        got = cli(["compile", spec, "-p", f"{name}={eval(value)}", "-o", work / "out.py"])
        prog = nlc.load(spec)
        if got[0] != "ok" or prog.kind.value != "model":
            return got
        return api(lambda: nlc.build(prog, **{name: eval(value)})(torch.zeros(1, 4, dtype=torch.long)))
    return run


def _size_text(text: str):
    def run(work: Path):
        (work / "m.nl").write_text(text)
        got = cli(["check", "m.nl"])
        if got[0] == "ok":
            return api(lambda: nlc.build(nlc.load("m.nl"))(torch.zeros(1, 4, dtype=torch.long)))
        return got
    return run


# (5) large input and spec paths that are not files

def class5_large(quick: bool, shared: Path) -> list[Case]:
    from fs_cases import make_fifo, make_symlink_loop
    from test_robustness import _socket

    big_comment = "# " + "x" * 78 + "\n"
    inputs: dict[str, Callable[[Path], Path]] = {
        "FIFO": lambda w: make_fifo(w / "s.nl"),
        "/dev/zero": lambda w: Path("/dev/zero"),
        "/dev/null": lambda w: Path("/dev/null"),
        "/dev/stdin": lambda w: Path("/dev/stdin"),
        "socket": lambda w: (_socket(w / "s.nl"), w / "s.nl")[1],
        "directory": lambda w: (w / "d.nl").mkdir() or w / "d.nl",
        "symlink to /dev/zero": lambda w: (w / "z.nl").symlink_to("/dev/zero") or w / "z.nl",
        "symlink loop": lambda w: make_symlink_loop(w),
        "missing": lambda w: w / "missing.nl",
        "4 MB of comments": lambda w: _write(w / "c.nl", Path(TITANS).read_text() + big_comment * 50000),
        "a million parentheses": lambda w: _write(w / "p.nl", "model m(dim = 8) { block b { out = "
                                                  + "(" * 1000000 + "x" + ")" * 1000000 + " } }"),
        "a 1 MB identifier": lambda w: _write(w / "i.nl", "model " + "m" * 1000000 + "(dim = 8) {}"),
        "200 KB sum": lambda w: _write(w / "s.nl", "model m(dim = 8) { block b { out = x" + " + x" * 50000 + " } }"),
        "200 KB product chain": lambda w: _write(w / "s.nl", "model m(dim = 8) { block b { out = x"
                                                 + " * 1" * 50000 + " } }"),
        "200 KB negations": lambda w: _write(w / "n.nl", "model m(dim = 8) { block b { out = " + "-" * 200000
                                             + "x } }"),
        "20000 lets": lambda w: _write(w / "l.nl", "model m(dim = 8) { block b {\n"
                                       + "".join(f"let _a{i} = x\n" for i in range(20000)) + "out = x } }"),
        "5000 lets, a chain": lambda w: _write(w / "l.nl", "model m(dim = 8) { block b {\nlet a0 = x\n"
                                               + "".join(f"let a{i} = a{i - 1} + x\n" for i in range(1, 5000))
                                               + "out = a4999 } }"),
        "YAML 20000 lets": lambda w: _write(w / "l.yaml", "model: m\nparams: {dim: 8}\nbody:\n - block b:\n"
                                            + "".join(f"   - let _a{i}: x\n" for i in range(20000))
                                            + "   - out: x\n"),
        "YAML 4000 lets": lambda w: _write(w / "l.yaml", "model: m\nparams: {dim: 8}\nbody:\n - block b:\n"
                                           + "".join(f"   - let _a{i}: x\n" for i in range(4000))
                                           + "   - out: x\n"),
        "YAML 4 MB": lambda w: _write(w / "b.yaml", "model: m\n" + big_comment * 50000),
        "YAML a million brackets": lambda w: _write(w / "b.yaml", "model: m\nbody: " + "[" * 1000000),
        "YAML deep block nesting": lambda w: _write(w / "b.yaml", "model: m\nbody:\n"
                                                    + "".join(" " * i + "- repeat 1:\n" for i in range(3000))),
        "NUL bytes": lambda w: _write_bytes(w / "z.nl", b"\0" * 100000),
        "random bytes": lambda w: _write_bytes(w / "r.nl", bytes(range(256)) * 400),
        "a 300 KB line": lambda w: _write(w / "line.nl", "model m(dim = 8) {" + " " * 300000 + "}"),
    }
    commands = {"check": lambda p, w: ["check", p], "fmt": lambda p, w: ["fmt", "--stdout", p],
                "compile": lambda p, w: ["compile", p, "-o", w / "o.py"],
                "graph": lambda p, w: ["graph", p, "-o", w / "g.dot"],
                "train": lambda p, w: ["train", p, "--out", w / "run", *TRAIN_TINY]}
    names = list(inputs)[:4] if quick else list(inputs)
    cases = []
    for name in names:
        for cmd, argv in (list(commands.items())[:1] if quick else commands.items()):
            cases.append(Case(f"{name} ({cmd})", lambda w, m=inputs[name], a=argv: cli(a(m(w), w)), timeout=30))
    return cases


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# (6) edited checkpoints and run records: the test suite's edits, through `nlc train --resume` and `nlc eval`

def class6_checkpoints(quick: bool, shared: Path) -> list[Case]:
    import test_train_hostile as th

    text = str(_corpus_text(shared))
    from nlc.train import loop
    runs = {"titans": shared / "t6", "hope": shared / "h6"}
    loop.train(TITANS, runs["titans"], **th._opts(text))
    loop.train(HOPE, runs["hope"], **th._opts(text, params=th.HOPE_P, stream=True))
    newest = th.NEWEST
    edits: dict[str, tuple[str, Callable[[Path], None], str | None]] = {}  # name: (run, edit, expected code)
    for case in th.META_CASES:
        edits[f"meta.json {case}"] = ("titans", lambda r, c=case: th._write_meta(
            r / newest, th._meta_edit(th._meta(r / newest), c)), "E621")
    for case, (code, _) in th.TRAINER_CASES.items():
        edits[f"trainer {case}"] = ("titans", lambda r, c=case: th._trainer_edit(c)(r / newest), code)
    for case, (code, _, _) in th.STATE_CASES.items():
        edits[f"state {case}"] = ("hope", lambda r, c=case: th._state_edit(c)(r / newest), code)
    for case, (edit, _) in th.LAYOUT_CASES.items():
        edits[f"layout {case}"] = ("titans", edit, "E625")
    for case, (code, _) in th.CONFIG_CASES.items():
        edits[f"config.json {case}"] = ("titans", lambda r, c=case: (r / "config.json").write_text(
            json.dumps(th._config_edit(c)(json.loads((r / "config.json").read_text())))), code)
    for content in [b"[1, 2]", b"{not json", b'{"step": NaN}', b"\xff\xfe{}", b"[" * 100000, b"", b"null",
                    b'{"step": 1e999}', b'{"files": {"model.safetensors": {"bytes": 1e400}}}']:
        edits[f"meta.json = {content[:12]!r}"] = ("titans", lambda r, c=content: (r / newest / "meta.json")
                                                  .write_bytes(c), "E621")
    for content in [b"{not json", b'{"spec": NaN}', b"\xff", b"", b"[]", b"1", b'"x"', b"{}", b"[" * 100000]:
        edits[f"config.json = {content[:12]!r}"] = ("titans", lambda r, c=content: (r / "config.json")
                                                    .write_bytes(c), "E626")
    for name in ["../x", "/etc/passwd", "sub/model.safetensors", "..", "notes.txt", ".", "", "\0", "a" * 5000]:
        edits[f"meta.json lists {name[:20]!r}"] = ("titans", lambda r, n=name: _list_file(r / newest, n), "E624")
    edits["trainer of another model"] = ("titans", lambda r: th._rewrite(
        r / newest, "trainer.safetensors", (runs["hope"] / newest / "trainer.safetensors").read_bytes()), "E622")
    edits["model of another model"] = ("titans", lambda r: th._rewrite(
        r / newest, "model.safetensors", (runs["hope"] / newest / "model.safetensors").read_bytes()), "E622")
    edits["model metadata not JSON"] = ("titans", lambda r: th._rewrite(r / newest, "model.safetensors", th._safetensors(
        th._tensors(r / newest / "model.safetensors"), {"spec_hash": "{x"})), "E621")
    edits["model truncated"] = ("titans", lambda r: (r / newest / "model.safetensors").write_bytes(
        (r / newest / "model.safetensors").read_bytes()[:100]), "E621")
    edits["a symlink that leads out"] = ("titans", lambda r: _symlink_out(r / newest / "model.safetensors"), "E624")
    # a run killed before its first checkpoint: --resume starts it again (what test_train_hostile checks)
    edits["checkpoints emptied"] = ("titans", lambda r: [shutil.rmtree(p) for p in (r / "checkpoints").iterdir()],
                                    None)
    names = list(edits)[::9] if quick else list(edits)
    cases = []
    for name in names:
        which, edit, code = edits[name]
        spec = TITANS if which == "titans" else HOPE
        cases.append(Case(name, _edited_run(runs[which], edit, spec, code), timeout=120))
    return cases


def _list_file(ckpt: Path, name: str) -> None:
    import hashlib

    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"][name] = {"bytes": 7, "sha256": hashlib.sha256(b"outside").hexdigest()}
    (ckpt.parent / "x").write_bytes(b"outside")
    (ckpt / "meta.json").write_text(json.dumps(meta))


def _symlink_out(path: Path) -> None:
    outside = path.parent.parent.parent.parent / "elsewhere.safetensors"
    shutil.move(path, outside)
    path.symlink_to(outside)


def _edited_run(base: Path, edit: Callable[[Path], None], spec: str, expected: str | None):
    """Resume the edited copy, then evaluate it: the worse of the two; resuming must refuse."""
    def run(work: Path):
        copy = work / "run"
        shutil.copytree(base, copy, symlinks=True)
        edit(copy)
        resumed = cli(["train", spec, "--out", copy, "--resume", "--quiet"], expect="refused" if expected else None)
        evaluated = cli(["eval", copy, "--tokens", "64"])
        if evaluated[0] in BUGS and resumed[0] not in BUGS:
            return evaluated
        return resumed
    return run


# (7) training data that is not text

def class7_data(quick: bool, shared: Path) -> list[Case]:
    from fs_cases import make_fifo, make_symlink_loop
    from test_robustness import _socket

    def folder_of(make: Callable[[Path], None]) -> Callable[[Path], Path]:
        def build(w: Path) -> Path:
            (w / "d").mkdir()
            make(w / "d")
            return w / "d"
        return build

    inputs: dict[str, Callable[[Path], Path | str]] = {
        "symlink loop": lambda w: make_symlink_loop(w),
        "FIFO": lambda w: make_fifo(w / "f.txt"),
        "/dev/zero": lambda w: "/dev/zero",
        "/dev/null": lambda w: "/dev/null",
        "/dev/urandom": lambda w: "/dev/urandom",
        "/dev/stdin": lambda w: "/dev/stdin",
        "socket": lambda w: (_socket(w / "s.txt"), w / "s.txt")[1],
        "missing": lambda w: w / "missing.txt",
        "empty file": lambda w: _write(w / "e.txt", ""),
        "one byte": lambda w: _write(w / "e.txt", "x"),
        "NUL bytes": lambda w: _write_bytes(w / "z.txt", b"\0" * 10000),
        "binary": lambda w: _write_bytes(w / "b.bin", bytes(range(256)) * 100),
        "latin-1 text": lambda w: _write_bytes(w / "l.txt", "caf\xe9 ".encode("latin-1") * 5000),
        "UTF-16 text": lambda w: _write_bytes(w / "u.txt", ("hello world " * 2000).encode("utf-16")),
        "a BOM and text": lambda w: _write(w / "b.txt", "\ufeff" + "hello world " * 2000),
        "empty folder": folder_of(lambda d: None),
        "folder of junk": folder_of(lambda d: [(d / f"j{i}.bin").write_bytes(os.urandom(500)) for i in range(20)]),
        "folder of empty files": folder_of(lambda d: [(d / f"e{i}.txt").write_text("") for i in range(5)]),
        "folder with a FIFO": folder_of(lambda d: make_fifo(d / "f.txt")),
        "folder with a symlink loop": folder_of(lambda d: make_symlink_loop(d)),
        "folder linking to itself": folder_of(lambda d: (d / "self").symlink_to(d)),
        "folder with /dev/zero link": folder_of(lambda d: (d / "z.txt").symlink_to("/dev/zero")),
        "folder of folders": folder_of(lambda d: [(d / f"s{i}").mkdir() for i in range(5)]),
        "the root folder /proc/self": lambda w: "/proc/self/fd",
        "a path with a newline": lambda w: _write(w / "a\nb.txt", "hello world " * 2000),
        "empty path": lambda w: "",
    }
    names = list(inputs)[:4] if quick else list(inputs)
    return [Case(name, lambda w, m=inputs[name]: cli(["train", TITANS, "--out", w / "run", *TRAIN_TINY,
                                                      "--data", str(m(w))]), timeout=60)
            for name in names]


# (8) the streaming API: states and tokens that are not this model's

def class8_streaming(quick: bool, shared: Path) -> list[Case]:
    import test_streaming_api as ts

    cases = []
    for backend in ts.BACKENDS:
        for kind, make in ts.NOT_IDS.items():
            ok = kind in ("uint8", "int16")  # integer ids in range: accepted
            cases.append(Case(f"{backend} tokens {kind}", _stream(backend, lambda m, t, f=make: m(f(t)), ok)))
        for kind, make in ts.BAD_SHAPES.items():
            cases.append(Case(f"{backend} tokens {kind}", _stream(backend, lambda m, t, f=make: m(f(t)), False)))
        for bad in ts.OUT_OF_RANGE + [2 ** 63 - 1, -2 ** 63]:
            cases.append(Case(f"{backend} id {bad}", _stream(backend, lambda m, t, b=bad: m(_with(t, b)), False)))
        states = {
            "{}": lambda m, o: {},
            "None entries": lambda m, o: {k: None for k in m.init_state(2)} if isinstance(m.init_state(2), dict)
            else [None],
            "the (logits, state) pair": lambda m, o: m(ts.tokens(), state=m.init_state(2)),
            "a list": lambda m, o: [],
            "a tensor": lambda m, o: torch.zeros(3),
            "a string": lambda m, o: "state",
            "batch 3": lambda m, o: m.init_state(3),
            "batch 1": lambda m, o: m.init_state(1),
            "another layer count": lambda m, o: o["layers"].init_state(2),
            "another width": lambda m, o: o["dim"].init_state(2),
            "another spec": lambda m, o: o["spec"].init_state(2),
            "another back end": lambda m, o: o["backend"].init_state(2),
            "float32 state": lambda m, o: _cast(m.init_state(2), torch.float32),
            "a state with NaN": lambda m, o: _cast(m.init_state(2), None, float("nan")),
        }
        for kind, make in states.items():
            ok = kind in ("a state with NaN",)  # a state of the right kind whose numbers are not finite is data
            cases.append(Case(f"{backend} state {kind}", _stream_state(backend, make, ok)))
    return cases[::6] if quick else cases


def _with(t: torch.Tensor, bad: int) -> torch.Tensor:
    t = t.clone()
    t[0, 0] = bad
    return t


def _cast(state, dtype, fill=None):
    if isinstance(state, torch.Tensor):
        if fill is not None:
            return torch.full_like(state, fill) if state.is_floating_point() else state
        return state.to(dtype) if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: _cast(v, dtype, fill) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cast(v, dtype, fill) for v in state)
    return state


def _stream(backend: str, call, accepted: bool):
    def run(work: Path):
        import test_streaming_api as ts

        model = ts.build(backend)
        return api(lambda: call(model, ts.tokens()), expect=None if accepted else "refused")
    return run


def _stream_state(backend: str, make, accepted: bool):
    def run(work: Path):
        import test_streaming_api as ts

        model = ts.build(backend)
        other_backend = "reference" if backend == "compiled" else "compiled"
        others = {"layers": ts.build(backend, depth=1),
                  "dim": ts.build(backend, dim=16), "spec": ts.build(backend, spec=ts.GD_TITANS),
                  "backend": ts.build(other_backend)}
        state = make(model, others)
        return api(lambda: model(ts.tokens(), state=state), expect=None if accepted else "refused")
    return run


# (9) YAML: duplicate keys, BOMs, digits that are not ASCII

def class9_yaml(quick: bool, shared: Path) -> list[Case]:
    from test_robustness import YAML_CASES

    base = ("model: m\nparams: {dim: 8, chunk: 4}\nbody:\n  - block b:\n      - let h: rmsnorm(x)\n"
            "      - level mem:\n          state: linear(dim, dim)\n          context: (h, h)\n"
            "          period: chunk tokens\n      - out: mem(h)\n")
    assert "dim: 8" in base
    cases: dict[str, tuple[str, str | None]] = {"base": (base, None)}  # text, "refused" if it must be
    dups = {"model": ("model: m\n", "model: m\nmodel: n\n"), "params": ("{dim: 8, ", "{dim: 8, dim: 9, "),
            "body": ("body:\n", "body: []\nbody:\n"), "state": ("          state: linear(dim, dim)\n",
                                                             "          state: linear(dim, dim)\n" * 2),
            "period": ("          period: chunk tokens\n", "          period: chunk tokens\n          period: 1 tokens\n"),
            "let in a block": ("      - let h: rmsnorm(x)\n", "      - let h: rmsnorm(x)\n        let h: x\n")}
    for where, (old, new) in dups.items():
        cases[f"duplicate key {where}"] = (base.replace(old, new, 1), "refused")
    cases["duplicate key, equal values"] = (base.replace("{dim: 8, ", "{dim: 8, dim: 8, "), "refused")
    cases["duplicate key, merge <<"] = (base.replace("params: {dim: 8, chunk: 4}",
                                                     "params: {<<: {dim: 8}, dim: 9, chunk: 4}"), None)
    for where, text in {"start": "\ufeff" + base, "twice at start": "\ufeff\ufeff" + base,
                        "in a key": base.replace("params", "par\ufeffams"),
                        "in an expression": base.replace("rmsnorm(x)", "rms\ufeffnorm(x)"),
                        "in a value": base.replace("dim: 8", "dim: \ufeff8")}.items():
        # one BOM opens a YAML stream (YAML 1.2 allows it before each document); inside the text it is refused
        cases[f"BOM {where}"] = (text, None if where.endswith("start") else "refused")
    for digit in ["\u0663", "\u0969", "\uff13", "\u00b3", "\u2162", "\u0e53", "\U0001d7d1", "\u2083"]:
        cases[f"digit U+{ord(digit):04X} as a parameter"] = (base.replace("dim: 8", f"dim: {digit}"), "refused")
        cases[f"digit U+{ord(digit):04X} in a period"] = (base.replace("chunk tokens", f"{digit} tokens"), "refused")
        cases[f"digit U+{ord(digit):04X} in an expression"] = (base.replace("mem(h)", f"mem(h) * {digit}"),
                                                                "refused")
    for name, text in YAML_CASES.items():
        cases[f"robustness {name}"] = (text, None)
    names = list(cases)[::8] if quick else list(cases)
    return [Case(name, _yaml_run(*cases[name]), timeout=30) for name in names]


def _yaml_run(text: str, expect: str | None):
    def run(work: Path):
        (work / "m.yaml").write_text(text, encoding="utf-8")
        got = cli(["check", "m.yaml"], expect=expect)
        if got[0] == "ok":
            return api(lambda: nlc.build(nlc.load("m.yaml"))(torch.zeros(1, 4, dtype=torch.long)))
        return got
    return run


CLASSES = {1: ("code execution", class1_code_execution), 2: ("names", class2_names), 3: ("kill during save", class3_kill),
           4: ("size", class4_size), 5: ("large input", class5_large), 6: ("edited checkpoints", class6_checkpoints),
           7: ("data", class7_data), 8: ("streaming API", class8_streaming), 9: ("YAML", class9_yaml)}


# ---- the census ---------------------------------------------------------------------------------

def census(classes: list[int], quick: bool = False, progress: bool = True) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="nlc-census-") as tmp:
        for cls in classes:
            shared = Path(tmp) / f"class{cls}"
            shared.mkdir()
            cases = CLASSES[cls][1](quick, shared)
            bar = _bar(len(cases), f"{cls} {CLASSES[cls][0]}", progress)
            for case in cases:
                results.append(isolated(case, cls))
                bar.update(1)
            bar.close()
    return results


def _bar(total: int, desc: str, on: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not (on and sys.stderr.isatty()), leave=False)


def table(results: list[Result], classes: list[int]) -> str:
    lines = ["| class | inputs tried | " + " | ".join(OUTCOMES) + " | codes seen |",
             "|---|---:|" + "---:|" * len(OUTCOMES) + "---|"]
    for cls in classes:
        mine = [r for r in results if r.cls == cls]
        codes: dict[str, int] = {}
        for r in mine:
            for c in dict.fromkeys(r.codes):
                codes[c] = codes.get(c, 0) + 1
        counts = [sum(r.outcome == o for r in mine) for o in OUTCOMES]
        seen = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items())) or "-"
        lines.append(f"| {cls} {CLASSES[cls][0]} | {len(mine)} | " + " | ".join(map(str, counts)) + f" | {seen} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default=",".join(map(str, CLASSES)), help="e.g. 1,2,8 (default: all nine)")
    parser.add_argument("--quick", action="store_true", help="a few inputs a class")
    parser.add_argument("--out", type=Path, help="write every input's outcome here as JSON")
    args = parser.parse_args(argv)
    classes = [int(c) for c in args.classes.split(",") if c.strip()]
    torch.set_num_threads(1)
    start = time.monotonic()
    results = census(classes, args.quick)
    print(table(results, classes))
    bugs = [r for r in results if r.outcome in BUGS]
    for r in bugs:
        print(f"BUG class {r.cls} [{r.outcome}] {r.name!r}: {r.detail}")
    print(f"{len(results)} inputs, {len(bugs)} bugs, {time.monotonic() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
