"""Optimizer checks: what the optimizer back end needs of an optimizer spec (run last, after shapes).

An optimizer's levels are kept per parameter tensor, so their states are
`like(param)`, an elementwise `mlp(1, ...)` or `params`; there is no outer level,
so nothing is `learned`; model-only builtins (`linear`, `conv`, `attention`, ...)
have no meaning over parameter-shaped tensors. These checks are what the optimizer
plan (`nlc.plan.optimizer`) relies on: it calls `check_optimizer` before it plans, and
running them here makes `nlc check` report every spec that `nlc compile` /
`nlc.build_optimizer` would reject.

The facts both need (`level_kind`, `update_reads`, `ExprKinds`: which expressions are
Python numbers and which tensors) live here, below the plan, so that no pass imports
a back end.

E511 something the optimizer back end cannot compile; E512 a parameter name that
cannot be a keyword argument of the generated constructor.
"""

from __future__ import annotations

import keyword
from typing import Mapping

import networkx as nx

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter
from nlc.names import FORBIDDEN_NAMES
from nlc.passes.params import fold
from nlc.rules import DEFAULT, RULES

MODEL_ONLY_OPS = ("linear", "conv", "attention", "rmsnorm", "swiglu", "concat", "slice", "learned")
TENSOR_OPS = ("newton_schulz", "mean", "l2norm")
# the generated constructor's own names: a hyper-parameter (a keyword argument) must not shadow them
CONSTRUCTOR_NAMES = frozenset({"self", "params", "unknown", "defaults", "rt", "torch", "math", "F", "super"})


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter) -> ir.Program:
    """Check an optimizer program with parameter values `env`; return it unchanged."""
    if not program.is_model:
        check_optimizer(program, env, rep)
    return program


def check_optimizer(program: ir.Program, params: Mapping[str, object], rep: Reporter) -> None:
    """Report (E511, E512) into `rep` what keeps the optimizer back end from compiling `program`.

    The checks run in stages (names and builtins; each level; across levels; the order of the
    gradients); a stage with errors ends the checks, as later stages assume the earlier ones held.
    """
    own = Reporter()
    _Checks(program, dict(params), own).run()
    rep.diagnostics.extend(own.diagnostics)


def level_kind(lv: ir.Level) -> str:
    """"params" (the root: its state is the parameter), "mlp" (an elementwise MLP memory) or "elementwise"."""
    if ir.is_root(lv):
        return "params"
    return "mlp" if lv.state.fn == "mlp" else "elementwise"


def bind(call: ir.Call, sig: B.Builtin) -> dict:
    """Arguments of a checked call by name (None where defaulted)."""
    out = dict(zip((a.name for a in sig.args), call.args))
    out.update((k.name, k.value) for k in call.kwargs)
    return out


def update_reads(upd: ir.Expr) -> tuple[str, ...]:
    """The levels whose new state an update expression reads (`update m / (sqrt(v) + eps)`: m, v), in order."""
    deps = []
    for n in ir.walk(upd):
        name = n.name if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL else \
            n.fn if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ else None
        if name is not None and name not in deps:
            deps.append(name)
    return tuple(deps)


class ExprKinds:
    """Which expressions of an optimizer are Python numbers ("py": build-time numbers, hyper-parameters,
    `step`) and which are parameter-shaped tensors ("tensor"); `let_kinds` caches the lets'."""

    def __init__(self, program: ir.Program):
        self.lets = {s.name: s for s in program.body if isinstance(s, ir.Let)}
        self.let_kinds: dict[str, str] = {}

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


def all_exprs(program: ir.Program):
    """The expressions of an optimizer's lets and of its levels' context, update, lr and retain."""
    for s in program.body:
        if isinstance(s, ir.Let):
            yield s.value
        elif isinstance(s, ir.Level):
            yield from (e for e in (s.context, s.update, s.lr, s.retain) if e is not None)


class _Checks:
    def __init__(self, program: ir.Program, params: dict, rep: Reporter):
        self.program = program
        self.params = params
        self.rep = rep
        self.kinds = ExprKinds(program)
        self.levels = {s.name: s for s in program.body if isinstance(s, ir.Level)}

    def error(self, message: str, span, hint: str | None = None) -> None:
        self.rep.error("E511", message, span, hint)

    def run(self) -> None:
        stages = (self.check_program, self.check_each_level, self.check_across_levels, self.check_gradient_order)
        for stage in stages:
            stage()
            if self.rep.errors:
                return

    # ---- the whole program ----
    def check_program(self) -> None:
        for p in self.program.params:
            if (keyword.iskeyword(p.name) or p.name in CONSTRUCTOR_NAMES or p.name in FORBIDDEN_NAMES
                    or p.name.startswith("__")):
                self.rep.error("E512", f"parameter `{p.name}` cannot be a keyword argument of the generated "
                               "optimizer's constructor", p.span, "rename it")
        for e in all_exprs(self.program):
            for n in ir.walk(e):
                if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn in MODEL_ONLY_OPS:
                    why = ("there is no outer level in an optimizer to learn it" if n.fn == "learned"
                           else "an optimizer sees parameter-shaped tensors, not token features")
                    self.error(f"`{n.fn}` cannot be used in an optimizer: {why}", n.fn_span,
                               "use arithmetic and elementwise functions over `grad`, `param`, `step` and levels")

    # ---- one level ----
    def check_each_level(self) -> None:
        for lv in self.levels.values():
            self.check_level(lv)

    def check_level(self, lv: ir.Level) -> None:
        kind = level_kind(lv)
        self.check_state(lv)
        self.check_init(lv, kind)
        self.check_context(lv, kind)
        self.check_update(lv, kind)
        if kind == "mlp":
            for gate, word in ((lv.lr, "lr"), (lv.retain, "retain")):
                if gate is not None and self.kinds.kind_of(gate) != "py":
                    self.error(f"the `{word}` of the MLP memory `{lv.name}` must be one number (parameters, "
                               "arithmetic, `step`), not a parameter-shaped rate", gate.span)
        if lv.period.unit is not ir.PeriodUnit.STEPS:
            self.error(f"level `{lv.name}` never updates: an optimizer level learns every N `steps`",
                       lv.period.span, "write `period 1 steps` (the default)")
            return
        if lv.debias:
            self.check_debias(lv, kind)

    def check_state(self, lv: ir.Level) -> None:
        s = lv.state
        if s.fn == "params":
            return
        if s.fn == "like":
            of = s.args[0] if s.args else s.kwarg("of")
            if isinstance(of, ir.Ref) and of.kind is ir.RefKind.LEVEL and self.levels[of.name].state.fn == "mlp":
                self.error(f"`{lv.name}` cannot be shaped like the MLP memory `{of.name}` in an optimizer yet",
                           of.span, "shape optimizer levels `like(param)`")
            return  # a level shaped like a level of another kind is reported for that level itself
        if s.fn == "mlp":
            bound = bind(s, B.STATES["mlp"])
            dim = fold(bound["dim"], self.params, Reporter())
            if dim != 1:
                self.error(f"the MLP memory `{lv.name}` of an optimizer reads one entry at a time: it must be "
                           f"`mlp(1, ...)`, not `mlp({dim}, ...)`", bound["dim"].span,
                           "write `state mlp(1, hidden)`")
            return
        self.error(f"an optimizer level's state is `like(param)`, an elementwise `mlp(1, hidden)` or `params`, "
                   f"not `{s.fn}`", s.span, "optimizer state is kept per parameter tensor: write `state like(param)`")

    def check_init(self, lv: ir.Level, kind: str) -> None:
        init = initial(lv, self.levels)
        if init is None:
            return  # a copy cycle: reported by graph_checks (E311)
        if init.fn == "learned":
            self.error(f"level `{lv.name}` cannot have a `learned` initial state in an optimizer: nothing "
                       "trains it", lv.init.span, "use `init zeros` or `init identity`")
            return
        if kind == "params" and lv.init.fn != "zeros":
            self.error("the parameters' level starts from the parameters themselves; its `init` must be `zeros` "
                       "(the default)", lv.init.span, "remove the `init` line")
        if kind == "mlp" and init.fn == "identity":
            residual = bind(lv.state, B.STATES["mlp"]).get("residual") or ir.Bool(True)
            if fold(residual, self.params, Reporter()) is not True:
                self.error(f"`init identity` of the MLP memory `{lv.name}` needs `residual = true`",
                           lv.init.span, "an MLP starts as the identity through its residual path")

    def check_context(self, lv: ir.Level, kind: str) -> None:
        ctx = lv.context
        if isinstance(ctx, ir.Tuple):
            k = ctx.items[0]
            if kind == "mlp" and self.kinds.kind_of(k) != "tensor":
                self.error(f"the MLP memory `{lv.name}` needs a parameter-shaped key (e.g. `grad`), not a number",
                           k.span, "an MLP read with a constant key gives the same answer for every entry")
            return
        if ctx.fn == "loss" and kind != "params":
            self.error(f"level `{lv.name}` of an optimizer learns from `grad(loss)`, not `loss`", ctx.span,
                       "write `context grad(loss)`: key 1, value the parameter's gradient")
            return
        if ctx.fn != "grad":
            return
        of = ctx.args[0] if ctx.args else ctx.kwarg("of")
        if of.name == "loss":
            if kind == "mlp":
                self.error(f"the MLP memory `{lv.name}` needs a parameter-shaped key: give it a context "
                           "`(key, value)` such as `(grad, grad)`", ctx.span)
            return
        if kind == "params":
            self.error("the parameters' level learns from the task loss: its context is `grad(loss)`", ctx.span)
            return
        if self.levels[of.name].state.fn == "mlp" or kind == "mlp":
            self.error(f"`{lv.name}` cannot learn the gradients of `{of.name}` in an optimizer yet: MLP "
                       "memories take a context `(key, value)`", ctx.span)

    def check_update(self, lv: ir.Level, kind: str) -> None:
        upd = lv.update
        if isinstance(upd, ir.Call) and upd.kind is ir.CallKind.FORM:
            refusal = RULES[upd.fn].optimizer_refusal
            if refusal is not None:
                self.error(refusal[0], upd.span, refusal[1])
                return
            if kind == "mlp" and upd.fn != DEFAULT:
                self.error(f"the MLP memory `{lv.name}` of an optimizer learns with `gd`, not `{upd.fn}`",
                           upd.span, "write `update gd` (with `retain` for the decay of DMGD)")
            return
        if kind == "mlp":
            self.error(f"the MLP memory `{lv.name}` of an optimizer learns with `gd`", upd.span,
                       "write `update gd` (with `retain` for the decay of DMGD)")

    def check_debias(self, lv: ir.Level, kind: str) -> None:
        if kind in ("params", "mlp"):
            self.error(f"`debias` is for elementwise memories such as Adam's moments, not for `{lv.name}`",
                       lv.field_span("debias"), "remove `debias`")
            return
        if lv.retain is not None and (self.kinds.kind_of(lv.retain) != "py" or self.kinds.uses_step(lv.retain)):
            self.error(f"`debias` divides by 1 - retain^t, so the `retain` of `{lv.name}` must be the same "
                       "number every step (parameters and arithmetic)", lv.retain.span)

    # ---- across levels ----
    def check_across_levels(self) -> None:
        for lv in self.levels.values():
            if _is_form(lv.update):
                continue
            for dep in update_reads(lv.update):
                if ir.is_root(self.levels[dep]):
                    self.error(f"the update of `{lv.name}` cannot read the parameters' new values: they are "
                               "written last in a step", lv.update.span,
                               "read `param` in a `let` (the values before this step)")
        for e in all_exprs(self.program):
            for n in ir.walk(e):
                if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ and ir.is_root(self.levels[n.fn]):
                    self.error(f"the parameters' level `{n.fn}` cannot be read with a key", n.span,
                               "use `param` (or `param * k`)")

    def check_gradient_order(self) -> None:
        try:
            gradient_order(self.levels)
        except nx.NetworkXUnfeasible as e:
            cycle = e.args[0]
            first = self.levels[cycle[0]]
            self.error("levels learn each other's gradients in a cycle: " + " -> ".join([*cycle, cycle[0]]),
                       first.context.span, "one of them must learn from `grad(loss)` or a `(key, value)` pair")


def _is_form(upd: ir.Expr) -> bool:
    return isinstance(upd, ir.Call) and upd.kind is ir.CallKind.FORM


def grad_of(lv: ir.Level) -> str | None:
    """The level whose objective's gradient `lv` learns (context `grad(LEVEL)`), or None."""
    ctx = lv.context
    if isinstance(ctx, ir.Tuple) or ctx.fn != "grad":
        return None
    of = ctx.args[0] if ctx.args else ctx.kwarg("of")
    return None if of.name == "loss" else of.name


def gradient_order(levels: Mapping[str, ir.Level]) -> list[str]:
    """The order in which the levels' objective gradients are taken (a `grad(L)` context after L).

    Raises networkx.NetworkXUnfeasible with the cycle (a list of level names) as its argument."""
    g = nx.DiGraph()
    names = list(levels)
    g.add_nodes_from(names)
    for lv in levels.values():
        of = grad_of(lv)
        if of is not None:
            g.add_edge(of, lv.name)
    try:
        return list(nx.lexicographical_topological_sort(g, key=names.index))
    except nx.NetworkXUnfeasible:
        raise nx.NetworkXUnfeasible([u for u, _ in nx.find_cycle(g)]) from None


def initial(lv: ir.Level, levels: Mapping[str, ir.Level]) -> ir.Call | None:
    """A level's `init`, following `copy(...)` to the copied level's; None on a copy cycle (E311)."""
    init, seen = lv.init, {lv.name}
    while init.fn == "copy":  # the initial state of another level (E416 checked the shapes)
        src = init.args[0] if init.args else init.kwarg("of")
        if src.name in seen:
            return None
        seen.add(src.name)
        init = levels[src.name].init
    return init
