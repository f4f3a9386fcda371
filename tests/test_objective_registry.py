"""The objective registry (nlc/objectives.py) is the one place an objective lives: nothing else
compares against an objective's name, the language's builtin table is derived from it, and each
entry's gradient is its value's derivative, the same in every back end."""

import ast
from pathlib import Path

import pytest
import torch

from nlc import builtins as B
from nlc.objectives import OBJECTIVES, step_level_objectives
from nlc.optim import runtime as rt
from nlc.runtime import memory

NLC = Path(__file__).resolve().parent.parent / "nlc"
REGISTRY = NLC / "objectives.py"


def _names(node: ast.AST) -> list[str]:
    """The objective names among a node's string constants (a tuple, list or set of them too)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and n.value in OBJECTIVES]


def objective_name_comparisons(path: Path) -> list[str]:
    """`file:line 'name'` of every objective name a module compares against (==, !=, in, a dispatch
    dict's key, a match case), the ways code branches on an objective."""
    hits = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Compare):
            found = [x for side in (n.left, *n.comparators) for x in _names(side)]
        elif isinstance(n, ast.Dict):
            found = [x for k in n.keys if k is not None for x in _names(k)]
        elif isinstance(n, ast.MatchValue):
            found = _names(n.value)
        else:
            continue
        hits += [f"{path}:{n.lineno} {x!r}" for x in found]
    return hits


def test_no_objective_is_branched_on_outside_the_registry():
    files = [p for p in NLC.rglob("*.py") if p != REGISTRY]
    found = [hit for p in files for hit in objective_name_comparisons(p)]
    assert not found, "objective names compared outside nlc/objectives.py (ask OBJECTIVES):\n" + "\n".join(found)


@pytest.mark.parametrize("code", ['if objective == "huber":\n    pass\n', 'ok = name in ("l2", "dot")\n',
                                  'GRADS = {"lp": None}\n', 'match o:\n    case "dot":\n        pass\n'])
def test_the_check_finds_a_comparison_where_there_is_one(tmp_path, code):
    bad = tmp_path / "consumer.py"
    bad.write_text(code)
    assert objective_name_comparisons(bad)


def test_the_check_leaves_other_strings_alone(tmp_path):
    fine = tmp_path / "consumer.py"
    fine.write_text('if op == "l2norm":\n    pass\ndefault = "l2"\n')  # an op, and a name that is not compared
    assert objective_name_comparisons(fine) == []


def test_the_builtin_table_is_the_registry():
    assert list(B.OBJECTIVES) == list(OBJECTIVES)
    for name, o in OBJECTIVES.items():
        assert B.OBJECTIVES[name].args == o.args and B.OBJECTIVES[name].doc == o.doc
    assert step_level_objectives() == ("dot",)  # the loop descends the task loss (E308 for the others)


ARGS = {"l2": (), "dot": (), "huber": (0.3,), "lp": (3.0,)}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_entry_is_whole_and_its_gradient_is_its_value_derivative(name):
    o = OBJECTIVES[name]
    assert o.name == name and o.doc and o.cite and "{y}" in o.formula
    assert len(o.args) == len(ARGS[name]) and all(a.default is not None for a in o.args)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_()
    v = torch.randn(3, 5, dtype=torch.float64, generator=g)
    (auto,) = torch.autograd.grad(o.value(y, v, torch, *ARGS[name]).sum(), y)
    torch.testing.assert_close(torch.broadcast_to(o.grad(y, v, torch, *ARGS[name]), y.shape), auto)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_the_model_and_optimizer_runtimes_compute_the_registry_formula(name):
    """Both runtimes call the entry: the model's per-token loss (summed over features) and gradient,
    the optimizer's gradient (broadcast to the read-out's shape), on the same numbers."""
    o = OBJECTIVES[name]
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 4, 6, dtype=torch.float64, generator=g)
    v = torch.randn(2, 4, 6, dtype=torch.float64, generator=g)
    plan_objective = (name, *ARGS[name])  # the model plan's form
    assert torch.equal(memory.objective_value(plan_objective, y, v), o.value(y, v, torch, *ARGS[name]).sum(-1))
    expected = torch.broadcast_to(o.grad(y, v, torch, *ARGS[name]), y.shape)
    assert torch.equal(memory.objective_grad(plan_objective, y, v), expected)
    arg = ARGS[name][0] if ARGS[name] else None
    assert torch.equal(rt.objective_grad(name, y, v, arg), expected)


def test_a_constant_value_broadcasts_to_the_read_out():
    """An optimizer level's value may be a number (`context (1, 0.5)`): its gradient has y's shape."""
    y = torch.randn(4, 3, dtype=torch.float64)
    for name in OBJECTIVES:
        arg = ARGS[name][0] if ARGS[name] else None
        assert rt.objective_grad(name, y, 0.5, arg).shape == y.shape
