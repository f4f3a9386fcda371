"""The optimizer plan is SSA nodes over nlc.plan.ops (issue 13), and its two back ends read nothing else.

What the plan holds (nodes in dependency order, typed operands, hyper-parameters kept symbolic,
reads of new states only inside updates), that neither back end walks the IR any more, and that
the reference optimizer evaluates each node once a step. That the generated text did not change
is tests/test_generated.py's; that the back ends agree is tests/test_optim.py's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import nlc
from nlc import ir
from nlc.passes.optimizer import ExprKinds
from nlc.passes.pipeline import check_ir
from nlc.plan.ops import ARITY, OPTIMIZER_OPS, Const, Hyper, Op, Ref
from nlc.plan.optimizer import plan_optimizer

ROOT = Path(__file__).resolve().parent.parent
OPTIMIZERS = [p for p in sorted((ROOT / "examples").glob("*.nl")) if not nlc.load(p).is_model]
OPERAND = (Const, Hyper, Ref)


def plan_of(spec):
    program = nlc.load(spec) if isinstance(spec, Path) else nlc.loads(spec)
    checked = check_ir(program, {})
    return plan_optimizer(checked.program, checked.params, checked.facts)


def level_operands(lv):
    """(field, operand) for every operand field of an optimizer level (None where absent)."""
    yield from (("key", lv.key), ("value", lv.value), ("objective_arg", lv.objective_arg), ("update", lv.update),
                ("lr", lv.lr), ("retain", lv.retain), ("period", lv.period))
    yield from ((f"rule_args.{k}", v) for k, v in lv.rule_args.items())
    yield from ((f"mlp.{k}", v) for k, v in lv.mlp.items())


def reachable(plan, operands) -> set[str]:
    """The names of the nodes `operands` read, directly or through other nodes."""
    nodes = {n.name: n for n in plan.nodes}
    seen, todo = set(), [a.name for a in operands if isinstance(a, Ref)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += nodes[name].refs
    return seen


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda p: p.stem)
def test_the_plan_is_nodes_in_dependency_order_over_the_optimizer_operations(spec):
    plan = plan_of(spec)
    seen: set[str] = set()
    hypers = {h.name for h in plan.hypers}
    for node in plan.nodes:
        assert node.op in OPTIMIZER_OPS and node.name not in seen, node
        low, high = ARITY[node.op]
        assert low <= len(node.args) and (high is None or len(node.args) <= high), node
        assert all(isinstance(a, OPERAND) for a in node.args), node
        assert set(node.refs) <= seen, f"{node.name} reads a node defined after it"
        assert {a.name for a in node.args if isinstance(a, Hyper)} <= hypers
        if node.op is Op.READ:
            assert any(lv.name == node.attrs["level"] for lv in plan.levels)
        seen.add(node.name)
    for lv in plan.levels:
        for field, a in level_operands(lv):
            assert a is None or isinstance(a, OPERAND), (lv.name, field, a)
            assert not isinstance(a, Ref) or a.name in seen, (lv.name, field, a)
    # a new state is read only by an update: lets, contexts, gates and rule arguments see the states from before
    nodes = {n.name: n for n in plan.nodes}
    before = [Ref(n.name) for n in plan.lets]
    before += [a for lv in plan.levels for f, a in level_operands(lv) if f != "update" and a is not None]
    for name in reachable(plan, before):
        assert not nodes[name].attrs.get("new"), name


def test_adam_keeps_its_hyper_parameters_and_names_its_let():
    plan = plan_of(ROOT / "examples" / "adam.nl")
    inputs = [n.name for n in plan.nodes if n.op is Op.INPUT]
    assert sorted(inputs) == ["grad", "param"]  # `step` is not used: no node
    g = plan.node("g")
    assert g.attrs.get("let") and g.op is Op.ADD and g.source == "grad + weight_decay * param" and not g.py
    wd = plan.node(g.args[1].name)
    assert wd.op is Op.MUL and wd.args == (Hyper("weight_decay"), Ref("param"))  # not folded: a group may override
    m = plan.level("m")
    assert m.retain == Hyper("beta1") and m.key is None and m.value == Ref("g")
    assert plan.node(m.lr.name).args == (Const(1), Hyper("beta1")) and plan.node(m.lr.name).py
    assert type(plan.node(m.lr.name).args[0].value) is int  # numbers as the spec wrote them
    root = plan.root
    update = plan.node(root.update.name)
    assert update.op is Op.DIV and plan.node(update.args[0].name).attrs == {"level": "m", "new": True}


def test_muon_and_dmgd_calls_and_reads_with_keys():
    muon = plan_of(ROOT / "examples" / "muon.nl")
    ns = muon.node(muon.root.update.name)
    assert ns.op is Op.NEWTON_SCHULZ and ns.args[1] == Hyper("ns_steps")
    dmgd = plan_of(ROOT / "examples" / "dmgd.nl")
    read = dmgd.node(dmgd.root.update.name)
    assert read.op is Op.READ and read.attrs == {"level": "deep", "new": True}
    assert dmgd.node(read.args[0].name).attrs == {"level": "m", "new": True}
    deep = dmgd.level("deep")
    assert deep.mlp == {"hidden": Hyper("hidden"), "depth": Const(2), "residual": Const(True)}
    assert type(deep.mlp["residual"].value) is bool


SPEC = """\
optimizer o(lr = 0.05, b = 0.9, ns = 4) {
  let a = grad * grad
  let c = a
  let d = lr
  let f = sqrt(c) + exp(-step * 0.1) * d + 2
  level m {
    state like(param)
    context (1, f)
    objective huber
    update gd
    lr 1 - b
    retain b
    debias
  }
  level weights {
    state params
    context grad(loss)
    update newton_schulz(x = m, steps = ns) + newton_schulz(m) + tanh(m) * mean(m) + l2norm(x = grad) + -m ** 2
    lr lr / sqrt(step)
  }
}
"""


def test_calls_by_keyword_defaults_and_elementwise_builtins():
    plan = plan_of(SPEC)
    nodes = [n for n in plan.nodes if n.op in (Op.NEWTON_SCHULZ, Op.UNARY, Op.MEAN, Op.L2NORM, Op.NEG)]
    shown = [(n.op.value, n.attrs.get("fn"), tuple(n.args[1:])) for n in nodes]
    assert ("newton_schulz", None, (Hyper("ns"),)) in shown and ("newton_schulz", None, (Const(5),)) in shown
    assert {s[1] for s in shown if s[0] == "unary"} == {"sqrt", "exp", "tanh"}
    assert plan.level("m").objective_arg == Const(1.0)  # huber's default delta
    aliases = {n.name: n.args for n in plan.nodes if n.op is Op.ALIAS}
    assert aliases == {"c": (Ref("a"),), "d": (Hyper("lr"),)}
    assert plan.node("step").py and not plan.node("grad").py


KINDS = """\
optimizer kinds(lr = 0.05, b = 0.9) {
  let p1 = lr
  let p2 = 2
  let p3 = sqrt(step) * b
  let p4 = p3 + exp(-step) ** p2
  let t1 = grad
  let t2 = m
  let t3 = mean(grad)
  let t4 = newton_schulz(param, 3)
  let t5 = sqrt(abs(t1)) * step
  let t6 = l2norm(-p4 * param)
  level m {
    state like(param)
    context grad(loss)
    update gd
  }
  level weights {
    state params
    context grad(loss)
    update m * p1 + t1 + t2 + t3 + t4 + t5 + t6
    lr lr
  }
}
"""


def test_node_kinds_are_the_checkers_python_numbers_and_tensors():
    """`Node.py` of every let is what nlc.passes.optimizer.ExprKinds says of it (the generated code relies on both)."""
    plan = plan_of(KINDS)
    kinds = ExprKinds(nlc.loads(KINDS))
    got = {let.name: "py" if let.py else "tensor" for let in plan.lets}
    assert got == {name: kinds.kind_of(ir.Ref(name, ir.RefKind.LET)) for name in got}
    assert sorted(got) == sorted(f"{k}{i}" for k, n in (("p", 4), ("t", 6)) for i in range(1, n + 1))
    assert {k for k, v in got.items() if v == "py"} == {"p1", "p2", "p3", "p4"}


def test_the_reference_evaluates_each_node_once_a_step(monkeypatch):
    from nlc.optim import reference

    seen: list[tuple[object, str]] = []  # (the step, the node): holding the step keeps its identity its own
    evaluate = reference._Step.evaluate
    monkeypatch.setattr(reference._Step, "evaluate", lambda self, node: (seen.append((self, node.name)),
                                                                         evaluate(self, node))[1])
    w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    opt = reference.reference_optimizer(nlc.loads(SPEC), [w])
    for _ in range(3):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert len(seen) == len(set(seen)) and len({s for s, _ in seen}) == 3
    assert len(seen) == 3 * len(opt.plan.nodes)  # every node of this spec is used, once a step


def _ir_uses(path: Path) -> set[str]:
    """The `ir.X` names a module uses, and `<import>` if it imports nlc.ir other than as `from nlc import ir`."""
    tree = ast.parse(path.read_text())
    uses = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "ir"}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module == "nlc.ir":
            uses.add("<import>")
    return uses


def test_the_optimizer_back_ends_read_the_plan_not_the_ir():
    assert _ir_uses(ROOT / "nlc" / "optim" / "reference.py") == set()
    assert "from nlc import ir" not in (ROOT / "nlc" / "optim" / "reference.py").read_text()
    assert _ir_uses(ROOT / "nlc" / "codegen" / "optimizer.py") <= {"Program"}  # the entry point's argument only
