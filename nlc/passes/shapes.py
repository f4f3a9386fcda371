"""Types and shapes: every expression gets a type, every call matches its signature.

Types: `Const` (a number known at build time: parameters and arithmetic on them),
`Tensor(dim)` (a per-token feature vector of `dim` features; in an optimizer
`dim="P"` is "shaped like the parameter"), `Scalar` (a runtime scalar such as a
`learned(...)` gate). A level's state has an input and an output width; reading
it (`mem(q)`) checks q's width and gives the output width.

E402 a memory used as a value; E403 a context that is not a (key, value) pair;
E404 width mismatch between a level's state and its keys, values or reads;
E405 a gate that is not a scalar; E406 a block output that is not `dim` wide;
E407 widths that do not broadcast; E409 `debias` without `retain`;
E410 wrong number of arguments; E411 unknown keyword argument; E413 wrong
argument type; E414 heads that do not divide the width; E415 builtin used in
the wrong kind of program; E416 `copy` between different shapes; E417 identity
init of a non-square memory; E418 an update expression in a model; E423 `heads`
on a level that cannot be split (not an in-context matrix memory learning from
(k, v) pairs) or tied to another level (`update`, `like`, `copy`, `grad`) across
a split; E424 `read current` on a level whose reads cannot see the chunk's updates
(docs/design.md §1.2: an in-context `linear` or `mlp` memory learning from (k, v) pairs with
`gd` or `momentum` at its block's fastest period, tied to no other level).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter, did_you_mean
from nlc.passes.facts import ProgramFacts, StateShape
from nlc.passes.params import arith, fold_unary
from nlc.objectives import OBJECTIVES
from nlc.rules import RULES


@dataclass(frozen=True)
class Const:
    value: int | float | bool


@dataclass(frozen=True)
class Tensor:
    dim: int | str  # "P": shaped like the optimised parameter

    def __str__(self) -> str:
        return "parameter-shaped" if self.dim == "P" else f"{self.dim} wide"


@dataclass(frozen=True)
class Scalar:
    pass


Type = Const | Tensor | Scalar


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter, facts: ProgramFacts) -> ir.Program:
    """Type-check the program with parameter values `env`; return it unchanged.

    Records into `facts` every level's state shape and the value of every expression it types as a constant.
    """
    is_model = program.is_model
    if is_model:
        for r in _repeats(program.body):
            _Typer(rep, env, (), is_model, facts).posint(r.count, "the repeat count")
    for body, block in ir.scopes(program):
        typer = _Typer(rep, env, body, is_model, facts)
        typer.check_scope(block)
        facts.scope(block).shapes.update((name, shape) for name, shape in typer.shapes.items() if shape is not None)
    return program


def _dependency_order(lets: dict[str, ir.Let], levels: dict[str, ir.Level]) -> list[tuple[str, str]]:
    """Return ("let" | "level", name) for every let and level, each after the ones its type needs.

    Iterative (an explicit stack), so arbitrarily long chains are fine; cycles were rejected by
    graph_checks, and any left are cut where they close.
    """

    def deps(node: tuple[str, str]) -> list[tuple[str, str]]:
        kind, name = node
        out = []  # what let_type (a let's value) or shape (a level's state) looks up
        for n in ir.walk(lets[name].value if kind == "let" else levels[name].state):
            if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET and n.name in lets:
                out.append(("let", n.name))
            elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL and n.name in levels:
                out.append(("level", n.name))
            elif isinstance(n, ir.Call) and n.kind is ir.CallKind.READ and n.fn in levels:
                out.append(("level", n.fn))
        return out

    order: list[tuple[str, str]] = []
    done: set[tuple[str, str]] = set()
    for root in [*(("let", n) for n in lets), *(("level", n) for n in levels)]:
        if root in done:
            continue
        done.add(root)
        stack = [(root, iter(deps(root)))]
        while stack:
            node, it = stack[-1]
            nxt = next((d for d in it if d not in done), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                done.add(nxt)
                stack.append((nxt, iter(deps(nxt))))
    return order


def _repeats(body):
    for s in body:
        if isinstance(s, ir.Repeat):
            yield s
            yield from _repeats(s.body)


class _Typer:
    def __init__(self, rep: Reporter, env: Mapping[str, object], body, is_model: bool, facts: ProgramFacts):
        self.rep = rep
        self.env = env
        self.facts = facts
        self.is_model = is_model
        self.lets = {s.name: s for s in body if isinstance(s, ir.Let)}
        self.levels = {s.name: s for s in body if isinstance(s, ir.Level)}
        self.body = body
        self._let_types: dict[str, Type | None] = {}
        self.shapes: dict[str, StateShape | None] = {}

    @property
    def dim(self) -> int:
        return int(self.env.get("dim", 0))

    # ---- scope ----
    def check_scope(self, block: ir.Block | None) -> None:
        self.block = block
        # Type `let`s and state shapes dependencies first, so that the recursive let_type/shape
        # calls below hit the cache: a chain of forward references 1000 long must not overflow
        # the Python stack.
        for kind, name in _dependency_order(self.lets, self.levels):
            (self.let_type if kind == "let" else self.shape)(name)
        for s in self.body:
            if isinstance(s, ir.Let):
                self.let_type(s.name)
            elif isinstance(s, ir.Level):
                self.check_level(s)
            elif isinstance(s, ir.Out):
                t = self.type_of(s.value)
                if t is not None and not (isinstance(t, Tensor) and t.dim == self.dim):
                    self.rep.error("E406", f"block `{block.name}` must output {self.dim} features, "
                                   f"but its `out` is {_describe(t)}", s.value.span,
                                   f"project it: `out = linear(..., dim)`")

    def let_type(self, name: str) -> Type | None:
        if name not in self._let_types:
            self._let_types[name] = None  # a cycle was reported by graph_checks; stop here
            self._let_types[name] = self.type_of(self.lets[name].value)
        return self._let_types[name]

    # ---- levels ----
    def shape(self, name: str) -> StateShape | None:
        if name not in self.shapes:
            self.shapes[name] = None
            shape = self.state_shape(self.levels[name])
            self.shapes[name] = shape if shape is None else self.split_heads(self.levels[name], shape)
        return self.shapes[name]

    def split_heads(self, lv: ir.Level, shape: StateShape) -> StateShape | None:
        """The shape with lv's `heads` (docs/design.md §1.7): an in-context matrix memory that learns
        from (k, v) pairs, whose widths the heads divide (E423, E414)."""
        if lv.heads is None:
            return shape
        h = self.posint(lv.heads, "the number of heads")
        if h is None:
            return None
        span = lv.field_span("heads")
        why = None
        if not self.is_model:
            why = "an optimizer's levels are shaped like the parameters"
        elif lv.period.unit is not ir.PeriodUnit.TOKENS:
            why = f"it learns {'never' if lv.period.unit is ir.PeriodUnit.NEVER else 'between optimizer steps'}"
        elif not isinstance(lv.context, ir.Tuple):
            why = "it does not learn from (key, value) pairs"
        elif shape.kind not in ("linear", "mlp"):
            why = f"a {shape.kind} memory {'is elementwise' if shape.kind == 'vector' else 'is shaped like another'}"
        if why is not None:
            self.rep.error("E423", f"level `{lv.name}` cannot be split into heads: {why}", span,
                           "`heads` splits an in-context `linear` or `mlp` memory with `context (k, v)` and "
                           "`period N tokens`; remove it here")
            return None
        for width, what in ((shape.d_in, "input"), (shape.hidden, "hidden"), (shape.d_out, "output")):
            if width and int(width) % h:
                self.rep.error("E414", f"{h} heads do not divide the {width} {what} features of `{lv.name}`",
                               span, f"pick a number of heads that divides {width}")
                return None
        return replace(shape, heads=h)

    def heads_of(self, name: str) -> int:
        """The heads of level `name` as written (1 without `heads`, or when they do not check)."""
        e = self.levels[name].heads
        value = None if e is None else self.facts.constant(e)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 1

    def tied_across_heads(self, lv: ir.Level, other: str, how: str, span) -> bool:
        """Report E423 if lv and `other` are tied (`how`) while one of them is split into heads."""
        split = [n for n in (lv.name, other) if self.levels.get(n) is not None and self.heads_of(n) > 1]
        if not split:
            return False
        self.rep.error("E423", f"`{lv.name}` {how} `{other}`, but `{split[0]}` is split into heads", span,
                       "levels tied by `update`, `like`, `copy` or `grad` are not split into heads yet; remove "
                       "`heads`, or give each level its own state")
        return True

    def state_shape(self, lv: ir.Level) -> StateShape | None:
        s = lv.state
        assert isinstance(s, ir.Call)
        bound = self.bind(s, B.STATES[s.fn])
        if bound is None:
            return None
        if s.fn == "linear":
            a, b = self.posint(bound["d_in"], "`d_in`", s.fn), self.posint(bound["d_out"], "`d_out`", s.fn)
            return None if a is None or b is None else StateShape("linear", a, b)
        if s.fn == "mlp":
            d = self.posint(bound["dim"], "`dim`", s.fn)
            mlp = B.STATES["mlp"]
            given = {k: self.posint(bound[k], f"`{k}`", s.fn) for k in ("hidden", "depth") if bound.get(k) is not None}
            residual = mlp.arg("residual").default
            if bound.get("residual") is not None:
                t = self.expect(bound["residual"], B.ArgType.BOOL, "residual", s.fn)
                residual = t.value if isinstance(t, Const) else residual
            if d is None:
                return None
            hidden, depth = given.get("hidden", 4 * d), given.get("depth", mlp.arg("depth").default)
            if hidden is None or depth is None:  # not whole positive numbers (reported above)
                hidden, depth = 0, 1
            return StateShape("mlp", d, d, hidden if depth > 1 else 0, depth, bool(residual))
        if s.fn == "vector":
            n = self.posint(bound["n"], "`n`", s.fn)
            return None if n is None else StateShape("vector", n, n)
        if s.fn == "params":
            return StateShape("params", "P", "P")
        of = bound["of"]  # like(...)
        if isinstance(of, ir.Ref) and of.kind is ir.RefKind.LEVEL:
            inner = self.shape(of.name)
            if inner is not None and self.tied_across_heads(lv, of.name, "is shaped like", of.span):
                return None
            return None if inner is None else StateShape("like", inner.d_in, inner.d_out, inner.hidden, inner.depth,
                                                          inner.residual, of.name)
        if isinstance(of, ir.Ref) and of.name == "param" and not self.is_model:
            return StateShape("like", "P", "P")
        self.rep.error("E413", "`like` takes a level (or `param` in an optimizer)", of.span,
                       "for example `state like(memory)`")
        return None

    def check_level(self, lv: ir.Level) -> None:
        shape = self.shape(lv.name)
        self.check_init(lv, shape)
        self.check_context(lv, shape)
        for where, table in (("objective", B.OBJECTIVES),):
            form = getattr(lv, where)
            if isinstance(form, ir.Call) and form.fn in table:
                self.check_form_args(form, table[form.fn])
        self.check_update(lv, shape)
        heads = 1 if shape is None else shape.heads
        for gate, word in ((lv.lr, "learning rate `lr`"), (lv.retain, "retention `retain`")):
            if gate is not None:
                self.gate(gate, word, heads)
        if ir.reads_current(lv) and lv.period.unit is not ir.PeriodUnit.NEVER:  # frozen: E314
            self.check_current_read(lv, shape)
        if lv.debias and lv.retain is None and lv.period.unit is not ir.PeriodUnit.NEVER:  # frozen: E314
            self.rep.error("E409", f"level `{lv.name}` is `debias` but has no `retain`", lv.field_span("debias"),
                           "debiasing divides by 1 - retain^t: add `retain beta`")
        elif lv.debias and self.is_model and lv.period.unit is ir.PeriodUnit.TOKENS:
            # (steps levels: E308; frozen levels never update) no model back end debiases a memory
            self.rep.error("E309", f"level `{lv.name}` is `debias`, which only optimizer levels honour",
                           lv.field_span("debias"), "remove `debias` (a memory's state is read as it is)")

    def check_current_read(self, lv: ir.Level, shape: StateShape | None) -> None:
        """`read current` (E424): the closed form of nlc.runtime.inside reads W_t, which needs an in-context
        matrix memory learning from (k, v) pairs with gd or momentum, tied to no other level, at the
        block's fastest in-context period (the chunk: a slower level's earlier chunks would be pending)."""
        periods = self.facts.scope(self.block).periods
        mine = periods.get(lv.name)
        fastest = min((f.count for n, f in periods.items() if f.unit is ir.PeriodUnit.TOKENS
                       and not ir.learns_loss(self.levels[n])), default=None)
        rule = lv.update.fn if isinstance(lv.update, ir.Call) and lv.update.kind is ir.CallKind.FORM else None
        tied = next((o.name for o in self.levels.values() if lv.name in (ir.updating_level(o), ir.gradients_of(o))),
                    None)
        objective = lv.objective.fn if isinstance(lv.objective, ir.Call) else None
        why = None
        if not self.is_model or mine is None or mine.unit is not ir.PeriodUnit.TOKENS or ir.learns_loss(lv):
            why = "only an in-context level of a model reads inside a chunk"
        elif not isinstance(lv.context, ir.Tuple):
            why = "it does not learn from (key, value) pairs"
        elif shape is not None and shape.kind not in ("linear", "mlp"):
            why = f"a {shape.kind} memory is not read that way yet (linear and mlp memories are)"
        elif rule not in B.CURRENT_READ_RULES:
            why = (f"its update is {'`' + rule + '`' if rule else 'another level'}; the reads of the chunk's own "
                   "updates are computed for " + " and ".join(f"`{r}`" for r in B.CURRENT_READ_RULES))
        elif tied is not None:
            why = f"`{tied}` is tied to it (`update {lv.name}` or `context grad({lv.name})`)"
        elif fastest is not None and mine.count != fastest:
            why = (f"it learns every {mine.count} tokens, slower than its block's fastest level ({fastest}): "
                   "its reads would need the chunks of its period before this one")
        elif shape is not None and shape.kind == "linear" and objective in OBJECTIVES \
                and OBJECTIVES[objective].minus_value_gradient:
            # every gradient is -k v^T whatever the state and every read sees every update, so its period
            # would change nothing at all: a dead field in every spec (check_fields_live found it)
            why = (f"a linear memory's `{objective}` gradients do not depend on its state, so with reads that "
                   "see every update its period would change nothing")
        if why is not None:
            self.rep.error("E424", f"level `{lv.name}` cannot `read current`: {why}", lv.field_span("read"),
                           "remove `read current` (its reads then see the chunk-start state, NL eq. 90)")

    def check_init(self, lv: ir.Level, shape: StateShape | None) -> None:
        init = lv.init
        if not isinstance(init, ir.Call) or init.fn not in B.INITS:
            return
        bound = self.check_form_args(init, B.INITS[init.fn])
        if bound is None or shape is None:
            return
        if init.fn == "identity" and shape.kind == "linear" and shape.d_in != shape.d_out:
            self.rep.error("E417", f"`identity` needs a square memory; `{lv.name}` maps {shape.d_in} to "
                           f"{shape.d_out} features", init.span, "use `init zeros` or `init learned`")
        if init.fn in B.COPY_INITS:
            of = bound["of"]
            if isinstance(of, ir.Ref) and of.kind is ir.RefKind.LEVEL:
                other = self.shape(of.name)
                how = "starts as a copy of" if init.fn == "copy" else "restarts from"
                if self.tied_across_heads(lv, of.name, how, of.span):
                    return
                if other is not None and (other.d_in, other.d_out, other.kind, other.layers) != \
                        (shape.d_in, shape.d_out, shape.kind, shape.layers):
                    self.rep.error("E416", f"`{lv.name}` cannot {init.fn} `{of.name}`: their states differ "
                                   f"({shape.describe()} vs {other.describe()})", of.span,
                                   f"give `{lv.name}` the state of `{of.name}`, or use `init zeros` or `init learned`")
            else:
                self.rep.error("E413", f"`{init.fn}` takes the name of a level", of.span,
                               f"for example `init {init.fn}(memory)`")

    def check_context(self, lv: ir.Level, shape: StateShape | None) -> None:
        ctx = lv.context
        if ctx is None and lv.period.unit is not ir.PeriodUnit.NEVER and not ir.moved_by_a_level(lv, self.levels):
            # (nlc.lower let it go: an `update L` level needs none, unless L learns its gradients)
            self.rep.error("E115", f"level `{lv.name}` has no `context`, but `{ir.updating_level(lv)}` learns from "
                           f"its gradients", lv.name_span, f"add the pairs `{lv.name}` learns from: `context (k, v)`")
            return
        if isinstance(ctx, ir.Tuple):
            if len(ctx.items) != 2:
                self.rep.error("E403", f"a context is a (key, value) pair, not {len(ctx.items)} values",
                               ctx.span, "write `context (k, v)`")
                return
            k, v = (self.type_of(i) for i in ctx.items)
            if shape is None:
                return
            for t, e, want, what in ((k, ctx.items[0], shape.d_in, "keys"), (v, ctx.items[1], shape.d_out, "values")):
                if t is None:
                    continue
                if isinstance(t, (Const, Scalar)) and shape.kind in ("vector", "like", "params"):
                    continue  # a constant key (e.g. 1) for an elementwise memory
                if not isinstance(t, Tensor) or not _fits(t.dim, want):
                    self.rep.error("E404", f"level `{lv.name}` takes {what} {_width(want)}, but this is "
                                   f"{_describe(t)}", e.span, _fix_width(want))
            return
        if isinstance(ctx, ir.Call) and ctx.fn in B.CONTEXTS:
            bound = self.check_form_args(ctx, B.CONTEXTS[ctx.fn])
            if ctx.fn == "grad" and bound is not None:
                of = bound["of"]
                if not (isinstance(of, ir.Ref) and (of.kind is ir.RefKind.LEVEL or of.name == "loss")):
                    self.rep.error("E413", "`grad` takes a level or `loss`", of.span, "for example `grad(loss)`")
                elif of.kind is ir.RefKind.LEVEL:
                    self.tied_across_heads(lv, of.name, "learns from the gradients of", of.span)

    def check_update(self, lv: ir.Level, shape: StateShape | None) -> None:
        upd = lv.update
        if isinstance(upd, ir.Call) and upd.kind is ir.CallKind.FORM:
            self.check_form_args(upd, B.UPDATE_RULES[upd.fn], heads=1 if shape is None else shape.heads)
            matrix_only = RULES[upd.fn].matrix_only
            if matrix_only and self.is_model and shape is not None and shape.kind == "vector":
                # e.g. Newton-Schulz orthogonalises matrices: on a vector it is the identity, `steps` would be dead
                what, hint = matrix_only
                self.rep.error("E419", f"`{upd.fn}` {what}, but `{lv.name}` is a vector memory", upd.fn_span, hint)
            return
        if isinstance(upd, ir.Ref) and upd.kind is ir.RefKind.LEVEL:
            other = self.shape(upd.name)
            if self.tied_across_heads(lv, upd.name, "is updated by", upd.span):
                return
            if other is not None and shape is not None and not _fits(other.d_out, shape.d_out):
                self.rep.error("E404", f"level `{upd.name}` cannot update `{lv.name}`: its state is "
                               f"{_width(other.d_out)}, `{lv.name}`'s is {_width(shape.d_out)}", upd.span,
                               f"shape `{upd.name}` like the level it updates: `state like({lv.name})`")
            return
        if self.is_model:
            # the model back ends apply a rule (`gd`, `momentum`, ...) or another level's state
            # (`update LEVEL`); an expression over levels is an optimizer's update only
            self.rep.error("E418", f"level `{lv.name}` is updated by an expression; in a model a level's update "
                           "is a rule or the name of another level", upd.span,
                           "give the expression its own level and write `update NAME`, or use a rule such as "
                           "`update adam` (update expressions are for optimizer specs)")
            return
        t = self.type_of(upd)
        if t is not None and shape is not None and isinstance(t, Tensor) and not _fits(t.dim, shape.d_out):
            self.rep.error("E404", f"this update is {_describe(t)} but `{lv.name}`'s state is "
                           f"{_width(shape.d_out)}", upd.span)

    # ---- signatures ----
    def check_form_args(self, call: ir.Call, sig: B.Builtin, heads: int = 1) -> dict | None:
        bound = self.bind(call, sig)
        if bound is None:
            return None
        for a in sig.args:
            e = bound.get(a.name)
            if e is not None and a.type not in (B.ArgType.LEVEL, B.ArgType.ANY):
                self.expect(e, a.type, a.name, call.fn, heads)
        return bound

    def bind(self, call: ir.Call, sig: B.Builtin) -> dict[str, ir.Expr] | None:
        """Match a call's arguments to a signature: name -> expression (None where defaulted)."""
        if sig.scope != "any" and (sig.scope == "model") != self.is_model:
            where = "models" if sig.scope == "model" else "optimizers"
            self.rep.error("E415", f"`{call.fn}` is only available in {where}", call.fn_span)
            return None
        if sig.variadic:
            if not call.args or call.kwargs:
                self.rep.error("E410", f"`{call.fn}` takes one or more values and no keywords", call.span)
                return None
            return {str(i): a for i, a in enumerate(call.args)}
        params = [a.name for a in sig.args]
        if len(call.args) > len(params):
            extra = call.args[len(params)]
            self.rep.error("E410", f"`{call.fn}` takes at most {len(params)} argument"
                           f"{'s' if len(params) != 1 else ''}, got {len(call.args)}", extra.span,
                           f"its arguments are {_sig(sig)}")
            return None
        bound: dict[str, ir.Expr | None] = dict(zip(params, call.args))
        for k in call.kwargs:
            if k.name not in params:
                hint = did_you_mean(k.name, params) or f"its arguments are {_sig(sig)}"
                self.rep.error("E411", f"`{call.fn}` has no argument `{k.name}`", k.name_span, hint)
                return None
            if k.name in bound:
                self.rep.error("E412", f"argument `{k.name}` of `{call.fn}` is given twice", k.name_span)
                return None
            bound[k.name] = k.value
        for a in sig.args:
            if a.name not in bound:
                if a.required:
                    self.rep.error("E410", f"`{call.fn}` is missing its argument `{a.name}`", call.span,
                                   f"its arguments are {_sig(sig)}")
                    return None
                bound[a.name] = None
        return bound

    def expect(self, e: ir.Expr, want: B.ArgType, name: str, fn: str | None = None, heads: int = 1) -> Type | None:
        if want is B.ArgType.GATE:
            return self.gate(e, f"`{name}`" + (f" of `{fn}`" if fn else ""), heads)
        t = self.type_of(e)
        if t is None:
            return None
        ok = {
            B.ArgType.TENSOR: isinstance(t, Tensor),
            B.ArgType.POSINT: isinstance(t, Const) and _is_int(t.value) and t.value >= 1,
            B.ArgType.NONNEG: isinstance(t, Const) and _is_int(t.value) and t.value >= 0,
            B.ArgType.NUMBER: isinstance(t, Const) and not isinstance(t.value, bool),
            B.ArgType.BOOL: isinstance(t, Const) and isinstance(t.value, bool),
        }.get(want, True)
        if not ok:
            what = name if " " in name else f"argument `{name}` of `{fn}`" if fn else f"`{name}`"
            hint = None
            if want in (B.ArgType.POSINT, B.ArgType.NONNEG) and isinstance(t, Const) and not _is_int(t.value) \
                    and not isinstance(t.value, bool):
                hint = "widths and counts are whole numbers: pick values that divide evenly"
            self.rep.error("E413", f"{what} must be {want.value}, not {_describe(t)}", e.span, hint)
            return None
        return t

    def posint(self, e: ir.Expr, what: str, fn: str | None = None) -> int | None:
        t = self.expect(e, B.ArgType.POSINT, what.strip("`"), fn)
        return int(t.value) if isinstance(t, Const) else None

    def gate(self, e: ir.Expr, what: str, heads: int = 1) -> Type | None:
        """A gate: a number, a scalar, or one number per token (or per token and head, `heads` wide)."""
        t = self.type_of(e)
        if t is None:
            return None
        if isinstance(t, Const) and isinstance(t.value, bool):
            self.rep.error("E405", f"the {what} must be a number, not `{str(t.value).lower()}`", e.span,
                           "write a number, `learned(...)`, or a per-token value such as `sigmoid(linear(x, 1))`")
            return None
        if isinstance(t, Tensor) and t.dim not in (1, "P", heads):
            if heads > 1:
                self.rep.error("E405", f"the {what} must be one number per token, or one per head ({heads}), but "
                               f"this is {_describe(t)}", e.span,
                               f"make it 1 wide (all heads) or {heads} wide, e.g. `sigmoid(linear(x, {heads}))`")
            else:
                self.rep.error("E405", f"the {what} must be one number per token, but this is {_describe(t)}",
                               e.span, "make it 1 wide, e.g. `sigmoid(linear(x, 1))`")
            return None
        return t

    # ---- expressions ----
    def type_of(self, e: ir.Expr) -> Type | None:
        """Return the type of e, or None after reporting why it has none; record a constant's value in the facts."""
        t = self._type_of(e)
        if isinstance(t, Const):
            self.facts.record_constant(e, t.value)
        return t

    def _type_of(self, e: ir.Expr) -> Type | None:
        if isinstance(e, (ir.Num, ir.Bool)):
            return Const(e.value)
        if isinstance(e, ir.Ref):
            return self.ref_type(e)
        if isinstance(e, ir.Neg):
            t = self.type_of(e.operand)
            return Const(-t.value) if isinstance(t, Const) else t
        if isinstance(e, ir.BinOp):
            return self.binop_type(e)
        if isinstance(e, ir.Call):
            if e.kind is ir.CallKind.READ:
                return self.read_type(e)
            if e.kind is ir.CallKind.OP:
                return self.op_type(e)
        return None

    def ref_type(self, e: ir.Ref) -> Type | None:
        if e.kind is ir.RefKind.PARAM:
            v = self.env.get(e.name)
            return None if v is None else Const(v)
        if e.kind is ir.RefKind.LET:
            return self.let_type(e.name)
        if e.kind is ir.RefKind.INPUT:
            if self.is_model:
                return Tensor(self.dim)
            return Scalar() if e.name == "step" else Tensor("P")
        if e.kind is ir.RefKind.LEVEL:
            shape = self.shape(e.name)
            if shape is None:
                return None
            if shape.kind in ("linear", "mlp"):
                kind = {"mlp": "an MLP", "linear": "a linear"}[shape.kind]
                self.rep.error("E402", f"`{e.name}` is {kind} memory, not a value", e.span,
                               f"read it with a key: `{e.name}(q)`")
                return None
            return Tensor(shape.d_out)
        return None

    def read_type(self, e: ir.Call) -> Type | None:
        shape = self.shape(e.fn)
        if shape is None:
            return None
        if e.kwargs:
            self.rep.error("E411", f"reading `{e.fn}` takes no keyword arguments", e.kwargs[0].name_span,
                           f"write `{e.fn}(q)`")
            return None
        elementwise = shape.kind in ("vector", "like", "params")
        if len(e.args) > 1 or (not e.args and not elementwise):
            self.rep.error("E410", f"reading `{e.fn}` takes one key, got {len(e.args)}", e.span,
                           f"write `{e.fn}(q)`")
            return None
        if not e.args:
            return Tensor(shape.d_out)
        t = self.type_of(e.args[0])
        if t is None:
            return None
        if isinstance(t, (Const, Scalar)) and elementwise:
            return Tensor(shape.d_out)
        if not isinstance(t, Tensor) or not _fits(t.dim, shape.d_in):
            self.rep.error("E404", f"`{e.fn}` takes keys {_width(shape.d_in)}, but this is {_describe(t)}",
                           e.args[0].span, _fix_width(shape.d_in))
            return None
        return Tensor(t.dim if shape.d_in == 1 and t.dim == "P" else shape.d_out)

    def op_type(self, e: ir.Call) -> Type | None:
        sig = B.OPS[e.fn]
        bound = self.bind(e, sig)
        if bound is None:
            return None
        if sig.variadic:  # concat
            types = [self.expect(a, B.ArgType.TENSOR, "value") for a in bound.values()]
            if any(t is None for t in types):
                return None
            if any(t.dim == "P" for t in types):
                self.rep.error("E413", "`concat` needs feature vectors of known width", e.span)
                return None
            return Tensor(sum(int(t.dim) for t in types))
        types = {}
        for a in sig.args:
            arg = bound[a.name]
            if arg is None:
                continue
            t = self.expect(arg, a.type, a.name, e.fn) if a.type is not B.ArgType.ANY else self.type_of(arg)
            if t is None:
                return None
            types[a.name] = t
        return self.op_result(e, bound, types)

    def op_result(self, e: ir.Call, bound, types) -> Type | None:
        fn = e.fn
        if fn == "linear":
            return Tensor(int(types["out"].value))
        if fn == "mean":
            return Tensor(1)
        if fn == "slice":
            return self.slice_type(bound, types)
        if fn == "learned":
            return Scalar()
        if fn in B.UNARY_OPS:
            t = types["x"]
            if isinstance(t, Const):
                v = fold_unary(e, t.value, self.rep)
                return None if v is None else Const(v)
            return t
        x = types["x"]
        if fn == "attention":
            heads = int(types.get("heads", Const(1)).value)
            if isinstance(x.dim, int) and x.dim % heads:
                self.rep.error("E414", f"{heads} heads do not divide {x.dim} features", bound["heads"].span,
                               f"pick a divisor of {x.dim}")
                return None
            mem = types.get("memory")
            if mem is not None and mem.dim != x.dim:
                self.rep.error("E404", f"attention `memory` must be {x.dim} wide like its input, not "
                               f"{_describe(mem)}", bound["memory"].span, _fix_width(x.dim))
                return None
        return x

    def slice_type(self, bound, types) -> Type | None:
        """`slice(x, start, stop)`: stop - start features, with 0 <= start < stop <= the width of x (E422)."""
        x, start, stop = types["x"], int(types["start"].value), int(types["stop"].value)
        if x.dim == "P":
            self.rep.error("E413", "`slice` needs a feature vector of known width", bound["x"].span,
                           "slice a model's token features; an optimizer sees parameter-shaped tensors")
            return None
        if stop > int(x.dim):
            self.rep.error("E422", f"`slice` stops at feature {stop}, but x has {x.dim}", bound["stop"].span,
                           f"stop at most at {x.dim}")
            return None
        if start >= stop:
            self.rep.error("E422", f"`slice` from {start} to {stop} holds no feature", bound["start"].span,
                           f"start below stop ({stop}): slice(x, a, b) keeps features a, ..., b - 1")
            return None
        return Tensor(stop - start)

    def binop_type(self, e: ir.BinOp) -> Type | None:
        a, b = self.type_of(e.lhs), self.type_of(e.rhs)
        if a is None or b is None:
            return None
        if isinstance(a, Const) and isinstance(b, Const):
            r = arith(e, a.value, b.value, self.rep)
            return None if r is None else Const(r)
        flag = next((t.value for t in (a, b) if isinstance(t, Const) and isinstance(t.value, bool)), None)
        if flag is not None:
            self.rep.error("E413", f"`{e.op}` needs numbers, not `{str(flag).lower()}`", e.span)
            return None
        if e.op == "/" and isinstance(b, Const) and b.value == 0:
            self.rep.error("E408", "division by zero", e.span)
            return None
        if e.op == "**" and isinstance(b, Tensor):
            self.rep.error("E413", "the exponent of `**` must be a number", e.rhs.span)
            return None
        if not isinstance(a, Tensor):
            return b if isinstance(b, Tensor) else Scalar()
        if not isinstance(b, Tensor):
            return a
        if a.dim == b.dim or b.dim == 1:
            return a
        if a.dim == 1:
            return b
        value = lambda t: "a parameter-shaped value" if t.dim == "P" else f"a {t.dim}-wide value"  # noqa: E731
        self.rep.error("E407", f"cannot combine {value(a)} and {value(b)} with `{e.op}`", e.span,
                       "both sides need the same width (or width 1): project one of them with `linear(..., N)`")
        return None


def _fits(have: int | str, want: int | str) -> bool:
    return have == want or (want == 1 and have == "P") or (have == "P" and want == "P")


def _is_int(v) -> bool:
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def _width(d: int | str) -> str:
    return "shaped like the parameter" if d == "P" else f"{d} wide"


def _fix_width(d: int | str) -> str | None:
    return None if d == "P" else f"project them to {d} features: `linear(..., {d})`"


def _describe(t: Type) -> str:
    if isinstance(t, Const):
        v = t.value
        return f"the constant {str(v).lower() if isinstance(v, bool) else f'{v:g}' if isinstance(v, float) else v}"
    if isinstance(t, Scalar):
        return "a scalar"
    return f"{t}"


def _sig(sig: B.Builtin) -> str:
    parts = []
    for a in sig.args:
        parts.append(a.name if a.required else f"{a.name} = {_default(a.default)}")
    return f"`{sig.name}({', '.join(parts)})`"


def _default(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)
