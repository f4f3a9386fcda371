"""The size pass (nlc/passes/size.py): its estimate equals the built models, and hostile sizes stop in the checker.

Exactness: for every example and a few overrides, the estimated parameter count is
`sum(p.numel() for p in model.parameters())` and the estimated state is the numbers in
`model.init_state(1)`; for optimizer specs, the state after a step is
`per_entry * numel + per_tensor` summed over the parameter tensors.
Hostile sizes (dim=10**12, depth=10**9, repeat 10**9, layers=10**9) end with E420 / E421
after a bounded number of Python calls (counted with sys.setprofile, not timed), and
nothing is planned or allocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nlc
from nlc.api import check_with_params
from nlc.cli import main
from nlc.passes.pipeline import check_ir
from nlc.passes.size import SizeLimits, mlp_size

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.nl"))
MODELS = [p for p in EXAMPLES if nlc.load(p).is_model]
OPTIMIZERS = [p for p in EXAMPLES if not nlc.load(p).is_model]
TRANSFORMER = ROOT / "examples" / "transformer.nl"
TITANS = ROOT / "examples" / "titans_lmm.nl"


def _numel(value) -> int:
    """Numbers in every tensor of a nested state (dicts, lists, tensors; ints such as positions are not)."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, dict):
        return sum(_numel(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    return 0


def _overrides(path: Path) -> list[dict]:
    """Defaults, two small widths (with a vocabulary), and another depth where the spec has `layers`."""
    out = [{}, {"dim": 16}, {"dim": 24, "vocab": 40}]
    if nlc.load(path).param("layers") is not None:
        out.append({"dim": 8, "layers": 3})
    return out


# ---- the estimate equals reality --------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_estimated_parameters_and_state_equal_the_built_model(path):
    for params in _overrides(path):
        estimate = check_with_params(nlc.load(path), **params).size
        model = nlc.build(path, **params)
        assert estimate.params == sum(p.numel() for p in model.parameters()), (path.stem, params)
        assert estimate.state == _numel(model.init_state(1)), (path.stem, params)
        assert estimate.blocks == len(model.blocks)
        assert estimate.per_token > 0


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_the_reference_interpreter_has_the_estimated_parameters_too(path):
    estimate = check_with_params(nlc.load(path), dim=8).size
    model = nlc.build(path, backend="reference", dim=8)
    assert estimate.params == sum(p.numel() for p in model.parameters())


def _optimizer_state_after_a_step(path: Path, **hyper) -> tuple[int, list[torch.Tensor]]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in ((5, 3), (7,), (4, 6), (1,))]
    opt = nlc.build_optimizer(path, params, **hyper)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    return sum(_numel(dict(opt.state[p])) for p in params), params


@pytest.mark.parametrize("path", OPTIMIZERS, ids=lambda p: p.stem)
def test_optimizer_state_is_per_entry_times_numel_plus_per_tensor(path):
    hyper_sets = [{}] + ([{"hidden": 3}] if nlc.load(path).param("hidden") is not None else [])
    for hyper in hyper_sets:
        estimate = check_with_params(nlc.load(path), **hyper).size
        assert estimate.params == 0  # an optimizer has no parameters of its own
        numbers, params = _optimizer_state_after_a_step(path, **hyper)
        assert numbers == sum(estimate.per_entry * p.numel() + estimate.per_tensor for p in params), hyper


def test_an_optimizer_memory_too_big_for_every_parameter_tensor_is_refused():
    text = (ROOT / "examples" / "dmgd.nl").read_text().replace("depth = 2", "depth = 3")
    assert check_with_params(nlc.loads(text), hidden=10).size.per_tensor == mlp_size(1, 10, 3)
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text, hidden=10**5)
    d = e.value.diagnostics[0]
    assert d.code == "E420" and "for every parameter tensor" in d.message and d.span.text == "hidden = 8"
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text.replace("depth = 3", "depth = 10**9"))
    assert e.value.codes == ["E421"]


def test_mlp_size_is_the_sum_of_its_layers():
    for d, hidden, depth in ((1, 4, 1), (3, 5, 2), (2, 7, 5), (8, 8, 3)):
        dims = [d] + [hidden] * (depth - 1) + [d]
        assert mlp_size(d, hidden, depth) == sum(a * b for a, b in zip(dims, dims[1:]))


# ---- hostile sizes ------------------------------------------------------------------------------

def _deep_memory(depth) -> str:
    """titans_lmm with its memory `depth` layers deep."""
    text = TITANS.read_text()
    assert "depth = 2, residual" in text
    return text.replace("depth = 2, residual", f"depth = {depth}, residual")


REPEAT = "model m {{\n  repeat {} {{\n    block b {{\n      out = linear(x, dim)\n    }}\n  }}\n}}\n"


def _calls(check) -> tuple[int, list[str]]:
    """(Python and C calls made while `check` runs, the error codes it raised): operations, not time."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ("call", "c_call")

    sys.setprofile(profile)
    try:
        check()
        codes = []
    except nlc.SpecError as e:
        codes = e.codes
    finally:
        sys.setprofile(None)
    return count, codes


HOSTILE = {  # class -> (a check with a normal value, the same check with a hostile one, the code wanted)
    "dim=10**12": (lambda v: check_ir(nlc.load(TRANSFORMER), {"dim": v}), 64, 10**12, "E420"),
    "layers=10**9": (lambda v: check_ir(nlc.load(TRANSFORMER), {"layers": v}), 2, 10**9, "E421"),
    "depth=10**9": (lambda v: nlc.loads(_deep_memory(v)), 2, 10**9, "E421"),
    "repeat 10**9": (lambda v: nlc.loads(REPEAT.format(v)), 2, 10**9, "E421"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_sizes_end_with_a_code_after_a_bounded_number_of_operations(case):
    check, normal, hostile, code = HOSTILE[case]
    normal_calls, normal_codes = _calls(lambda: check(normal))
    assert normal_codes == []
    for value in (hostile // 1000, hostile, hostile * 1000):  # the same work whatever the size
        calls, codes = _calls(lambda: check(value))
        assert codes and set(codes) == {code}, (value, codes)
        assert calls <= 2 * normal_calls, (value, calls, normal_calls)


@pytest.mark.parametrize("params, code", [({"dim": 10**12}, "E420"), ({"layers": 10**9}, "E421"),
                                          ({"ffn": 10**12}, "E420")])
def test_build_refuses_before_planning_or_allocating(params, code, monkeypatch):
    import nlc.plan

    def never(*args, **kwargs):
        raise AssertionError("the model was planned")

    monkeypatch.setattr(nlc.plan, "plan_model", never)
    for build in (nlc.build, nlc.generate):
        with pytest.raises(nlc.SpecError) as e:
            build(nlc.load(TRANSFORMER), **params)
        assert code in e.value.codes


def test_a_deep_memory_or_a_long_repeat_is_refused_by_build(monkeypatch):
    import nlc.plan

    monkeypatch.setattr(nlc.plan, "plan_model", lambda *a, **k: pytest.fail("the model was planned"))
    for text in (_deep_memory("10**9"), REPEAT.format("10**9")):
        with pytest.raises(nlc.SpecError) as e:
            raised = dict(max_depth=10**10, max_blocks=10**10, max_params=10**30, max_state=10**30)
            nlc.build(nlc.loads(text, **raised))
        assert e.value.codes == ["E421"]


def test_the_message_has_the_estimate_and_points_at_the_parameter():
    with pytest.raises(nlc.SpecError) as e:
        nlc.load(TRANSFORMER, dim=10**12)
    params = e.value.diagnostics[0]
    assert params.code == "E420" and "3.2e25 parameters" in params.message
    assert params.span.text == "dim = 64" and "1000000000000" in params.label
    assert "`--max-params N`" in params.hint and "`max_params=N`" in params.hint
    assert "swiglu(rmsnorm(x), ffn)" in params.hint  # the largest part
    with pytest.raises(nlc.SpecError) as e:
        nlc.load(TRANSFORMER, layers=10**9)
    assert e.value.diagnostics[0].span.text == "layers" and "--max-blocks" in e.value.diagnostics[0].hint


def test_raised_limits_let_a_big_spec_through_the_checker():
    estimate = check_with_params(nlc.load(TRANSFORMER), dim=10**12, max_params=10**30, max_state=10**30).size
    d = 10**12  # embedding and head, final norm; 2 layers of (rmsnorm, attention) and (rmsnorm, swiglu(4 d))
    assert estimate.params == 2 * 256 * d + d + 2 * ((d + 4 * d * d) + (d + 3 * d * 4 * d))
    assert nlc.check(nlc.loads(REPEAT.format(5000), max_blocks=5000), max_blocks=5000) == []  # each call checks
    with pytest.raises(nlc.SpecError):
        nlc.loads(REPEAT.format(5000))


def test_a_spec_with_huge_defaults_builds_when_a_path_and_overrides_are_given(tmp_path):
    spec = tmp_path / "huge.nl"
    spec.write_text(TRANSFORMER.read_text().replace("dim = 64", "dim = 10**12"))
    with pytest.raises(nlc.SpecError):
        nlc.load(spec)
    assert "class" in nlc.generate(spec, dim=8)  # the overrides apply when the path is loaded
    assert nlc.check(spec, dim=8) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1e9", float("inf")])
def test_bad_limits_are_a_value_error(bad):
    with pytest.raises(ValueError, match="max_params must be a positive whole number"):
        nlc.check(nlc.load(TRANSFORMER), max_params=bad)


def test_default_limits_and_one_cli_option_each():
    from dataclasses import fields

    from nlc.cli_options import SIZE_HELP

    assert SizeLimits() == SizeLimits(max_params=2 * 10**9, max_state=2 * 10**9, max_depth=64, max_blocks=4096)
    assert list(SIZE_HELP) == [f.name for f in fields(SizeLimits)]


def test_the_size_pass_imports_no_back_end():
    code = ("import sys, nlc; from nlc.api import check_with_params; "
            f"check_with_params(nlc.load({str(TITANS)!r}), dim=10**3); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch', 'nlc.codegen', 'nlc.interp', "
            "'nlc.runtime', 'nlc.plan'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---- the command line -----------------------------------------------------------------------------


def test_cli_check_compile_graph_refuse_with_the_code(tmp_path, capsys):
    big = ["-p", "dim=1000000000000", str(TRANSFORMER)]
    for argv in (["check", *big], ["compile", *big], ["graph", *big, "-o", str(tmp_path / "g.dot")],
                 ["check", "-p", "layers=1e9", str(TRANSFORMER)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert ("error[E420]" in err or "error[E421]" in err) and "internal error" not in err
    assert not (tmp_path / "g.dot").exists()


def test_cli_size_options(tmp_path, capsys):
    assert main(["check", "--max-params", "1000", str(TITANS)]) == 1
    assert "more than the limit of 1,000" in capsys.readouterr().err
    assert main(["check", "--json", "--max-depth", "1", str(TITANS)]) == 1
    assert json.loads(capsys.readouterr().out)[0]["diagnostics"][0]["code"] == "E421"
    assert main(["check", "-p", "dim=1e12", "--max-params", "1e30", "--max-state", "1e30", str(TRANSFORMER)]) == 0
    capsys.readouterr()
    out = tmp_path / "m.py"
    assert main(["compile", "--max-blocks", "5000", "-p", "layers=2100", "-p", "dim=8", str(TRANSFORMER),
                 "-o", str(out)]) == 0
    assert out.read_text().count("AttnBlock()") == 2100
    with pytest.raises(SystemExit):
        main(["check", "--max-params", "0", str(TITANS)])
    assert "positive whole number" in capsys.readouterr().err


def test_cli_train_refuses_before_writing_and_eval_uses_the_runs_limits(tmp_path, capsys):
    from nlc.train import evaluate as ev
    from nlc.train import loop

    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(3000)))
    refused = tmp_path / "refused"
    assert main(["train", str(TRANSFORMER), "--out", str(refused), "-p", "dim=1000000000000",
                 "--data", str(data), "--steps", "1", "--quiet"]) == 1
    assert "error[E420]" in capsys.readouterr().err and not refused.exists()
    params = {"dim": 8, "layers": 1}
    size = check_with_params(nlc.load(TRANSFORMER), **params).size.params
    run = tmp_path / "run"
    assert main(["train", str(TRANSFORMER), "--out", str(run), "-p", "dim=8", "-p", "layers=1",
                 "--max-params", str(size), "--data", str(data), "--steps", "1", "--batch", "2", "--seq", "8",
                 "--ckpt-every", "1", "--eval-batches", "1", "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["limits"] == {"max_params": size}
    ev.load_run(run)  # rebuilt with the run's limits
    config["train"]["limits"] = {"max_params": size - 1}
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(nlc.SpecError) as e:
        ev.load_run(run)
    assert e.value.codes == ["E420"]
    assert loop.TrainConfig().limits == {}
