"""Golden diagnostics: every spec in tests/bad/ fails with exactly the text pinned next to it.

Each `tests/bad/NAME.nl` (or `.yaml`) holds one mistake a user would make; `NAME.err` is
`SpecError.render()` for it (or, for a spec that loads with warnings, its warnings rendered),
loaded with the path relative to the repository root so that the pinned text is the same on
every machine. After changing a message on purpose, regenerate with

    NLC_UPDATE_GOLDEN=1 pytest tests/test_bad_specs.py

and read the diff of the .err files before committing it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

import nlc

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "bad"
SPEC_SUFFIXES = (".nl", ".yaml", ".yml")
SPECS = sorted(p for p in BAD.iterdir() if p.suffix in SPEC_SUFFIXES)
UPDATE = os.environ.get("NLC_UPDATE_GOLDEN", "") not in ("", "0")

# Codes that no single file in tests/bad/ can produce, each with the reason and where it is tested.
NOT_FROM_A_FILE = {
    "E208": "an unknown build-time parameter override: needs `loads(..., name=value)` "
            "(test_unknown_parameter_override)",
    "E601": "no such spec file, or a folder: there is no file to put in tests/bad/ (test_missing_spec_file)",
    "E501": "an optimizer spec passed to `nlc.build`: needs the build call, not a file "
            "(tests/test_optim.py::test_a_model_spec_is_not_an_optimizer_and_vice_versa)",
    "E118": "more than 10,000 statements: a 150 KB file, or a lowered NLC_MAX_STATEMENTS "
            "(tests/test_frontend.py::test_statement_limit)",
    "E604": "a FIFO, a device or a socket: not a file git can hold "
            "(tests/test_robustness.py::test_a_spec_path_that_is_not_a_regular_file_ends_with_a_code)",
    "E121": "a spec over 256 KiB (tests/test_robustness.py::test_a_spec_over_the_size_limit_is_refused)",
}
# E5xx (code generation) and E6xx (runtime and data) are raised after a spec has loaded, by the back
# ends, the runtime and the trainers, and are tested there; only the E6xx that the loader itself
# raises (nlc/api.py: unreadable files) must have a spec here.
AFTER_LOADING = re.compile(r"E[56]\d\d")
LOADER = ROOT / "nlc" / "api.py"

_CODE_IN_SOURCE = re.compile(r'"([EW]\d{3})"')
_CODE_IN_RENDER = re.compile(r"^(?:error|warning)\[([EW]\d{3})\]", re.MULTILINE)


def _render(spec: Path) -> str:
    """Return the rendered diagnostics of loading spec: its errors (a SpecError), or else its warnings."""
    rel = spec.relative_to(ROOT).as_posix()
    try:
        warnings = nlc.check(nlc.load(rel))
    except nlc.SpecError as e:
        return e.render() + "\n"
    except Exception as e:  # a traceback is a bug: every problem must be a Diagnostic
        pytest.fail(f"{rel} raised {type(e).__name__}: {e} instead of a SpecError", pytrace=False)
    if not warnings:
        pytest.fail(f"{rel} loaded without an error or a warning", pytrace=False)
    return "\n\n".join(w.render() for w in warnings) + "\n"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_bad_spec_renders_pinned_diagnostics(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    got = _render(spec)
    golden = spec.with_suffix(".err")
    if UPDATE:
        golden.write_text(got, encoding="utf-8")
        return
    assert golden.exists(), f"{golden.name} is missing: run NLC_UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
    want = golden.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"{golden.name} (pinned)", f"{spec.name} (rendered now)"))
        pytest.fail(f"diagnostics of {spec.name} changed (NLC_UPDATE_GOLDEN=1 to accept):\n{diff}",
                    pytrace=False)


def test_golden_files_match_specs() -> None:
    stems = [p.stem for p in SPECS]
    assert len(stems) == len(set(stems)), "two bad specs share a name; their .err files would collide"
    orphans = sorted(p.name for p in BAD.glob("*.err") if p.stem not in stems)
    assert not orphans, f".err files without a spec: {orphans}"
    assert len(SPECS) >= 45


def _source_codes() -> set[str]:
    return {c for f in (ROOT / "nlc").rglob("*.py") for c in _CODE_IN_SOURCE.findall(f.read_text("utf-8"))}


def test_every_error_code_has_a_bad_spec() -> None:
    covered = {c for p in BAD.glob("*.err") for c in _CODE_IN_RENDER.findall(p.read_text("utf-8"))}
    loader_codes = set(_CODE_IN_SOURCE.findall(LOADER.read_text("utf-8")))
    front_end = {c for c in _source_codes() if not AFTER_LOADING.fullmatch(c) or c in loader_codes}
    wanted = front_end - set(NOT_FROM_A_FILE)
    missing = sorted(wanted - covered)
    assert not missing, (f"no spec in tests/bad/ produces {missing}: add one (or, if no single file can "
                         "produce it, add it to NOT_FROM_A_FILE with the reason and where it is tested)")
    stale = sorted(set(NOT_FROM_A_FILE) - _source_codes())
    assert not stale, f"NOT_FROM_A_FILE lists codes the source no longer has: {stale}"


# ---- the codes a file cannot produce ------------------------------------------------------

MODEL = "model m(chunk = 16) {\n  block b {\n    out = linear(x, dim) * chunk\n  }\n}\n"


def test_unknown_parameter_override() -> None:
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(MODEL, "m.nl", dmi=3)
    assert e.value.render() == (
        "error[E208]: unknown parameter `dmi` for model `m`\n"
        " --> m.nl:1:7\n"
        "  |\n"
        "1 | model m(chunk = 16) {\n"
        "  |       ^\n"
        "  = hint: did you mean `dim`?"
    )


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(nlc.SpecError) as e:
        nlc.load(tmp_path / "nowhere.nl")
    assert e.value.codes == ["E601"] and "no such spec file" in e.value.render()
    with pytest.raises(nlc.SpecError) as e:
        nlc.load(tmp_path)
    assert e.value.codes == ["E601"] and "is a folder" in e.value.render()


# ---- checks fixed while writing these specs: the valid side ---------------------------------


def test_parameter_defaults_see_implicit_and_overridden_dim() -> None:
    text = ("model m(head = dim / 4, scale = sqrt(head)) {\n  block b {\n"
            "    out = linear(x, dim) * scale\n  }\n}\n")
    assert nlc.api.check_with_params(nlc.loads(text)).params["head"] == 16
    checked = nlc.api.check_with_params(nlc.loads(text), dim=128)
    assert (checked.params["head"], checked.params["scale"]) == (32, pytest.approx(32 ** 0.5))
