"""The `nlc` command line: exit codes, stderr diagnostics, JSON, fmt, graph."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nlc

from nlc.cli import main

from specs import CMS, SGD, TITANS


@pytest.fixture
def specs(tmp_path):
    paths = {}
    for name, text in (("titans", TITANS), ("sgd", SGD), ("cms", CMS)):
        paths[name] = tmp_path / f"{name}.nl"
        paths[name].write_text(text)
    paths["bad"] = tmp_path / "bad.nl"
    paths["bad"].write_text("model m {\n  block b {\n    out = lienar(x, dim)\n  }\n}\n")
    return paths


def test_check_ok_and_failure_exit_codes(specs, capsys):
    assert main(["check", str(specs["titans"]), str(specs["sgd"])]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check", str(specs["titans"]), str(specs["bad"])]) == 1
    err = capsys.readouterr().err
    assert "error[E202]: unknown function `lienar`" in err and "did you mean `linear`?" in err
    assert "Traceback" not in err and "1 of 2 specs failed" in err


def test_check_json(specs, capsys):
    assert main(["check", "--json", str(specs["bad"]), str(specs["cms"])]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in report] == [False, True]
    d = report[0]["diagnostics"][0]
    assert (d["code"], d["line"], d["column"], d["hint"]) == ("E202", 3, 11, "did you mean `linear`?")


UNUSED_LET = "model m {\n  block b {\n    let k = l2norm(x)\n    out = linear(x, dim)\n  }\n}\n"


def test_check_prints_warnings_and_passes(tmp_path, capsys):
    """An unused let is a warning (W206): printed with its caret, counted, listed in --json, exit 0."""
    path = tmp_path / "w.nl"
    path.write_text(UNUSED_LET)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "1 warning" in out and "warning[W206]: `let k` is never used" in err and "^" in err
    assert main(["check", "--json", str(path)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["ok"] and [(d["code"], d["severity"], d["line"]) for d in entry["diagnostics"]] == [
        ("W206", "warning", 3)]


def test_a_warning_does_not_hide_the_error_after_it(tmp_path, capsys):
    path = tmp_path / "w.nl"
    path.write_text(UNUSED_LET.replace("linear(x, dim)", "linear(x, 3)"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.index("error[E406]") < err.index("warning[W206]")


def test_fmt_to_yaml_and_back(specs, capsys):
    """`nlc fmt --to yaml` writes SPEC.yaml next to SPEC; `--to nl` the other way; both load alike."""
    nl = specs["titans"]
    assert main(["fmt", "--to", "yaml", str(nl)]) == 0
    yml = nl.with_suffix(".yaml")
    assert f"wrote {yml}" in capsys.readouterr().out
    assert main(["check", str(yml)]) == 0
    original = nl.read_text()
    nl.unlink()
    assert main(["fmt", "--to", "nl", str(yml)]) == 0
    assert nl.read_text() == nlc.print_program(nlc.loads(original))
    assert main(["fmt", "--to", "yaml", "--stdout", str(nl)]) == 0
    assert capsys.readouterr().out.endswith(yml.read_text())


def test_fmt_to_never_overwrites_other_text(specs, capsys):
    target = specs["titans"].with_suffix(".yaml")
    target.write_text("model: mine\nbody: []\n")
    assert main(["fmt", "--to", "yaml", str(specs["titans"])]) == 1
    assert "error[E635]" in capsys.readouterr().err and target.read_text() == "model: mine\nbody: []\n"
    assert main(["fmt", "--to", "yaml", "--check", str(specs["titans"])]) == 1
    assert "error[E635]" in capsys.readouterr().err


def test_check_with_parameter_override(specs, capsys):
    assert main(["check", "-p", "dim=0", str(specs["cms"])]) == 1
    assert "E413" in capsys.readouterr().err


def test_check_missing_file_and_binary_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.nl")]) == 1
    assert "E601" in capsys.readouterr().err
    binary = tmp_path / "bin.nl"
    binary.write_bytes(b"\xff\xfe\x00model")
    assert main(["check", str(binary)]) == 1
    assert "E602" in capsys.readouterr().err


def test_fmt_check_then_rewrite(specs, capsys):
    messy = specs["titans"]
    messy.write_text(TITANS.replace("  let h", "let   h").replace("(k, v)", "( k,v )"))
    assert main(["fmt", "--check", str(messy)]) == 1
    assert "would reformat" in capsys.readouterr().err
    assert main(["fmt", str(messy)]) == 0
    assert messy.read_text() == TITANS
    assert main(["fmt", "--check", str(messy)]) == 0


def test_fmt_does_not_touch_a_bad_spec(specs):
    before = specs["bad"].read_text()
    assert main(["fmt", str(specs["bad"])]) == 1
    assert specs["bad"].read_text() == before


@pytest.mark.parametrize("suffix", [".png", ".svg", ".dot"])
def test_graph_writes_each_format(specs, tmp_path, suffix):
    out = tmp_path / f"g{suffix}"
    assert main(["graph", str(specs["cms"]), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert {".png": data[:4] == b"\x89PNG", ".svg": b"<svg" in data, ".dot": data.startswith(b"digraph")}[suffix]


def test_graph_of_a_model_without_levels(tmp_path):
    """A Transformer has no level: its picture is the outer level alone (was an internal error)."""
    out = tmp_path / "t.png"
    spec = Path(__file__).resolve().parent.parent / "examples" / "transformer.nl"
    assert main(["graph", str(spec), "-o", str(out)]) == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_graph_rejects_unknown_format(specs, tmp_path):
    assert main(["graph", str(specs["cms"]), "-o", str(tmp_path / "g.jpg")]) == 2


def test_graph_of_several_specs_draws_into_a_folder(specs, tmp_path, capsys):
    """One process draws every spec (make demo); a bad spec is reported, the others are still drawn."""
    out = tmp_path / "graphs"
    assert main(["graph", str(specs["cms"]), str(specs["bad"]), str(specs["titans"]), "-o", str(out)]) == 1
    drawn = sorted(p.name for p in out.iterdir())
    assert drawn == sorted([f"{specs['cms'].stem}.png", f"{specs['titans'].stem}.png"])
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in drawn)
    assert "unknown function `lienar`" in capsys.readouterr().err  # the bad spec's diagnostic
    (tmp_path / "file").write_text("")
    assert main(["graph", str(specs["cms"]), str(specs["titans"]), "-o", str(tmp_path / "file")]) == 2


def test_module_entry_point_runs(specs):
    r = subprocess.run([sys.executable, "-m", "nlc", "check", str(specs["bad"])], capture_output=True, text=True)
    assert r.returncode == 1 and "E202" in r.stderr and "Traceback" not in r.stderr


def test_nlc_runs_without_hypothesis_and_fuzz_says_what_to_install():
    """hypothesis is the optional `test` extra: every command but `fuzz` needs none of it, and `fuzz`
    says how to install it (it used to stop every `nlc` command with ModuleNotFoundError)."""
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "from nlc.cli import main\n"
            "assert main(['check', 'examples/adam.nl']) == 0\n"
            "assert 'hypothesis' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
            "sys.exit(main(['fuzz', 'examples/adam.nl']))\n")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'nlc[test]'" in r.stderr
