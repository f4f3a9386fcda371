"""Name resolution: bind every name to a parameter, input, `let`, level or spec form.

Scopes: parameters (each may use only the parameters before it); then in a model
each block is a scope with `x`, its `let`s and its levels; an optimizer is one
scope with `grad`, `param`, `step`, its `let`s and levels. Level fields are
resolved by position: `state`, `init`, `context`, `objective` and `update` take
spec forms (`mlp(...)`, `learned`, `(k, v)`, `l2`, `momentum(...)` or a level).

Diagnostics: E201 undefined name, E202 unknown function, E203 duplicate
definition, E204 a definition shadows a builtin, E205 unknown spec form,
E206 an unused level (W206, a warning: an unused let), E207 a form or level
used where a value is expected.
"""

from __future__ import annotations

from dataclasses import replace

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter, did_you_mean, one_of

RESERVED = set(B.MODEL_INPUTS) | set(B.OPTIMIZER_INPUTS) | {"loss"}
PARAM_FUNCTIONS = ("sqrt", "exp", "abs")  # the functions a parameter's default may use (folded by params.fold)


def run(program: ir.Program, rep: Reporter) -> ir.Program:
    """Return the program with every Ref and Call resolved."""
    params = _resolve_params(program, rep)
    inputs = B.MODEL_INPUTS if program.is_model else B.OPTIMIZER_INPUTS
    param_names = {p.name for p in program.params}
    if program.is_model:
        param_names |= set(B.IMPLICIT_MODEL_PARAMS)

    elsewhere = _block_names(program) if program.is_model else {}

    def resolve_body(body: tuple[ir.Stmt, ...]) -> tuple[ir.Stmt, ...]:
        return _Scope(rep, body, param_names, set(inputs), program.is_model, elsewhere=elsewhere).resolve()

    def params_value(e: ir.Expr) -> ir.Expr:
        return _Scope(rep, (), param_names, set(), True, params_only=True).value(e)

    def stmt(s: ir.Stmt) -> ir.Stmt:
        if isinstance(s, ir.Block):
            return replace(s, body=resolve_body(s.body))
        if isinstance(s, ir.Repeat):
            return replace(s, count=params_value(s.count), body=tuple(stmt(c) for c in s.body))
        return s

    body = tuple(stmt(s) for s in program.body) if program.is_model else resolve_body(program.body)
    return replace(program, params=params, body=body)


def _block_names(program: ir.Program) -> dict[str, tuple[str, str]]:
    """Every let and level of the model's blocks: name -> (what it is, the block that defines it),
    for the hint when another block names it (scopes are blocks)."""
    names: dict[str, tuple[str, str]] = {}
    for body, block in ir.scopes(program):
        for d in body:
            if isinstance(d, (ir.Let, ir.Level)):
                names.setdefault(d.name, ("level" if isinstance(d, ir.Level) else "let", block.name))
    return names


def _resolve_params(program: ir.Program, rep: Reporter) -> tuple[ir.Param, ...]:
    out = []
    seen: dict[str, ir.Param] = {}
    # `dim` and `vocab` exist in every model: defaults may use them unless the model declares them
    implicit = set(B.IMPLICIT_MODEL_PARAMS) - {p.name for p in program.params} if program.is_model else set()
    for p in program.params:
        if p.name in seen:
            rep.error("E203", f"parameter `{p.name}` is defined twice", p.span, "rename or remove one of them",
                      notes=((seen[p.name].span, "first defined here"),))
        if p.name in RESERVED:
            what = {**B.MODEL_INPUTS, **B.OPTIMIZER_INPUTS}.get(p.name, "the task loss")
            rep.error("E204", f"parameter `{p.name}` shadows the builtin `{p.name}`", p.span,
                      f"`{p.name}` is {what}; pick another name")
        elif p.name in B.OPS:
            rep.error("E204", f"parameter `{p.name}` shadows the builtin function `{p.name}`", p.span,
                      "pick another name")
        scope = _Scope(rep, (), set(seen) | implicit, set(), program.is_model, params_only=True)
        out.append(replace(p, value=scope.value(p.value)))
        seen.setdefault(p.name, p)
    return tuple(out)


class _Scope:
    """One scope: resolves the statements of a block (or of an optimizer)."""

    def __init__(self, rep: Reporter, body, params: set[str], inputs: set[str], is_model: bool,
                 params_only: bool = False, elsewhere: dict[str, tuple[str, str]] | None = None):
        self.rep = rep
        self.elsewhere = elsewhere or {}  # the lets and levels of every block: for hints only
        self.body = body
        self.params = params
        self.inputs = inputs
        self.is_model = is_model
        self.params_only = params_only
        self.lets: dict[str, ir.Let] = {}
        self.levels: dict[str, ir.Level] = {}
        self.used: set[str] = set()

    # ---- declarations ----
    def resolve(self) -> tuple[ir.Stmt, ...]:
        errors_before = len(self.rep.errors)
        for s in self.body:
            if isinstance(s, (ir.Let, ir.Level)):
                self.declare(s)
        out = tuple(self.stmt(s) for s in self.body)
        if len(self.rep.errors) == errors_before:  # after an undefined name, "unused" is mostly noise
            self.report_unused()
        return out

    def declare(self, s: ir.Let | ir.Level) -> None:
        first = self.lets.get(s.name) or self.levels.get(s.name)
        if first is not None:
            self.rep.error("E203", f"`{s.name}` is defined twice in this scope", s.name_span,
                           "rename one of them", notes=((first.name_span, "first defined here"),))
            return
        shadowed = self._builtin_kind(s.name)
        if shadowed:
            self.rep.error("E204", f"`{s.name}` shadows the {shadowed} `{s.name}`", s.name_span,
                           "pick another name")
        (self.lets if isinstance(s, ir.Let) else self.levels)[s.name] = s

    def _builtin_kind(self, name: str) -> str | None:
        if name in self.params:
            return "parameter"
        if name in RESERVED:
            return "builtin"
        if name in B.OPS:
            return "builtin function"
        return None

    def report_unused(self) -> None:
        # an optimizer without a `state params` level uses none of its levels: E312 says why
        rootless = not self.is_model and not any(ir.is_root(lv) for lv in self.levels.values())
        for name, d in {**self.lets, **self.levels}.items():
            if name in self.used or name.startswith("_"):
                continue
            if isinstance(d, ir.Level) and (ir.is_root(d) or rootless):
                continue
            if isinstance(d, ir.Level):
                self.rep.error("E206", f"level `{name}` is never used", d.name_span,
                               f"read it (`{name}(q)`), make it another level's `update`, remove it, "
                               f"or name it `_{name}` to keep it anyway")
            else:  # a warning: dead code computes nothing wrong, and the check goes on to the real errors
                self.rep.warn("W206", f"`let {name}` is never used", d.name_span,
                              f"use it, remove it, or name it `_{name}` to keep it anyway")

    # ---- statements ----
    def stmt(self, s: ir.Stmt) -> ir.Stmt:
        if isinstance(s, ir.Let):
            return replace(s, value=self.value(s.value))
        if isinstance(s, ir.Out):
            return replace(s, value=self.value(s.value))
        assert isinstance(s, ir.Level)
        return self.level(s)

    def level(self, lv: ir.Level) -> ir.Level:
        count = lv.period.count
        return replace(
            lv,
            state=self.form("state", lv.state),
            init=self.form("init", lv.init),
            context=None if lv.context is None else self.context(lv.context),
            objective=self.form("objective", lv.objective),
            update=self.update(lv.update),
            lr=None if lv.lr is None else self.value(lv.lr),
            retain=None if lv.retain is None else self.value(lv.retain),
            heads=None if lv.heads is None else self.value(lv.heads),
            read=None if lv.read is None else self.form("read", lv.read),
            period=replace(lv.period, count=None if count is None else self.value(count)),
        )

    def form(self, where: str, e: ir.Expr) -> ir.Expr:
        """Resolve a spec form (`mlp(dim)`, `learned`, `l2`, `copy(m)`)."""
        table = B.FORM_TABLES[where]
        if isinstance(e, ir.Ref) and e.name in table:
            return ir.Call(e.name, kind=ir.CallKind.FORM, span=e.span, fn_span=e.span, bare=True)
        if isinstance(e, ir.Call) and e.fn in table:
            if where in ("state", "init", "context") and e.fn in ("like", "copy", "reset", "grad"):
                args = tuple(self.reference(a) for a in e.args)
            else:
                args = tuple(self.value(a) for a in e.args)
            kwargs = tuple(replace(k, value=self.value(k.value)) for k in e.kwargs)
            return replace(e, args=args, kwargs=kwargs, kind=ir.CallKind.FORM)
        name = e.name if isinstance(e, ir.Ref) else e.fn if isinstance(e, ir.Call) else None
        span = e.fn_span if isinstance(e, ir.Call) else e.span
        what = B.FORM_WHAT[where]
        a = "an" if what[0] in "aeiou" else "a"
        choices = f"{a} {what} is one of {one_of(table)}"
        if where == "context":
            choices = "a context is a key/value pair `(k, v)`, `grad(LEVEL)`, `grad(loss)` or `loss`"
        elif where == "update":
            choices += ", or another level"
        if name is None:
            number = isinstance(e, ir.Num) or isinstance(e, ir.Neg) and isinstance(e.operand, ir.Num)
            if where == "update" and number:
                choices = f"a step size belongs in `lr`; {choices}"
            found = "a number" if number else "an expression"
            self.rep.error("E205", f"expected {a} {what}, found {found}", e.span, choices)
        else:
            hint = did_you_mean(name, table) or choices
            self.rep.error("E205", f"unknown {what} `{name}`", span, hint)
        return e

    def reference(self, e: ir.Expr) -> ir.Expr:
        """Resolve the argument of like/copy/grad: a level, `param` or `loss`."""
        if isinstance(e, ir.Ref):
            if e.name in self.levels:
                self.used.add(e.name)
                return replace(e, kind=ir.RefKind.LEVEL)
            if e.name == "loss" or e.name in self.inputs:
                return replace(e, kind=ir.RefKind.FORM if e.name == "loss" else ir.RefKind.INPUT)
            hint = did_you_mean(e.name, [*self.levels, "loss", *self.inputs])
            self.rep.error("E201", f"undefined name `{e.name}`", e.span, hint or "name a level of this scope")
            return e
        self.rep.error("E207", "expected the name of a level here", e.span, "for example `like(memory)`")
        return e

    def context(self, e: ir.Expr) -> ir.Expr:
        if isinstance(e, ir.Tuple):
            return replace(e, items=tuple(self.value(i) for i in e.items))
        return self.form("context", e)

    def update(self, e: ir.Expr) -> ir.Expr:
        """An update rule, a level (deep optimizer), or an expression over levels."""
        if isinstance(e, ir.Ref) and e.name in self.levels:
            self.used.add(e.name)
            return replace(e, kind=ir.RefKind.LEVEL)
        if (isinstance(e, ir.Ref) and e.name in B.UPDATE_RULES) or (
                isinstance(e, ir.Call) and e.fn in B.UPDATE_RULES and e.fn not in self.levels):
            return self.form("update", e)
        if not _mentions_level(e, self.levels):  # `update 2`, `update x`: neither a rule nor a level
            return self.form("update", e)
        return self.value(e, allow_level_values=True)

    # ---- values ----
    def value(self, e: ir.Expr, allow_level_values: bool = True) -> ir.Expr:
        """Resolve a general expression."""
        if isinstance(e, ir.Ref):
            return self.ref(e)
        if isinstance(e, ir.Call):
            return self.call(e)
        if isinstance(e, ir.BinOp):
            return replace(e, lhs=self.value(e.lhs), rhs=self.value(e.rhs))
        if isinstance(e, ir.Neg):
            return replace(e, operand=self.value(e.operand))
        if isinstance(e, ir.Tuple):
            self.rep.error("E207", "a tuple is only allowed as a `context (key, value)`", e.span,
                           "bind the key and the value separately (`let k = ...`, `let v = ...`) and "
                           "write `context (k, v)` in the level")
            return e
        return e

    def ref(self, e: ir.Ref) -> ir.Ref:
        name = e.name
        if not self.params_only:
            if name in self.lets:
                self.used.add(name)
                return replace(e, kind=ir.RefKind.LET)
            if name in self.levels:
                self.used.add(name)
                return replace(e, kind=ir.RefKind.LEVEL)
            if name in self.inputs:
                return replace(e, kind=ir.RefKind.INPUT)
        if name in self.params:
            return replace(e, kind=ir.RefKind.PARAM)
        candidates = [*self.params, *(() if self.params_only else (*self.lets, *self.levels, *self.inputs))]
        hint = self._other_block(name) or did_you_mean(name, candidates)
        if self.params_only and not hint:
            hint = "a parameter's default may only use the parameters before it"
        if any(name in t for t in B.FORM_TABLES.values()) and not hint:
            hint = f"`{name}` is a spec form; it belongs after a level field such as `init` or `objective`"
        self.rep.error("E201", f"undefined name `{name}`", e.span, hint)
        return e

    def call(self, e: ir.Call) -> ir.Call:
        if self.params_only and e.fn in B.OPS and e.fn not in PARAM_FUNCTIONS:
            self.rep.error("E207", f"`{e.fn}` cannot be used in a parameter's default", e.fn_span,
                           "parameters are numbers: use arithmetic on numbers and earlier parameters, "
                           "and `sqrt`, `exp` or `abs`")
            return e
        args = tuple(self.value(a) for a in e.args)
        kwargs = tuple(replace(k, value=self.value(k.value)) for k in e.kwargs)
        e = replace(e, args=args, kwargs=kwargs)
        if not self.params_only and e.fn in self.levels:
            self.used.add(e.fn)
            return replace(e, kind=ir.CallKind.READ)
        if e.fn in B.OPS:
            return replace(e, kind=ir.CallKind.OP)
        form_of = next((w for w, t in B.FORM_TABLES.items() if e.fn in t), None)
        if form_of:
            hint = f"`{e.fn}` is a {B.FORM_WHAT[form_of]}; write it after `{form_of}` in a level"
        elif not self.params_only and e.fn in self.lets:
            hint = f"`{e.fn}` is a value bound by `let`; only levels and builtin functions can be called"
        else:
            hint = self._other_block(e.fn) or did_you_mean(e.fn, [*B.OPS, *self.levels])
        self.rep.error("E202", f"unknown function `{e.fn}`", e.fn_span, hint)
        return e

    def _other_block(self, name: str) -> str | None:
        """The hint for a name that another block defines: names are scoped to their block."""
        if self.params_only or name not in self.elsewhere:
            return None
        what, block = self.elsewhere[name]
        if what == "level":
            return (f"`{name}` is a level of block `{block}`: each block sees only its own lets and levels; to "
                    f"read and write one memory from several blocks, declare `{name}` in this block too and mark "
                    "both declarations `shared`")
        return (f"`{name}` is a {what} of block `{block}`: each block sees only its own lets and levels; pass "
                f"values between blocks through `x`, the block's input, or define `{name}` in this block too")


def _mentions_level(e: ir.Expr, levels) -> bool:
    return any((isinstance(n, ir.Ref) and n.name in levels) or (isinstance(n, ir.Call) and n.fn in levels)
               for n in ir.walk(e))
