"""generated/ holds the compiled examples; this test fails when a snapshot is stale."""

import os
from pathlib import Path

import pytest

import nlc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.nl"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.name)
def test_generated_snapshot_is_up_to_date(spec, monkeypatch):
    monkeypatch.chdir(ROOT)  # the header names the spec by its path from the repo root
    snapshot = ROOT / "generated" / f"{spec.stem}.py"
    program = nlc.load(spec.relative_to(ROOT))
    if not program.is_model and not (ROOT / "nlc" / "codegen" / "optimizer.py").exists():
        pytest.skip("optimizer code generation is not there yet")
    assert snapshot.exists(), f"missing {snapshot}: run `make generated`"
    assert snapshot.read_text() == nlc.generate(program), (
        f"{snapshot.name} is stale: run `make generated` (nlc compile {spec.relative_to(ROOT)} -o ...)")
