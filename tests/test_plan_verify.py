"""verify(plan) (issue #13: one plan, a closed set of operations, a verifier).

Every plan nlc makes passes `verify` (the planners call it; here on every example and on random
specs), and each way of breaking the plan's contract is rejected with the node at fault.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings

import nlc
import nlc.testing as nt
from nlc.passes.pipeline import check_ir
from nlc.plan import plan_model, plan_optimizer
from nlc.plan.ops import ARITY, Const, Hyper, Node, Op, Ref
from nlc.plan.verify import MalformedPlan, check_nodes, verify
from tests.model_cases import ROOT, tiny

EXAMPLES = sorted((ROOT / "examples").glob("*.nl"))
MODELS = [p for p in EXAMPLES if nlc.load(p).is_model]


def _model_plan(path):
    prog = nlc.load(path)
    return plan_model(check_ir(prog, tiny(prog)))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_every_example_model_plan_verifies_and_uses_only_the_closed_set_of_operations(path):
    plan = _model_plan(path)
    verify(plan)
    for block in plan.blocks:
        assert all(isinstance(n.op, Op) for n in block.nodes)
        assert all(isinstance(a, (Const, Ref)) for n in block.nodes for a in n.args)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(nt.spec_texts(max_blocks=2, max_levels=3))
def test_every_random_model_plan_verifies(text):
    prog = nlc.loads(text, "<random>")
    verify(plan_model(check_ir(prog, {})))


# ---- each mutation breaks one clause of the contract ----

def _first(block, pred):
    return next(n for n in block.nodes if pred(n))


def _binary(block):
    return _first(block, lambda n: n.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV) and len(n.refs) >= 1)


def _string_op(b):
    _binary(b).op = "add"


def _later_reference(b):
    user = _first(b, lambda n: any(r != "x" for r in n.refs))
    arg = next(n for n in b.nodes if n.name in user.refs and n.name != "x")
    b.nodes.remove(arg)
    b.nodes.append(arg)  # defined after a node that reads it


def _missing_reference(b):
    node = _binary(b)
    node.args = (Ref("nowhere"), *node.args[1:])


def _arity(b):
    node = _binary(b)
    node.args = node.args[:1]


def _hyper_in_a_model(b):
    node = _binary(b)
    node.args = (*node.args[:1], Hyper("lr"))


def _unknown_level(b):
    _first(b, lambda n: n.op is Op.READ).attrs["level"] = "nobody"


def _layer_without_module(b):
    _first(b, lambda n: n.op is Op.LINEAR).module = None


def _duplicate_name(b):
    a = _first(b, lambda n: n.op is Op.LINEAR)
    b.nodes.append(Node(a.name, Op.ALIAS, (Ref("x"),)))


def _unknown_unary(b):
    b.nodes.append(Node("u", Op.UNARY, (Ref("x"),), {"fn": "os.system"}))


def _empty_slice(b):
    b.nodes.append(Node("s", Op.SLICE, (Ref("x"),), {"start": 4, "stop": 4}))


def _heads_without_split(b):
    b.levels[0].heads = 2  # its keys, values, gates and reads are still whole


def _split_into_one_head(b):
    b.nodes.append(Node("one", Op.SPLIT_HEADS, (Ref("x"),), {"heads": 1}))


def _level_learns_after_the_loop(b):
    lv = b.levels[0]
    post = Node("late", Op.ALIAS, (Ref("x"),), in_loop=True, phase="post")
    b.nodes.append(post)
    lv.lr = Ref("late")


def _pre_reads_loop(b):
    loop = _first(b, lambda n: n.phase == "loop")
    b.nodes.append(Node("early", Op.ALIAS, (Ref(loop.name),), phase="pre"))


def _rule_arguments(b):
    b.levels[0].rule_args["bogus"] = Const(1.0)


def _update_by_unknown(b):
    b.levels[0].update_by = "nobody"


def _module_twice(b):
    b.modules.append(copy.copy(b.modules[0]))


MUTATIONS = {
    "an op that is not an Op": (_string_op, "not one this kind of program may hold"),
    "a reference to a node defined later or never": (_later_reference, "before it is defined"),
    "a reference to no node": (_missing_reference, "before it is defined"),
    "the wrong number of operands": (_arity, "operands, not 1"),
    "a hyper-parameter in a model": (_hyper_in_a_model, "hyper-parameter"),
    "a read of no level": (_unknown_level, "not a level of its scope"),
    "a layer without its module": (_layer_without_module, "does not fit linear"),
    "a name defined twice": (_duplicate_name, "defined twice"),
    "an unknown unary builtin": (_unknown_unary, "not in nlc.unary"),
    "a slice that holds no feature": (_empty_slice, "are not 0 <= start < stop"),
    "a multi-head level learning from whole values": (_heads_without_split, "not split into its 2 heads"),
    "a multi-head level's read not merged": (_heads_without_split, "without merging its heads"),
    "a split into one head": (_split_into_one_head, "not a whole number above 1"),
    "a level learning from after the chunk loop": (_level_learns_after_the_loop, "after the chunk loop"),
    "a value before the loop reading one inside it": (_pre_reads_loop, "(pre) reads"),
    "rule arguments that are not the rule's": (_rule_arguments, "are not"),
    "update by a level that does not exist": (_update_by_unknown, "updated by"),
    "a module created twice": (_module_twice, "created twice"),
}


@pytest.mark.parametrize("what", MUTATIONS)
def test_verify_rejects_a_malformed_model_plan(what):
    mutate, message = MUTATIONS[what]
    plan = _model_plan(ROOT / "examples" / "titans_lmm.nl")
    verify(plan)
    block = next(b for b in plan.blocks if b.levels)
    mutate(block)
    with pytest.raises(MalformedPlan) as e:
        verify(plan)
    assert message in str(e.value), str(e.value)
    assert "internal error" in str(e.value) and "a bug in nlc" in str(e.value)


def test_every_op_has_an_arity_and_both_kinds_of_program_a_set():
    assert set(ARITY) == set(Op)
    _, problems = check_nodes([Node("x", Op.INPUT), Node("y", Op.NEWTON_SCHULZ, (Ref("x"), Const(5)))],
                              frozenset(Op) - {Op.NEWTON_SCHULZ})
    assert problems and "newton_schulz" in problems[0]


def test_a_model_plans_nodes_are_plain_dataclasses_with_typed_operands():
    # the plan is data: copying and comparing it needs nothing of the planner
    plan = _model_plan(ROOT / "examples" / "hope.nl")
    twin = copy.deepcopy(plan)
    assert [dataclasses.asdict(n) for n in twin.blocks[0].nodes] == [dataclasses.asdict(n)
                                                                     for n in plan.blocks[0].nodes]


# ---- optimizers ----

def _optimizer_plan(name):
    prog = nlc.load(ROOT / "examples" / name)
    checked = check_ir(prog, {})
    return plan_optimizer(checked.program, checked.params, checked.facts)


def _new_read_in_a_gate(plan):
    lv = next(lv for lv in plan.levels if not lv.root)
    plan.nodes.append(Node("peek", Op.READ, (), {"level": lv.name, "new": True}))
    lv.lr = Ref("peek")


def _root_first(plan):
    plan.levels.insert(0, plan.levels.pop())


def _unknown_hyper(plan):
    plan.levels[0].lr = Hyper("nobody")


def _model_op(plan):
    plan.nodes.append(Node("joined", Op.CONCAT, (Ref(plan.nodes[0].name),)))


def _unknown_input(plan):
    plan.nodes.insert(0, Node("tokens", Op.INPUT))


OPTIMIZER_MUTATIONS = {
    "a gate reading a level's new state": (_new_read_in_a_gate, "only an update may"),
    "the parameters not updated last": (_root_first, "updated last"),
    "a hyper-parameter the program does not have": (_unknown_hyper, "hyper-parameter `nobody`"),
    "a model-only operation": (_model_op, "not one this kind of program may hold"),
    "an input an optimizer does not have": (_unknown_input, "input `tokens`"),
}


@pytest.mark.parametrize("what", OPTIMIZER_MUTATIONS)
def test_verify_rejects_a_malformed_optimizer_plan(what):
    mutate, message = OPTIMIZER_MUTATIONS[what]
    plan = _optimizer_plan("adam.nl")
    verify(plan)
    mutate(plan)
    with pytest.raises(MalformedPlan) as e:
        verify(plan)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if not nlc.load(p).is_model], ids=lambda p: p.name)
def test_every_example_optimizer_plan_verifies(path):
    plan = _optimizer_plan(path.name)
    verify(plan)
    assert all(isinstance(n.op, Op) for n in plan.nodes)
