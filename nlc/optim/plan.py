"""A checked optimizer program -> an optimizer plan: what the generated step computes, in order.

The plan fixes every decision the code generator (nlc.codegen.optimizer) needs and
checks what only the optimizer back end cares about (the semantics are in the
docstring of `nlc.optim`):

- each level's kind: `params` (the root), `elementwise` (state shaped like the
  parameter: `like(param)`, `like(LEVEL)`), or `mlp` (an `mlp(1, hidden)` memory
  applied to every entry, DMGD);
- its context as key / value expressions (key None = the constant key 1);
- the order of a step: `let`s (pre-step reads), the objective gradients of the
  levels (a `grad(LEVEL)` context after LEVEL), the updates (a level whose new
  state another level's update reads goes first; the root last);
- which expressions are Python numbers (hyper-parameters, `step`) and which are
  tensors; which hyper-parameters are learning rates (>= 0) or counts (whole).

Diagnostics: E510 a model where an optimizer is expected; E511 something the
optimizer back end cannot compile (a model-only builtin, `init learned`, a state
kind other than like(param) / mlp(1, ...) / params, ...); E512 a hyper-parameter
name that cannot be a Python keyword argument.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx

from nlc import builtins as B
from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.names import FORBIDDEN_NAMES
from nlc.passes.params import fold
from nlc.passes.graph_checks import is_root
from nlc.rules import DEFAULT, RULES

MODEL_ONLY_OPS = ("linear", "conv", "attention", "rmsnorm", "swiglu", "concat", "learned")
TENSOR_OPS = ("newton_schulz", "mean", "l2norm")
# keyword arguments the generated constructor already has, besides Python keywords
# the generated constructor's own names: a hyper-parameter (a keyword argument) must not shadow them
CONSTRUCTOR_NAMES = frozenset({"self", "params", "unknown", "defaults", "rt", "torch", "math", "F", "super"})


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
    mlp: dict = field(default_factory=dict)  # mlp: {"hidden": Expr | None, "depth": Expr, "residual": Expr}
    context: str = "loss"  # "loss" (grad(loss) / loss) | "kv" | "grad"
    key: ir.Expr | None = None  # None: the constant key 1
    value: ir.Expr | None = None  # kv: the value; loss: None (the gradient; its negation for the root)
    grad_of: str | None = None  # context grad(LEVEL)
    objective: str = "l2"
    objective_arg: ir.Expr | None = None
    rule: str | None = None  # a builtin rule, or None when `update` names a level or is an expression
    rule_args: dict = field(default_factory=dict)  # name -> Expr (defaults filled in as Num)
    update: ir.Expr | None = None  # `update m` / `update m / (sqrt(v) + eps)`
    lr: ir.Expr | None = None  # None: 1
    retain: ir.Expr | None = None  # None: 1
    period: ir.Expr | None = None  # None: every step
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
    lets: list[ir.Let]  # the lets a level uses, in dependency order
    levels: list[OptLevel]  # update order; the root last
    grad_order: list[str]  # order in which objective gradients are taken
    kinds: dict[str, str]  # let name -> "py" | "tensor"

    def level(self, name: str) -> OptLevel:
        return next(lv for lv in self.levels if lv.name == name)

    @property
    def root(self) -> OptLevel:
        return self.levels[-1]


def plan_optimizer(program: ir.Program, params: Mapping[str, object]) -> OptimizerPlan:
    """Return the plan of a checked optimizer program with parameter values `params`."""
    require_optimizer(program)
    return _Planner(program, dict(params)).plan()


def require_optimizer(program: ir.Program) -> None:
    """Raise SpecError E510 if `program` is a model."""
    if program.is_model:
        raise SpecError([Diagnostic("E510", f"`{program.name}` is a model, not an optimizer", program.name_span,
                                    "build models with `nlc.build`; `nlc.build_optimizer` takes an optimizer spec "
                                    "such as examples/adam.nl")])


class _Planner:
    def __init__(self, program: ir.Program, params: dict):
        self.program = program
        self.params = params
        self.rep = Reporter()
        body = program.body
        self.lets = {s.name: s for s in body if isinstance(s, ir.Let)}
        self.ir_levels = {s.name: s for s in body if isinstance(s, ir.Level)}
        self.let_kinds: dict[str, str] = {}
        self.lr_params: set[str] = set()
        self.whole_params: set[str] = set()

    def error(self, message: str, span, hint: str | None = None) -> None:
        self.rep.error("E511", message, span, hint)

    # ---- the whole program ----
    def plan(self) -> OptimizerPlan:
        self.check_names()
        for e in self.all_exprs():
            self.check_ops(e)
        self.rep.raise_if_errors()
        for name in self.lets:
            self.kind_of(ir.Ref(name, ir.RefKind.LET))
        levels = {name: self.level(lv) for name, lv in self.ir_levels.items()}
        self.rep.raise_if_errors()
        self.check_levels(levels)
        self.rep.raise_if_errors()
        order = self.update_order(levels)
        grad_order = self.gradient_order(levels)
        self.rep.raise_if_errors()
        for lv in levels.values():
            if lv.context == "grad":
                levels[lv.grad_of].needs_grad = True
        hypers = [Hyper(p.name, self.params[p.name], p.name in self.lr_params, p.name in self.whole_params)
                  for p in self.program.params]
        return OptimizerPlan(self.program.name, self.program.path, hypers, self.params, self.used_lets(levels),
                             [levels[n] for n in order], grad_order, dict(self.let_kinds))

    def check_names(self) -> None:
        for p in self.program.params:
            if (keyword.iskeyword(p.name) or p.name in CONSTRUCTOR_NAMES or p.name in FORBIDDEN_NAMES
                    or p.name.startswith("__")):
                self.rep.error("E512", f"parameter `{p.name}` cannot be a keyword argument of the generated "
                               "optimizer's constructor", p.span, "rename it")

    def all_exprs(self):
        for s in self.program.body:
            if isinstance(s, ir.Let):
                yield s.value
            elif isinstance(s, ir.Level):
                yield from (e for e in (s.context, s.update, s.lr, s.retain) if e is not None)

    def check_ops(self, e: ir.Expr) -> None:
        for n in ir.walk(e):
            if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn in MODEL_ONLY_OPS:
                why = ("there is no outer level in an optimizer to learn it" if n.fn == "learned"
                       else "an optimizer sees parameter-shaped tensors, not token features")
                self.error(f"`{n.fn}` cannot be used in an optimizer: {why}", n.fn_span,
                           "use arithmetic and elementwise functions over `grad`, `param`, `step` and levels")

    # ---- one level ----
    def level(self, lv: ir.Level) -> OptLevel:
        out = OptLevel(lv.name, "params" if is_root(lv) else "elementwise", line=lv.span.line)
        self.state(lv, out)
        self.init(lv, out)
        self.context(lv, out)
        obj = lv.objective
        out.objective = obj.fn
        if obj.fn in ("huber", "lp"):
            arg = obj.args[0] if obj.args else obj.kwarg(B.OBJECTIVES[obj.fn].args[0].name)
            out.objective_arg = arg if arg is not None else ir.Num(B.OBJECTIVES[obj.fn].args[0].default)
        self.update(lv, out)
        out.lr, out.retain = lv.lr, lv.retain
        if out.kind == "mlp":
            for gate, word in ((lv.lr, "lr"), (lv.retain, "retain")):
                if gate is not None and self.kind_of(gate) != "py":
                    self.error(f"the `{word}` of the MLP memory `{lv.name}` must be one number (parameters, "
                               "arithmetic, `step`), not a parameter-shaped rate", gate.span)
        if lv.lr is not None and isinstance(lv.lr, ir.Ref) and lv.lr.kind is ir.RefKind.PARAM:
            self.lr_params.add(lv.lr.name)
        if lv.period.unit is not ir.PeriodUnit.STEPS:
            self.error(f"level `{lv.name}` never updates: an optimizer level learns every N `steps`",
                       lv.period.span, "write `period 1 steps` (the default)")
            return out
        count = lv.period.count
        value = fold(count, self.params, Reporter())
        out.period_value = int(value)
        out.period = None if isinstance(count, ir.Num) and count.value == 1 else count
        self.mark_whole(count)
        out.debias = lv.debias
        if lv.debias:
            self.check_debias(lv, out)
        out.parts = _describe(lv)
        return out

    def state(self, lv: ir.Level, out: OptLevel) -> None:
        s = lv.state
        if s.fn == "params":
            return
        if s.fn == "like":
            of = s.args[0] if s.args else s.kwarg("of")
            if isinstance(of, ir.Ref) and of.kind is ir.RefKind.LEVEL:
                other = self.ir_levels[of.name]
                if other.state.fn == "mlp":
                    self.error(f"`{lv.name}` cannot be shaped like the MLP memory `{of.name}` in an optimizer yet",
                               of.span, "shape optimizer levels `like(param)`")
                elif other.state.fn not in ("like", "params"):
                    pass  # reported for `other` itself
            return
        if s.fn == "mlp":
            sig = B.STATES["mlp"]
            bound = _bind(s, sig)
            dim = fold(bound["dim"], self.params, Reporter())
            if dim != 1:
                self.error(f"the MLP memory `{lv.name}` of an optimizer reads one entry at a time: it must be "
                           f"`mlp(1, ...)`, not `mlp({dim}, ...)`", bound["dim"].span,
                           "write `state mlp(1, hidden)`")
            out.kind = "mlp"
            out.mlp = {"hidden": bound.get("hidden"), "depth": bound.get("depth") or ir.Num(2),
                       "residual": bound.get("residual") or ir.Bool(True)}
            for k in ("hidden", "depth"):
                if bound.get(k) is not None:
                    self.mark_whole(bound[k])
            return
        self.error(f"an optimizer level's state is `like(param)`, an elementwise `mlp(1, hidden)` or `params`, "
                   f"not `{s.fn}`", s.span, "optimizer state is kept per parameter tensor: write `state like(param)`")

    def init(self, lv: ir.Level, out: OptLevel) -> None:
        init, seen = lv.init, {lv.name}
        while init.fn == "copy":  # the initial state of another level (E416 checked the shapes)
            src = init.args[0] if init.args else init.kwarg("of")
            if src.name in seen:
                return  # a copy cycle: reported by graph_checks (E311)
            seen.add(src.name)
            init = self.ir_levels[src.name].init
        if init.fn == "learned":
            self.error(f"level `{lv.name}` cannot have a `learned` initial state in an optimizer: nothing "
                       "trains it", lv.init.span, "use `init zeros` or `init identity`")
            return
        out.init = init.fn
        if out.kind == "params" and lv.init.fn != "zeros":
            self.error("the parameters' level starts from the parameters themselves; its `init` must be `zeros` "
                       "(the default)", lv.init.span, "remove the `init` line")
        if out.kind == "mlp" and out.init == "identity":
            res = fold(out.mlp["residual"], self.params, Reporter())
            if res is not True:
                self.error(f"`init identity` of the MLP memory `{lv.name}` needs `residual = true`",
                           lv.init.span, "an MLP starts as the identity through its residual path")

    def context(self, lv: ir.Level, out: OptLevel) -> None:
        ctx = lv.context
        if isinstance(ctx, ir.Tuple):
            out.context = "kv"
            k, v = ctx.items
            out.key = None if isinstance(k, ir.Num) and k.value == 1 else k
            out.value = v
            if out.kind == "mlp" and self.kind_of(k) != "tensor":
                self.error(f"the MLP memory `{lv.name}` needs a parameter-shaped key (e.g. `grad`), not a number",
                           k.span, "an MLP read with a constant key gives the same answer for every entry")
            return
        if ctx.fn == "loss" and not out.root:
            self.error(f"level `{lv.name}` of an optimizer learns from `grad(loss)`, not `loss`", ctx.span,
                       "write `context grad(loss)`: key 1, value the parameter's gradient")
            return
        if ctx.fn == "grad":
            of = ctx.args[0] if ctx.args else ctx.kwarg("of")
            if of.name == "loss":
                out.context = "loss"
                if out.kind == "mlp":
                    self.error(f"the MLP memory `{lv.name}` needs a parameter-shaped key: give it a context "
                               "`(key, value)` such as `(grad, grad)`", ctx.span)
                return
            if out.root:
                self.error("the parameters' level learns from the task loss: its context is `grad(loss)`", ctx.span)
                return
            out.context, out.grad_of = "grad", of.name
            if self.ir_levels[of.name].state.fn == "mlp" or out.kind == "mlp":
                self.error(f"`{lv.name}` cannot learn the gradients of `{of.name}` in an optimizer yet: MLP "
                           "memories take a context `(key, value)`", ctx.span)
            return
        out.context = "loss"  # `loss` on the root: the same as grad(loss)

    def update(self, lv: ir.Level, out: OptLevel) -> None:
        upd = lv.update
        if isinstance(upd, ir.Call) and upd.kind is ir.CallKind.FORM:
            out.rule = upd.fn
            refusal = RULES[upd.fn].optimizer_refusal
            if refusal is not None:
                self.error(refusal[0], upd.span, refusal[1])
                return
            bound = _bind(upd, B.UPDATE_RULES[upd.fn])
            for a in B.UPDATE_RULES[upd.fn].args:
                e = bound.get(a.name)
                out.rule_args[a.name] = e if e is not None else _const(a.default)
                if a.type is B.ArgType.POSINT:
                    self.mark_whole(out.rule_args[a.name])
            if out.kind == "mlp" and out.rule != DEFAULT:
                self.error(f"the MLP memory `{lv.name}` of an optimizer learns with `gd`, not `{out.rule}`",
                           upd.span, "write `update gd` (with `retain` for the decay of DMGD)")
            # a rule linear in g with the dot objective steps by lr * value * key: g need not be formed
            out.needs_grad = not (RULES[out.rule].linear_in_grad and out.objective == "dot" and out.kind != "mlp")
            return
        out.update = upd
        if out.kind == "mlp":
            self.error(f"the MLP memory `{lv.name}` of an optimizer learns with `gd`", upd.span,
                       "write `update gd` (with `retain` for the decay of DMGD)")
        deps = []
        for n in ir.walk(upd):
            name = n.name if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL else \
                n.fn if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ else None
            if name is not None and name not in deps:
                deps.append(name)
        out.update_deps = tuple(deps)
        for n in ir.walk(upd):
            if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn == "newton_schulz":
                steps = n.args[1] if len(n.args) > 1 else n.kwarg("steps")
                if steps is not None:
                    self.mark_whole(steps)

    def check_debias(self, lv: ir.Level, out: OptLevel) -> None:
        if out.root or out.kind == "mlp":
            self.error(f"`debias` is for elementwise memories such as Adam's moments, not for `{lv.name}`",
                       lv.field_span("debias"), "remove `debias`")
            return
        if lv.retain is not None and (self.kind_of(lv.retain) != "py" or self.uses_step(lv.retain)):
            self.error(f"`debias` divides by 1 - retain^t, so the `retain` of `{lv.name}` must be the same "
                       "number every step (parameters and arithmetic)", lv.retain.span)

    def mark_whole(self, e: ir.Expr | None) -> None:
        if isinstance(e, ir.Ref) and e.kind is ir.RefKind.PARAM:
            self.whole_params.add(e.name)

    # ---- across levels ----
    def check_levels(self, levels: dict[str, OptLevel]) -> None:
        for lv in levels.values():
            for dep in lv.update_deps:
                if levels[dep].root:
                    self.error(f"the update of `{lv.name}` cannot read the parameters' new values: they are "
                               "written last in a step", self.ir_levels[lv.name].update.span,
                               "read `param` in a `let` (the values before this step)")
        for e in self.all_exprs():
            for n in ir.walk(e):
                if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ and levels[n.fn].root:
                    self.error(f"the parameters' level `{n.fn}` cannot be read with a key", n.span,
                               "use `param` (or `param * k`)")

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

    def gradient_order(self, levels: dict[str, OptLevel]) -> list[str]:
        g = nx.DiGraph()
        names = list(levels)
        g.add_nodes_from(names)
        for lv in levels.values():
            if lv.context == "grad":
                g.add_edge(lv.grad_of, lv.name)
        try:
            return list(nx.lexicographical_topological_sort(g, key=names.index))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(g)]
            first = self.ir_levels[cycle[0]]
            self.error("levels learn each other's gradients in a cycle: " + " -> ".join([*cycle, cycle[0]]),
                       first.context.span, "one of them must learn from `grad(loss)` or a `(key, value)` pair")
            return names

    def used_lets(self, levels: dict[str, OptLevel]) -> list[ir.Let]:
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

    # ---- expression kinds ----
    def kind_of(self, e: ir.Expr) -> str:
        """"py" for a Python number (build-time numbers, hyper-parameters, `step`), else "tensor"."""
        for n in ir.walk(e):
            if isinstance(n, ir.Ref):
                if n.kind is ir.RefKind.LET:
                    if n.name not in self.let_kinds:
                        self.let_kinds[n.name] = "py"  # a cycle was reported by graph_checks
                        self.let_kinds[n.name] = self.kind_of(self.lets[n.name].value)
                    if self.let_kinds[n.name] == "tensor":
                        return "tensor"
                elif n.kind is ir.RefKind.LEVEL or (n.kind is ir.RefKind.INPUT and n.name != "step"):
                    return "tensor"
            elif isinstance(n, ir.Call) and (n.kind is ir.CallKind.READ or n.fn in TENSOR_OPS):
                return "tensor"
        return "py"

    def uses_step(self, e: ir.Expr, seen=None) -> bool:
        seen = set() if seen is None else seen
        for n in ir.walk(e):
            if isinstance(n, ir.Ref) and n.kind is ir.RefKind.INPUT and n.name == "step":
                return True
            if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET and n.name not in seen:
                seen.add(n.name)
                if self.uses_step(self.lets[n.name].value, seen):
                    return True
        return False


def _bind(call: ir.Call, sig: B.Builtin) -> dict:
    """Arguments of a checked call by name (None where defaulted)."""
    out = dict(zip((a.name for a in sig.args), call.args))
    out.update((k.name, k.value) for k in call.kwargs)
    return out


def _const(v) -> ir.Expr:
    return ir.Bool(v) if isinstance(v, bool) else ir.Num(v)


def _describe(lv: ir.Level) -> tuple[str, ...]:
    """A level's fields as spec text, for comments in the generated code."""
    from nlc.printer import print_expr

    parts = [f"state {print_expr(lv.state)}"]
    if lv.init.fn != "zeros":
        parts.append(f"init {print_expr(lv.init)}")
    parts.append(f"context {print_expr(lv.context)}")
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
