"""verify(plan): reject a malformed plan before a back end reads it (docs/design.md §2.6).

A plan is the contract between the planners and four consumers (the model
interpreter and emitter, the optimizer reference and generator). `verify` states
that contract as checks, so that a planner bug surfaces here, with the node at
fault, instead of as a wrong number or a crash somewhere downstream:

- nodes: unique names, in dependency order (a `Ref` names an earlier node), each
  op one of the program kind's (`MODEL_OPS`, `OPTIMIZER_OPS`) with its arity
  (`ARITY`) and the attributes it needs (a unary builtin's name, a read's level, a
  layer's module);
- operands: constants, references to nodes, and (optimizers only) the program's
  hyper-parameters;
- levels: every operand they learn from is a node of the plan; the names they cite
  (update rule, `grad(L)` context, `update L`, `init copy`) exist;
- a model's phases agree with the dependencies: nothing before the chunk loop
  reads a value from inside it, and nothing the levels learn from comes after it;
- an optimizer's root level comes last, and only its `update` expressions read the
  levels' new states (everything else sees the states from before the step).

It is called by `plan_model` and `plan_optimizer` on every plan (linear in its size).
A failure is an internal error: nlc's bug, never the user's.
"""

from __future__ import annotations

from typing import Iterable

from nlc.plan.ops import ARITY, HEADS, LAYERS, MODEL_OPS, OPTIMIZER_OPS, Const, Hyper, Node, Op, Operand, Ref
from nlc.rules import RULES, step_level_rules
from nlc.unary import UNARY_OPS

PHASES = ("pre", "loop", "post")
OPTIMIZER_INPUTS = ("grad", "param", "step")


class MalformedPlan(AssertionError):
    """A plan that breaks the contract of `nlc.plan`: a bug in nlc, reported with every problem found."""

    def __init__(self, what: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"internal error: the plan of {what} is malformed (a bug in nlc; please report it):\n  "
                         + "\n  ".join(problems))


def verify(plan) -> None:
    """Raise MalformedPlan if `plan` (a ModelPlan or an OptimizerPlan) breaks the plan's contract."""
    problems = _model(plan) if hasattr(plan, "blocks") else _optimizer(plan)  # (the plan modules import this one)
    if problems:
        raise MalformedPlan(f"`{plan.name}`", problems)


# ---- nodes, shared by both kinds of program ----


def check_nodes(nodes: Iterable[Node], allowed: frozenset[Op], *, hypers: frozenset[str] = frozenset(),
                levels: frozenset[str] = frozenset(), modules: frozenset[str] = frozenset(),
                where: str = "") -> tuple[dict[str, Node], list[str]]:
    """Check the SSA nodes of one scope; return them by name and the problems found."""
    seen: dict[str, Node] = {}
    problems: list[str] = []

    def bad(node: Node, why: str) -> None:
        problems.append(f"{where}node `{getattr(node, 'name', node)}`: {why}")

    for node in nodes:
        if not isinstance(node, Node) or not isinstance(node.name, str) or not node.name:
            bad(node, "not a named plan node")
            continue
        if node.name in seen:
            bad(node, "defined twice")
        if not isinstance(node.op, Op) or node.op not in allowed:
            bad(node, f"operation {node.op!r} is not one this kind of program may hold")
            seen[node.name] = node
            continue
        fewest, most = ARITY[node.op]
        if len(node.args) < fewest or (most is not None and len(node.args) > most):
            bad(node, f"{node.op.value} takes {fewest}..{most if most is not None else 'n'} operands, "
                      f"not {len(node.args)}")
        for a in node.args:
            problems.extend(f"{where}node `{node.name}`: {p}" for p in _operand(a, seen, hypers))
        if node.op is Op.UNARY and node.attrs.get("fn") not in UNARY_OPS:
            bad(node, f"unary operation {node.attrs.get('fn')!r} is not in nlc.unary")
        if node.op is Op.SLICE:
            start, stop = node.attrs.get("start"), node.attrs.get("stop")
            if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop):
                bad(node, f"slice bounds {start!r}..{stop!r} are not 0 <= start < stop")
        if node.op in HEADS and not (isinstance(node.attrs.get("heads"), int) and node.attrs["heads"] > 1):
            bad(node, f"{node.op.value} into {node.attrs.get('heads')!r} heads, not a whole number above 1")
        if node.op is Op.READ and node.attrs.get("level") not in levels:
            bad(node, f"reads {node.attrs.get('level')!r}, not a level of its scope")
        if (node.op in LAYERS) != (node.module is not None) or (node.module is not None and node.module not in modules):
            bad(node, f"module {node.module!r} does not fit {node.op.value}")
        seen[node.name] = node
    return seen, problems


def _operand(a: Operand, defined: dict[str, Node], hypers: frozenset[str]) -> list[str]:
    """What is wrong with operand `a` given the nodes defined before it."""
    if isinstance(a, Const):
        return [] if isinstance(a.value, (int, float, bool)) else [f"constant {a.value!r} is not a number"]
    if isinstance(a, Ref):
        return [] if a.name in defined else [f"refers to `{a.name}` before it is defined (or never)"]
    if isinstance(a, Hyper):
        return [] if a.name in hypers else [f"hyper-parameter `{a.name}` is not one of the program's"]
    return [f"operand {a!r} is not a Const, a Hyper or a Ref"]


def _reaches(start: Iterable[Operand], nodes: dict[str, Node], hit) -> str | None:
    """The first node reachable from the operands `start` (through Refs) for which `hit(node)` holds."""
    stack = [a.name for a in start if isinstance(a, Ref) and a.name in nodes]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = nodes[name]
        if hit(node):
            return name
        stack.extend(r for r in node.refs if r in nodes)
    return None


# ---- models ----


def _model(plan) -> list[str]:
    problems: list[str] = []
    for block in plan.blocks:
        where = f"block `{block.name}` #{block.index}, "
        attrs = [m.attr for m in block.modules]
        problems += [f"{where}module `{a}` is created twice" for a in sorted({a for a in attrs if attrs.count(a) > 1})]
        levels = {lv.name: lv for lv in block.levels}
        slow = {lv.name: lv for lv in [*block.slow_levels, *block.loss_levels]}
        nodes, found = check_nodes(block.nodes, MODEL_OPS, levels=frozenset(levels) | frozenset(slow),
                                   modules=frozenset(attrs), where=where)
        problems += found
        if not block.nodes or block.nodes[0].op is not Op.INPUT or block.nodes[0].name != "x":
            problems.append(f"{where}the first node is not the block input `x`")
        problems += [f"{where}node `{n.name}`: an input other than `x`" for n in block.nodes[1:] if n.op is Op.INPUT]
        problems += [f"{where}hyper-parameter in a model (its parameters are folded)"
                     for n in block.nodes for a in n.args if isinstance(a, Hyper)]
        problems += _model_phases(block, nodes, where)
        for lv in block.levels:
            problems += [f"{where}level `{lv.name}`: {p}" for p in _model_level(lv, levels, slow, nodes)]
        for lv in block.slow_levels:
            if lv.period < 0 or (lv.period > 0 and lv.rule not in step_level_rules()):
                problems.append(f"{where}step level `{lv.name}`: period {lv.period} with rule {lv.rule!r}")
        for lv in block.loss_levels:
            if lv.period < 2 or lv.rule not in step_level_rules() or lv.init not in ("learned", "zeros", "identity"):
                problems.append(f"{where}loss level `{lv.name}`: period {lv.period}, rule {lv.rule!r}, init {lv.init!r}")
        problems += [f"{where}the output: {p}" for p in _operand(block.out, nodes, frozenset())]
    problems += _shared(plan)
    return problems


def _shared(plan) -> list[str]:
    """A shared level is written by two or more blocks, each declaring it alike (shape, rule, period, init) as an
    in-context level with (key, value) pairs and no module of its own for its initial state; every level a
    block marks shared is one of the model's; all share one period, which every in-context period divides."""
    out = []
    names = {s.name for s in plan.shared}
    for b in plan.blocks:
        for lv in b.levels:
            if lv.shared and lv.name not in names:
                out.append(f"block #{b.index}: level `{lv.name}` is marked shared but is not one of the model's")
    for s in plan.shared:
        where = f"shared level `{s.name}`: "
        if len(s.writers) < 2 or len(set(s.writers)) != len(s.writers):
            out.append(f"{where}written by blocks {s.writers}, not two or more")
            continue
        for i, lv in zip(s.writers, s.learns_in(plan)):
            if not lv.shared or lv.context[0] != "kv" or lv.update_by or lv.heads != 1 or lv.read_current \
                    or lv.copy_of or lv.reset_from:
                out.append(f"{where}block #{i} declares it as a level that cannot be shared")
            if (lv.kind, lv.weights, lv.residual, lv.rule, lv.period, lv.init) != \
                    (s.kind, s.weights, s.residual, s.rule, s.period, s.init):
                out.append(f"{where}block #{i} declares another state, rule, period or init")
            if any(m.attr == f"{lv.var}_init" for m in plan.blocks[i].modules):
                out.append(f"{where}block #{i} creates an initial state of its own")
        if s.period != plan.shared[0].period:
            out.append(f"{where}period {s.period}, not the model's shared period {plan.shared[0].period}")
    if plan.shared:
        periods = [lv.period for b in plan.blocks for lv in b.levels]
        out += [f"in-context period {p} does not divide the shared period {plan.shared[0].period}"
                for p in sorted(set(periods)) if plan.shared[0].period % p]
        if plan.loss_levels:
            out.append("shared levels and `context loss` levels in tokens in one model")
    return out


def _model_phases(block, nodes: dict[str, Node], where: str) -> list[str]:
    """Phases follow dependencies: pre <- pre; loop <- pre, loop; post <- anything; in_loop iff not pre."""
    out = []
    rank = {p: i for i, p in enumerate(PHASES)}
    for node in block.nodes:
        if node.phase not in rank:
            out.append(f"{where}node `{node.name}`: phase {node.phase!r}")
            continue
        if node.in_loop != (node.phase != "pre"):
            out.append(f"{where}node `{node.name}`: in_loop {node.in_loop} disagrees with phase {node.phase}")
        for r in node.refs:
            if r in nodes and rank.get(nodes[r].phase, 0) > rank[node.phase]:
                out.append(f"{where}node `{node.name}` ({node.phase}) reads `{r}` ({nodes[r].phase})")
    return out


def _model_level(lv, levels: dict, slow: dict, nodes: dict[str, Node]) -> list[str]:
    out = []
    if lv.rule not in RULES:
        out.append(f"rule {lv.rule!r} is not in the registry")
    elif lv.update_by is None and set(lv.rule_args) != {a.name for a in RULES[lv.rule].args}:
        out.append(f"rule arguments {sorted(lv.rule_args)} are not {lv.rule}'s")
    if lv.update_by is not None and lv.update_by not in levels:
        out.append(f"updated by `{lv.update_by}`, not an in-context level of the block")
    if lv.context[0] == "by" and lv.update_by is None:
        out.append("learns from nothing: no context, and no level updates it")
    if lv.context[0] == "grad" and lv.context[1] not in levels:
        out.append(f"learns grad({lv.context[1]}), not an in-context level of the block")
    if lv.copy_of is not None and lv.copy_of not in levels and lv.copy_of not in slow:
        out.append(f"starts as a copy of `{lv.copy_of}`, not a level of the block")
    if lv.period < 1:
        out.append(f"period {lv.period}")
    out += _heads(lv, nodes)
    if lv.read_current:  # its reads see its update at the token: what it learns from is computed first
        order = {name: i for i, name in enumerate(nodes)}
        first_read = min((order[n.name] for n in nodes.values() if n.op is Op.READ and n.attrs.get("level") == lv.name),
                         default=None)
        late = [a.name for a in lv.learning_operands() if isinstance(a, Ref) and a.name in order
                and first_read is not None and order[a.name] > first_read]
        out += [f"a `read current` read comes before `{name}`, which the level learns from" for name in late]
    for a in lv.learning_operands():
        out += _operand(a, nodes, frozenset())
        if isinstance(a, Ref) and a.name in nodes and nodes[a.name].phase == "post":
            out.append(f"learns from `{a.name}`, which is computed after the chunk loop")
    return out


def _heads(lv, nodes: dict[str, Node]) -> list[str]:
    """A level split into heads learns from values split into as many heads (a scalar, such as a learned
    gate, is the same for every head), and its reads are keyed by them and merged back; a level
    without heads sees no split value."""
    out = []
    split = lambda name, h: nodes[name].op is Op.SPLIT_HEADS and nodes[name].attrs.get("heads") == h  # noqa: E731
    for a in lv.learning_operands():
        if not (isinstance(a, Ref) and a.name in nodes) or nodes[a.name].width is None:
            continue
        if lv.heads > 1 and not split(a.name, lv.heads):
            out.append(f"learns from `{a.name}`, which is not split into its {lv.heads} heads")
        elif lv.heads == 1 and nodes[a.name].op is Op.SPLIT_HEADS:
            out.append(f"learns from `{a.name}`, which is split into heads, but the level has none")
    reads = {n.name for n in nodes.values() if n.op is Op.READ and n.attrs.get("level") == lv.name}
    for n in nodes.values():
        if n.name in reads and lv.heads > 1 and not (n.args and isinstance(n.args[0], Ref)
                                                      and n.args[0].name in nodes and split(n.args[0].name, lv.heads)):
            out.append(f"read `{n.name}` is not keyed by a value split into {lv.heads} heads")
        used = reads.intersection(n.refs)
        if used and (lv.heads > 1) != (n.op is Op.MERGE_HEADS and n.attrs.get("heads") == lv.heads):
            out.append(f"node `{n.name}` reads `{sorted(used)[0]}` " +
                       ("without merging its heads" if lv.heads > 1 else "as if it had heads"))
    return out


# ---- optimizers ----


def level_operands(lv) -> dict[str, Operand]:
    """An optimizer level's operands that see the states from before the step, by field."""
    out = {"key": lv.key, "value": lv.value, "lr": lv.lr, "retain": lv.retain, "objective_arg": lv.objective_arg,
           "period": lv.period, **{f"rule_args.{k}": v for k, v in lv.rule_args.items()},
           **{f"mlp.{k}": v for k, v in lv.mlp.items()}}
    return {k: v for k, v in out.items() if v is not None}


def _optimizer(plan) -> list[str]:
    problems: list[str] = []
    names = [lv.name for lv in plan.levels]
    problems += [f"level `{n}` is planned twice" for n in sorted({n for n in names if names.count(n) > 1})]
    hypers = frozenset(h.name for h in plan.hypers)
    nodes, found = check_nodes(plan.nodes, OPTIMIZER_OPS, hypers=hypers, levels=frozenset(names))
    problems += found
    problems += [f"node `{n.name}`: input `{n.name}` is not one of {OPTIMIZER_INPUTS}"
                 for n in plan.nodes if n.op is Op.INPUT and n.name not in OPTIMIZER_INPUTS]
    roots = [lv.name for lv in plan.levels if lv.root]
    if len(roots) != 1 or not plan.levels[-1].root:
        problems.append(f"the parameters (`state params`) must be exactly one level, updated last: {roots}")
    problems += [f"gradient order names `{n}`, not a level" for n in plan.grad_order if n not in names]
    is_new_read = lambda n: n.op is Op.READ and n.attrs.get("new") is True  # noqa: E731
    for lv in plan.levels:
        at = f"level `{lv.name}`: "
        if lv.rule is not None and lv.rule not in RULES:
            problems.append(at + f"rule {lv.rule!r} is not in the registry")
        if (lv.rule is None) == (lv.update is None) and lv.kind != "mlp":
            problems.append(at + "needs exactly one of a rule and an update expression")
        if lv.grad_of is not None and lv.grad_of not in names:
            problems.append(at + f"learns grad({lv.grad_of}), not a level")
        for field, a in level_operands(lv).items():
            problems += [at + f"{field}: {p}" for p in _operand(a, nodes, hypers)]
            new = _reaches([a], nodes, is_new_read)
            if new is not None:
                problems.append(at + f"{field} reads a new state (node `{new}`); only an update may")
        if lv.update is not None:
            problems += [at + f"update: {p}" for p in _operand(lv.update, nodes, hypers)]
    return problems
