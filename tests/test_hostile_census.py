"""The hostile-input census (benchmarks/hostile.py, issue #17) keeps working: a few inputs of each cheap
class, each in a forked child, and none gets a BUG outcome (traceback, canary, hang, wrong)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the census forks and makes FIFOs")


def _census_module():
    spec = importlib.util.spec_from_file_location("hostile_census", ROOT / "benchmarks" / "hostile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CHEAP = [2, 5, 7, 8, 9]  # no training run to make first


def test_the_census_finds_no_bug_in_a_few_inputs_of_each_cheap_class(tmp_path):
    """Run as a user runs it, in its own process with one torch thread: the census forks a child per
    input, and a fork of a process whose OpenMP pool is already running (as this test process's may
    be, after other tests) can deadlock in the child, which the census would count as a hang."""
    hostile = _census_module()
    out = tmp_path / "census.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hostile.py"), "--quick", "--classes",
                           ",".join(map(str, CHEAP)), "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    results = [hostile.Result(**r) for r in json.loads(out.read_text())]
    assert {r.cls for r in results} == set(CHEAP)
    assert all(r.outcome in hostile.OUTCOMES for r in results)
    bugs = [(r.cls, r.name, r.outcome, r.detail) for r in results if r.outcome in hostile.BUGS]
    assert bugs == [] and done.returncode == 0, done.stdout[-2000:]
    assert all(f"| {c} " in done.stdout for c in CHEAP)


def test_the_census_counts_a_traceback_a_hang_and_a_canary_as_bugs(tmp_path):
    """The outcomes the census exists to catch are caught, each in its child."""
    hostile = _census_module()

    def crash(work):
        raise KeyError("boom")

    def hang(work):
        import time
        time.sleep(60)

    def canary(work):
        (work / "CANARY").touch()
        return "ok", [], ""

    cases = {"traceback": hostile.Case("crash", crash), "hang": hostile.Case("hang", hang, timeout=1),
             "canary": hostile.Case("canary", canary)}
    for outcome, case in cases.items():
        assert hostile.isolated(case, 0).outcome == outcome
    assert hostile.classify(1, "error[E601]: x") == ("coded", ["E601"], "error[E601]: x")
    assert hostile.classify(1, "Traceback (most recent call last):")[0] == "traceback"
    assert hostile.classify(3, "internal error in nlc: KeyError")[0] == "traceback"
    assert hostile.classify(0, "", expect="refused")[0] == "wrong"
