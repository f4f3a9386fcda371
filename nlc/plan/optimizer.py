"""A checked optimizer program -> an optimizer plan: what the generated step computes, in order.

The plan fixes every decision the code generator (nlc.codegen.optimizer) needs (the
semantics are in the docstring of `nlc.optim`); what only the optimizer back end cares
about is checked first, by `nlc.passes.optimizer.check_optimizer` (the pass `nlc check`
runs too):

- each level's kind: `params` (the root), `elementwise` (state shaped like the
  parameter: `like(param)`, `like(LEVEL)`), or `mlp` (an `mlp(1, hidden)` memory
  applied to every entry, DMGD);
- its context as key / value expressions (key None = the constant key 1);
- the order of a step: `let`s (pre-step reads), the objective gradients of the
  levels (a `grad(LEVEL)` context after LEVEL), the updates (a level whose new
  state another level's update reads goes first; the root last);
- every expression as SSA nodes (`nlc.plan.ops`) in dependency order: the program
  inputs `grad`, `param`, `step` (those used), the `let`s (nodes named by the let, in
  the order the generated step evaluates them), then each level's fields; a field is an
  `Operand` (a number, a hyper-parameter, or a reference to a node). Hyper-parameters
  stay symbolic (`Hyper`): a parameter group may override them. A read of a level
  inside an `update` sees the level's state after its update this step (attrs
  {"new": True}); every other read sees the state from before the step;
- which nodes are Python numbers (hyper-parameters, `step`; `Node.py`) and which are
  tensors; which hyper-parameters are learning rates (>= 0) or counts (whole).

Diagnostics: E510 a model where an optimizer is expected; E511 something the
optimizer back end cannot compile (a model-only builtin, `init learned`, a state
kind other than like(param) / mlp(1, ...) / params, ...); E512 a hyper-parameter
name that cannot be a Python keyword argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx

from nlc import builtins as B
from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.passes.optimizer import (bind, check_optimizer, grad_of, gradient_order, initial, level_kind,
                                  update_reads)
from nlc.passes import frequency
from nlc.passes.facts import ProgramFacts
from nlc.printer import print_expr
from nlc.objectives import DEFAULT as DEFAULT_OBJECTIVE
from nlc.objectives import OBJECTIVES
from nlc.plan import ops
from nlc.plan.ops import OF_SYMBOL, Const, Node, Op, Operand, Ref
from nlc.plan.verify import verify
from nlc.rules import RULES


@dataclass(frozen=True)
class Hyper:
    """A spec parameter: a constructor keyword argument and a parameter-group key."""

    name: str
    default: object
    learning_rate: bool = False  # some level's `lr` is exactly this parameter: must be >= 0
    whole: bool = False  # a period, a Newton-Schulz step count or an MLP size: a positive whole number


@dataclass
class OptLevel:
    """One level of an optimizer, with its fields resolved for code generation."""

    name: str
    kind: str  # "params" (the root) | "elementwise" | "mlp"
    init: str = "zeros"  # zeros | identity (copy(...) resolved to the copied level's)
    mlp: dict = field(default_factory=dict)  # mlp: {"hidden": Operand | None, "depth": Operand, "residual": Operand}
    context: str = "loss"  # "loss" (grad(loss) / loss) | "kv" | "grad"
    key: Operand | None = None  # None: the constant key 1
    value: Operand | None = None  # kv: the value; loss: None (the gradient; its negation for the root)
    grad_of: str | None = None  # context grad(LEVEL)
    objective: str = DEFAULT_OBJECTIVE
    objective_arg: Operand | None = None
    rule: str | None = None  # a builtin rule, or None when `update` names a level or is an expression
    rule_args: dict[str, Operand] = field(default_factory=dict)  # defaults filled in as Const
    update: Operand | None = None  # `update m` / `update m / (sqrt(v) + eps)`: its reads are new (attrs["new"])
    lr: Operand | None = None  # None: 1
    retain: Operand | None = None  # None: 1
    period: Operand | None = None  # None: every step
    period_value: int = 1
    debias: bool = False
    update_deps: tuple[str, ...] = ()  # levels whose *new* state this level's update reads
    needs_grad: bool = False  # the objective gradient is used (by the rule or by a grad(this) context)
    parts: tuple[str, ...] = ()  # its fields as spec text, for comments: ("state like(param)", "lr 1 - beta1", ...)
    line: int = 0

    @property
    def root(self) -> bool:
        return self.kind == "params"


@dataclass
class OptimizerPlan:
    name: str
    spec_path: str
    hypers: list[Hyper]
    params: dict[str, object]
    nodes: list[Node]  # dependency order; a let's node is named by the let (attrs {"let": True})
    levels: list[OptLevel]  # update order; the root last
    grad_order: list[str]  # order in which objective gradients are taken

    def level(self, name: str) -> OptLevel:
        return next(lv for lv in self.levels if lv.name == name)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def lets(self) -> list[Node]:
        """The nodes of the lets a level uses, in the order the step evaluates them."""
        return [n for n in self.nodes if n.attrs.get("let")]

    @property
    def root(self) -> OptLevel:
        return self.levels[-1]


def plan_optimizer(program: ir.Program, params: Mapping[str, object], facts: ProgramFacts | None = None) \
        -> OptimizerPlan:
    """Return the plan of a checked optimizer program with parameter values `params`.

    `facts` are the checker's (`Checked.facts`: the plan reads each level's period there). A caller holding
    only the program and its parameters gets them from the checks the plan relies on, run here.
    """
    require_optimizer(program)
    if facts is None:
        facts = _checked_facts(program, params)
    plan = _Planner(program, dict(params), facts).plan()
    verify(plan)
    return plan


def _checked_facts(program: ir.Program, params: Mapping[str, object]) -> ProgramFacts:
    """Run the optimizer checks, then the period pass; raise SpecError on any error."""
    rep = Reporter()
    check_optimizer(program, params, rep)
    rep.raise_if_errors()
    facts = ProgramFacts(dict(params))
    frequency.run(program, params, rep, facts)
    rep.raise_if_errors()
    return facts


def require_optimizer(program: ir.Program) -> None:
    """Raise SpecError E510 if `program` is a model."""
    if program.is_model:
        raise SpecError([Diagnostic("E510", f"`{program.name}` is a model, not an optimizer", program.name_span,
                                    "build models with `nlc.build`; `nlc.build_optimizer` takes an optimizer spec "
                                    "such as examples/adam.nl")])


class _Planner:
    """Builds the plan of an optimizer that `check_optimizer` passed: no error is reported here."""

    def __init__(self, program: ir.Program, params: dict, facts: ProgramFacts):
        self.program = program
        self.params = params
        self.facts = facts
        self.lets = {s.name: s for s in program.body if isinstance(s, ir.Let)}
        self.ir_levels = {s.name: s for s in program.body if isinstance(s, ir.Level)}
        self.lr_params: set[str] = set()
        self.whole_params: set[str] = set()
        self.nodes: dict[str, Node] = {}

    # ---- the whole program ----
    def plan(self) -> OptimizerPlan:
        for let in self.used_lets():
            self.expr(let.value, let.name, name=let.name)
        levels = {name: self.level(lv) for name, lv in self.ir_levels.items()}
        order = self.update_order(levels)
        grad_order = gradient_order(self.ir_levels)
        for lv in levels.values():
            if lv.context == "grad":
                levels[lv.grad_of].needs_grad = True
        hypers = [Hyper(p.name, self.params[p.name], p.name in self.lr_params, p.name in self.whole_params)
                  for p in self.program.params]
        return OptimizerPlan(self.program.name, self.program.path, hypers, self.params, list(self.nodes.values()),
                             [levels[n] for n in order], grad_order)

    # ---- one level ----
    def level(self, lv: ir.Level) -> OptLevel:
        out = OptLevel(lv.name, level_kind(lv), line=lv.span.line)
        self.state(lv, out)
        init = initial(lv, self.ir_levels)
        out.init = init.fn if init is not None else "zeros"  # None: a copy cycle (E311, graph_checks)
        self.context(lv, out)
        obj = lv.objective
        out.objective = obj.fn
        if OBJECTIVES[obj.fn].args:  # one argument at most (huber's delta, lp's p)
            arg = obj.args[0] if obj.args else obj.kwarg(OBJECTIVES[obj.fn].args[0].name)
            out.objective_arg = self.field(arg, lv, "objective") if arg is not None \
                else Const(OBJECTIVES[obj.fn].args[0].default)
        self.update(lv, out)
        out.lr, out.retain = self.field(lv.lr, lv, "lr"), self.field(lv.retain, lv, "retain")
        if lv.lr is not None and isinstance(lv.lr, ir.Ref) and lv.lr.kind is ir.RefKind.PARAM:
            self.lr_params.add(lv.lr.name)
        count = lv.period.count
        out.period_value = self.facts.period(None, lv.name).count
        out.period = None if isinstance(count, ir.Num) and count.value == 1 else self.field(count, lv, "period")
        self.mark_whole(count)
        out.debias = lv.debias
        out.parts = _describe(lv)
        return out

    def state(self, lv: ir.Level, out: OptLevel) -> None:
        if out.kind != "mlp":
            return
        bound = bind(lv.state, B.STATES["mlp"])
        defaults = {"hidden": None, "depth": Const(2), "residual": Const(True)}
        out.mlp = {k: default if bound.get(k) is None else self.field(bound[k], lv, f"state.{k}")
                   for k, default in defaults.items()}
        for k in ("hidden", "depth"):
            if bound.get(k) is not None:
                self.mark_whole(bound[k])

    def context(self, lv: ir.Level, out: OptLevel) -> None:
        ctx = lv.context
        if isinstance(ctx, ir.Tuple):
            out.context = "kv"
            k, v = ctx.items
            out.key = None if isinstance(k, ir.Num) and k.value == 1 else self.field(k, lv, "key")
            out.value = self.field(v, lv, "value")
            return
        out.grad_of = grad_of(lv)
        out.context = "loss" if out.grad_of is None else "grad"  # `loss` on the root: the same as grad(loss)

    def update(self, lv: ir.Level, out: OptLevel) -> None:
        upd = lv.update
        if isinstance(upd, ir.Call) and upd.kind is ir.CallKind.FORM:
            out.rule = upd.fn
            bound = bind(upd, B.UPDATE_RULES[upd.fn])
            for a in B.UPDATE_RULES[upd.fn].args:
                e = bound.get(a.name)
                out.rule_args[a.name] = self.field(e, lv, a.name) if e is not None else Const(a.default)
                if a.type is B.ArgType.POSINT:
                    self.mark_whole(e)
            # a rule linear in g with the dot objective steps by lr * value * key: g need not be formed
            out.needs_grad = not (RULES[out.rule].linear_in_grad and OBJECTIVES[out.objective].minus_value_gradient
                                  and out.kind != "mlp")
            return
        out.update = self.field(upd, lv, "update", new=True)
        out.update_deps = update_reads(upd)
        for n in ir.walk(upd):
            if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn == "newton_schulz":
                steps = n.args[1] if len(n.args) > 1 else n.kwarg("steps")
                if steps is not None:
                    self.mark_whole(steps)

    def mark_whole(self, e: ir.Expr | None) -> None:
        if isinstance(e, ir.Ref) and e.kind is ir.RefKind.PARAM:
            self.whole_params.add(e.name)

    # ---- across levels ----
    def update_order(self, levels: dict[str, OptLevel]) -> list[str]:
        g = nx.DiGraph()
        names = list(levels)
        g.add_nodes_from(names)
        for lv in levels.values():
            for dep in lv.update_deps:
                g.add_edge(dep, lv.name)
        order = list(nx.lexicographical_topological_sort(g, key=names.index))  # E310 excluded cycles
        root = next(n for n in order if levels[n].root)
        order.remove(root)
        return order + [root]

    # ---- expressions -> nodes ----
    def field(self, e: ir.Expr | None, lv: ir.Level, what: str, new: bool = False) -> Operand | None:
        """A level's field as an operand; `new`: its level reads see the states after this step's updates."""
        return None if e is None else self.expr(e, f"{lv.name}.{what}", new)

    def expr(self, e: ir.Expr, where: str, new: bool = False, name: str | None = None) -> Operand:
        """Flatten `e` into nodes; return its operand. `name`: the top node's name (a let's), always a node."""
        if isinstance(e, (ir.Num, ir.Bool)):
            return self.alias(name, Const(e.value), e)
        if isinstance(e, ir.Ref) and e.kind is ir.RefKind.PARAM:
            return self.alias(name, ops.Hyper(e.name), e)  # symbolic (ops.Hyper, not the spec parameter above)
        if isinstance(e, ir.Ref) and e.kind is ir.RefKind.INPUT:
            if e.name not in self.nodes:
                self.add(Node(e.name, Op.INPUT, py=e.name == "step", source=e.name))
            return self.alias(name, Ref(e.name), e)
        if isinstance(e, ir.Ref) and e.kind is ir.RefKind.LET:
            return self.alias(name, Ref(e.name), e)
        if isinstance(e, ir.Ref):  # a level's state
            return self.node(name, where, Op.READ, (), e, level=e.name, new=new)
        if isinstance(e, ir.Neg):
            return self.node(name, where, Op.NEG, (self.expr(e.operand, where, new),), e)
        if isinstance(e, ir.BinOp):
            args = (self.expr(e.lhs, where, new), self.expr(e.rhs, where, new))
            return self.node(name, where, OF_SYMBOL[e.op], args, e)
        assert isinstance(e, ir.Call)
        if e.kind is ir.CallKind.READ:
            return self.node(name, where, Op.READ, tuple(self.expr(a, where, new) for a in e.args), e,
                             level=e.fn, new=new)
        bound = bind(e, B.OPS[e.fn])
        x = self.expr(bound["x"], where, new)
        if e.fn == "newton_schulz":
            steps = bound.get("steps")
            steps = Const(5) if steps is None else self.expr(steps, where, new)
            return self.node(name, where, Op.NEWTON_SCHULZ, (x, steps), e)
        if e.fn in ("mean", "l2norm"):
            return self.node(name, where, Op.MEAN if e.fn == "mean" else Op.L2NORM, (x,), e)
        return self.node(name, where, Op.UNARY, (x,), e, fn=e.fn)  # check_optimizer refused the others (E511)

    def alias(self, name: str | None, operand: Operand, e: ir.Expr) -> Operand:
        """`operand` itself, or, for a let (`name`), a node under the let's name."""
        return operand if name is None else self.node(name, name, Op.ALIAS, (operand,), e)

    def node(self, name: str | None, where: str, op: Op, args: tuple, e: ir.Expr, **attrs) -> Ref:
        """Add `name = op(args, **attrs)` (a fresh name under `where` when `name` is None)."""
        if name is not None:
            attrs["let"] = True
        else:
            name = self.fresh(f"{where}.{op.value}")
        py = op not in (Op.READ, Op.NEWTON_SCHULZ, Op.MEAN, Op.L2NORM) and all(self.is_py(a) for a in args)
        span = getattr(e, "span", None)
        return self.add(Node(name, op, args, attrs, source=print_expr(e), line=span.line if span else 0, py=py))

    def add(self, node: Node) -> Ref:
        self.nodes[node.name] = node
        return Ref(node.name)

    def fresh(self, base: str) -> str:
        """A node name not taken yet (it holds a dot: no spec name can take it)."""
        name, i = base, 1
        while name in self.nodes:
            i += 1
            name = f"{base}.{i}"
        return name

    def is_py(self, a: Operand) -> bool:
        """A Python number (a constant, a hyper-parameter, or a node over those and `step`), not a tensor."""
        return not isinstance(a, Ref) or self.nodes[a.name].py

    def used_lets(self) -> list[ir.Let]:
        g = nx.DiGraph()
        roots: set[str] = set()
        names = list(self.lets)
        for name, let in self.lets.items():
            g.add_node(name)
            for dep in self.let_refs(let.value):
                g.add_edge(dep, name)
        for lv in self.ir_levels.values():
            for e in (lv.context, lv.update, lv.lr, lv.retain, lv.objective, lv.period.count, lv.state):
                if e is not None:
                    roots |= set(self.let_refs(e))
        needed = set(roots)
        for r in roots:
            needed |= nx.ancestors(g, r)
        order = nx.lexicographical_topological_sort(g, key=names.index)
        return [self.lets[n] for n in order if n in needed]

    def let_refs(self, e: ir.Expr) -> list[str]:
        return [n.name for n in ir.walk(e) if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET]


def _describe(lv: ir.Level) -> tuple[str, ...]:
    """A level's fields as spec text, for comments in the generated code."""
    parts = [f"state {print_expr(lv.state)}"]
    if lv.init.fn != "zeros":
        parts.append(f"init {print_expr(lv.init)}")
    parts.append(f"context {print_expr(lv.context)}")
    if "objective" not in ir.ignored_fields(lv, ir.ProgramKind.OPTIMIZER):
        parts.append(f"objective {print_expr(lv.objective)}")
    parts.append(f"update {print_expr(lv.update)}")
    if lv.lr is not None:
        parts.append(f"lr {print_expr(lv.lr)}")
    if lv.retain is not None:
        parts.append(f"retain {print_expr(lv.retain)}")
    p = lv.period
    parts.append("every step" if isinstance(p.count, ir.Num) and p.count.value == 1
                 else f"period {print_expr(p.count)} steps")
    if lv.debias:
        parts.append("debias")
    return tuple(parts)
