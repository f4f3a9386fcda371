"""Size: how many parameters a program builds and how much memory a sequence needs, before anything is built.

Runs last, on the checked IR and the shape pass's facts (widths and build-time
constants, `nlc.passes.shapes`), and imports no back end. Everything is counted
symbolically: a block is sized once and multiplied by the number of copies its
`repeat`s make, an MLP memory's weights in closed form, so `repeat 10**9` or
`depth = 10**9` costs the checker the same few operations as `repeat 2`, and is
refused before `nlc.plan` would unroll it or a back end allocate it.

What is counted, in numbers (tensor elements; 4 bytes each in float32):

- parameters: exactly `sum(p.numel() for p in nlc.build(...).parameters())`: the token
  embedding, output head (vocab x dim each) and final norm; every slow layer a block
  builds (`linear` (+ bias), `conv`, `rmsnorm`, `swiglu`, `attention` and its persistent
  tokens, `learned`); the initial state of `init learned` in-context levels; the weights
  of `steps` and `never` levels (frozen ones too: they are parameters without gradients).
- state: exactly the numbers in `model.init_state(1)`, what one sequence holds before its
  first token: each in-context level's state and its rule's buffers (momentum, muon,
  delta_momentum: one more copy; adam: two), the convolution caches (width - 1 tokens) and the
  sliding-window attention caches (window - 1 tokens, fixed from the start).
  A batch of B sequences holds B times as much.
- per token, what one more token of a sequence costs: attention's key/value cache
  (2 x width; 4 x with `memory`; `window`/`segment` bound it, which is not counted) and
  the forward's activations (every value the spec computes, once, plus the residual
  stream and the logits). Not counted: what autograd saves inside builtins, attention
  scores (T x T a head), the chunk kernels' temporaries, and the training optimizer's
  moments (AdamW: two per parameter).

An optimizer spec has no parameters of its own: its state is kept per parameter tensor p,
`per_entry` numbers for every number of p (`like(param)` levels, running states of
periodic levels, momentum buffers) plus `per_tensor` numbers whatever p's size (the
weights of elementwise `mlp(1, hidden)` memories).

E420 parameters (or one sequence's state plus one token, or an optimizer's state per
parameter tensor) over the budget; E421 an MLP memory deeper than the depth limit, or
`repeat`s that unroll to more blocks than the block limit. The limits are `SizeLimits`;
the CLI's `--max-params`, `--max-state`, `--max-depth`, `--max-blocks` and the Python
API's keywords of the same names raise them.
"""

from __future__ import annotations

import math
from decimal import Decimal
from dataclasses import dataclass, fields, replace
from typing import Iterator, Mapping

from nlc import builtins as B
from nlc import ir, rules
from nlc.errors import Reporter
from nlc.passes.facts import ProgramFacts
from nlc.passes.params import fold
from nlc.passes.shapes import Const, Tensor, _dependency_order, _Typer
from nlc.printer import print_expr
from nlc.source import Span


@dataclass(frozen=True)
class SizeLimits:
    """The budget `nlc check` enforces (defaults: docs/language.md, "Size limits")."""

    max_params: int = 2_000_000_000  # 8 GB of float32 weights, 24 GB more for AdamW's moments and the gradients
    max_state: int = 2_000_000_000  # numbers one sequence holds (its state plus one token): 8 GB in float32
    max_depth: int = 64  # layers of an MLP memory: far beyond any published one (Titans: 1-4)
    max_blocks: int = 4096  # blocks after unrolling `repeat`s: 20x the deepest published Transformers


OPTIONS = {f.name: "--" + f.name.replace("_", "-") for f in fields(SizeLimits)}  # max_params -> --max-params


def split_limits(overrides: Mapping[str, object]) -> tuple[SizeLimits, dict[str, object]]:
    """Take the size-limit keywords (`max_params=...`) out of build-time overrides; None means the default.

    A spec parameter with one of these names cannot be overridden from the API or `-p`: the limit wins.
    """
    given = {k: v for k, v in overrides.items() if k in OPTIONS and v is not None}
    for name, value in given.items():
        whole = isinstance(value, int) or isinstance(value, float) and math.isfinite(value) and value.is_integer()
        if isinstance(value, bool) or not whole or value < 1:
            raise ValueError(f"{name} must be a positive whole number, not {value!r}")
    limits = SizeLimits(**{k: int(v) for k, v in given.items()})
    return limits, {k: v for k, v in overrides.items() if k not in OPTIONS}


@dataclass(frozen=True)
class SizeEstimate:
    """What a program will cost, in numbers (tensor elements); see the module docstring for what is counted."""

    params: int = 0  # model: parameters of the built module
    state: int = 0  # model: numbers one sequence's state holds before its first token (init_state(1))
    per_token: int = 0  # model: numbers one more token of a sequence costs (activations, attention caches)
    blocks: int = 0  # model: blocks after unrolling every `repeat`
    per_entry: int = 0  # optimizer: state numbers per number of a parameter tensor
    per_tensor: int = 0  # optimizer: state numbers per parameter tensor, whatever its size


@dataclass(frozen=True)
class Part:
    """One thing that takes memory: its size in one copy, its copies, and where the spec sizes it."""

    what: str
    size: int
    copies: int = 1
    span: Span | None = None
    roots: tuple[ir.Expr, ...] = ()  # expressions its size depends on (for naming a parameter to lower)
    scope: "_Scope | None" = None
    implicit: tuple[str, ...] = ()  # parameters it depends on without an expression (the embedding: dim, vocab)
    per_token: bool = False  # memory: its size is for each token of a sequence, not for the sequence

    @property
    def total(self) -> int:
        return self.size * self.copies

    def describe(self) -> str:
        times = f" ({_num(self.size)} x {_num(self.copies)} copies)" if self.copies > 1 else ""
        return f"{self.what}: {_num(self.total)}{times}"


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter, limits: SizeLimits = SizeLimits(),
        overridden: frozenset[str] | set[str] = frozenset()) -> SizeEstimate | None:
    """Estimate the program's size; report E420/E421 past `limits`. Return None after an error."""
    blame = _Blame(program, env, overridden)
    if program.is_model:
        return _model(program, env, rep, limits, blame)
    return _optimizer(program, env, rep, limits, blame)


# ---- models -------------------------------------------------------------------------------------



def _model(program, env, rep: Reporter, limits: SizeLimits, blame: "_Blame") -> SizeEstimate | None:
    instances = _unroll(program, env, rep, limits)
    scopes = {id(block): _Scope(block, env) for block, _, _ in instances}
    for scope in scopes.values():
        scope.check_depths(rep, limits)
    if rep.errors:
        return None
    dim, vocab = int(env["dim"]), int(env["vocab"])
    params = [Part("the token embedding, output head and final norm", 2 * vocab * dim + dim,
                   implicit=("dim", "vocab"))]
    state = [Part("the embedding, residual stream, final norm and logits of a token", 3 * dim + vocab,
                  implicit=("dim", "vocab"), per_token=True)]
    shared: set[str] = set()  # a shared level's initial state and state are the model's: counted once
    for block, copies, repeats in instances:
        scope = scopes[id(block)]
        params += [_copied(p, copies, repeats) for p in scope.param_parts()]
        state += [_copied(p, copies, repeats) for p in scope.state_parts()]
        for lv in scope.levels.values():
            if lv.shared and lv.name not in shared:
                shared.add(lv.name)
                params += scope.param_parts(shared=lv.name)
                state += scope.state_parts(shared=lv.name)
    estimate = SizeEstimate(
        params=sum(p.total for p in params),
        state=sum(p.total for p in state if not p.per_token),
        per_token=sum(p.total for p in state if p.per_token),
        blocks=sum(copies for _, copies, _ in instances),
    )
    if estimate.params > limits.max_params:
        _over(rep, blame, params, "max_params",
              f"{_kind(program)} has {_num(estimate.params)} parameters ({_bytes(estimate.params)} as float32), "
              f"more than the limit of {_num(limits.max_params)}")
    need = estimate.state + estimate.per_token
    if need > limits.max_state:
        _over(rep, blame, state, "max_state",
              f"one sequence of {_kind(program)} needs {_num(need)} numbers ({_bytes(need)} as float32) for its "
              f"state and one token, more than the limit of {_num(limits.max_state)}")
    return estimate


def _unroll(program: ir.Program, env, rep: Reporter, limits: SizeLimits):
    """Return (block, copies, repeat counts around it) for every block; E421 where repeats make too many.

    Each `repeat` is visited once, whatever its count: copies multiply symbolically.
    """
    out: list[tuple[ir.Block, int, tuple[ir.Expr, ...]]] = []

    def visit(stmts, copies: int, repeats: tuple[ir.Expr, ...]) -> None:
        for s in stmts:
            if isinstance(s, ir.Repeat):
                count = int(fold(s.count, env, Reporter()))
                made = copies * count
                if made > limits.max_blocks:
                    inside = f" ({_num(count)} in each of the {_num(copies)} copies around it)" if copies > 1 else ""
                    rep.error("E421", f"this `repeat` makes {_num(made)} copies of its body{inside}, more than the "
                              f"limit of {_num(limits.max_blocks)} blocks", s.count.span,
                              _raise_hint("max_blocks", "use fewer, wider blocks"))
                    continue
                visit(s.body, made, (*repeats, s.count))
            elif isinstance(s, ir.Block):
                out.append((s, copies, repeats))

    visit(program.body, 1, ())
    total = sum(copies for _, copies, _ in out)
    if total > limits.max_blocks and not rep.errors:
        running = 0
        for block, copies, repeats in out:
            running += copies
            if running > limits.max_blocks:  # point at the repeat (or block) that crosses the limit
                span = repeats[-1].span if repeats else block.name_span
                rep.error("E421", f"{_kind(program)} unrolls to {_num(total)} blocks, more than the limit of "
                          f"{_num(limits.max_blocks)}", span, _raise_hint("max_blocks", "use fewer, wider blocks"))
                break
    return out


def _copied(part: Part, copies: int, repeats: tuple[ir.Expr, ...]) -> Part:
    """The part in every copy of its block: its size also depends on the repeat counts."""
    return replace(part, copies=copies, roots=(*part.roots, *repeats))


_MODULE_OPS = ("linear", "conv", "rmsnorm", "swiglu", "attention", "learned")


class _Facts(_Typer):
    """The shape pass's typer for one scope, remembering every expression's type (each is computed once)."""

    def __init__(self, env: Mapping[str, object], body, is_model: bool):
        super().__init__(Reporter(), env, body, is_model, ProgramFacts(dict(env)))  # the shape pass recorded the facts
        self._types: dict[int, object] = {}
        # lets and state shapes in dependency order, as the shape pass does: long chains stay shallow
        for kind, name in _dependency_order(self.lets, self.levels):
            (self.let_type if kind == "let" else self.shape)(name)

    def type_of(self, e: ir.Expr):
        key = id(e)
        if key not in self._types:
            self._types[key] = super().type_of(e)
        return self._types[key]


class _Scope:
    """Sizes one block (or an optimizer's body) once, from its expressions' types."""

    def __init__(self, block: ir.Block | None, env, body=None, is_model: bool = True):
        self.block = block
        self.facts = _Facts(env, block.body if block is not None else body, is_model)
        self.lets, self.levels = self.facts.lets, self.facts.levels
        self.where = f" in block `{block.name}`" if block is not None else ""

    # ---- values ----
    def const(self, e: ir.Expr | None, default=None):
        if e is None:
            return default
        t = self.facts.type_of(e)
        return t.value if isinstance(t, Const) else default

    def width(self, e: ir.Expr | None) -> int:
        t = self.facts.type_of(e) if e is not None else None
        return int(t.dim) if isinstance(t, Tensor) and isinstance(t.dim, int) else 0

    def bound(self, call: ir.Call, table) -> dict:
        return self.facts.bind(call, table[call.fn]) or {}

    # ---- structure ----
    def check_depths(self, rep: Reporter, limits: SizeLimits) -> None:
        """E421 for an MLP memory deeper than the limit (its weights would be a list that long)."""
        for lv in self.levels.values():
            if lv.state.fn != "mlp":
                continue
            depth = self.bound(lv.state, B.STATES).get("depth")
            value = self.const(depth, 0)
            if value > limits.max_depth:
                kw = next((k for k in lv.state.kwargs if k.name == "depth"), None)
                rep.error("E421", f"the MLP memory of level `{lv.name}` is {_num(value)} layers deep, more than "
                          f"the limit of {limits.max_depth}", kw.span if kw is not None else depth.span,
                          _raise_hint("max_depth", "use a shallower memory"))

    def planned(self) -> Iterator[ir.Expr]:
        """The expressions `nlc.plan` turns into layers and values: lets, in-context levels' inputs, `out`."""
        for s in self.block.body:
            if isinstance(s, ir.Let):
                yield s.value
            elif isinstance(s, ir.Level) and s.period.unit is ir.PeriodUnit.TOKENS:
                if isinstance(s.context, ir.Tuple):
                    yield from s.context.items
                if isinstance(s.update, ir.Call):
                    yield from ir.children(s.update)
                yield from (g for g in (s.lr, s.retain) if g is not None)
            elif isinstance(s, ir.Out):
                yield s.value

    def nodes(self) -> Iterator[ir.Expr]:
        for e in self.planned():
            yield from ir.walk(e)

    # ---- sizes ----
    def param_parts(self, shared: str | None = None) -> list[Part]:
        """The block's parameters (shared levels' initial states left out), or only the shared level `shared`'s."""
        parts = []
        if shared is None:
            for n in self.nodes():
                if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn in _MODULE_OPS:
                    parts.append(self.part(f"`{_short(n)}`{self.where}", self.module_size(n), n.span, (n,)))
        for lv in self.levels.values():
            if not _counted_here(lv, shared):
                continue
            in_context = lv.period.unit is ir.PeriodUnit.TOKENS
            if not in_context or lv.init.fn == "learned":
                what = "initial state" if in_context else "weights"
                parts.append(self.part(f"the {what} of level `{lv.name}`{self.where}", self.weights(lv.name),
                                       lv.state.span, (lv.state,)))
        return parts

    def module_size(self, call: ir.Call) -> int:
        b = self.bound(call, B.OPS)
        w = self.width(b.get("x"))
        if call.fn == "linear":
            out = int(self.const(b["out"]))
            return w * out + (out if self.const(b.get("bias"), False) else 0)
        if call.fn == "conv":
            return w * int(self.const(b.get("width"), 4))
        if call.fn == "rmsnorm":
            return w
        if call.fn == "swiglu":
            return 3 * w * int(self.const(b["hidden"]))
        if call.fn == "attention":  # q, k, v, o, and persistent key/value tokens (heads x head_dim = w)
            return 4 * w * w + 2 * int(self.const(b.get("persistent"), 0)) * w
        return 1  # learned

    def weights(self, name: str) -> int:
        """Numbers in level `name`'s state: `like` chains followed in a loop (they may be long)."""
        seen = set()
        s = self.levels[name].state
        while s.fn == "like" and name not in seen:
            seen.add(name)
            of = self.bound(s, B.STATES)["of"]
            name = of.name
            s = self.levels[name].state
        b = self.bound(s, B.STATES)
        h = int(self.const(self.levels[name].heads, 1))  # h heads hold 1/h of every width each (nlc check: E414)
        if s.fn == "linear":
            return int(self.const(b["d_in"])) * int(self.const(b["d_out"])) // h
        if s.fn == "vector":
            return int(self.const(b["n"]))
        d = int(self.const(b["dim"]))
        return h * mlp_size(d // h, int(self.const(b.get("hidden"), 4 * d)) // h, int(self.const(b.get("depth"), 2)))

    def state_parts(self, shared: str | None = None) -> list[Part]:
        """One sequence's state in the block (shared levels left out), or only the shared level `shared`'s."""
        parts = []
        for lv in self.levels.values():
            if lv.period.unit is not ir.PeriodUnit.TOKENS or not _counted_here(lv, shared):
                continue
            rule = lv.update.fn if isinstance(lv.update, ir.Call) else None
            copies = 1 + rules.buffers(rule)
            parts.append(self.part(f"the state of level `{lv.name}`{self.where}", copies * self.weights(lv.name),
                                   lv.state.span, (lv.state,)))
        if shared is not None:
            return parts
        activations = 0
        for n in self.nodes():
            if isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn == "conv":
                b = self.bound(n, B.OPS)
                parts.append(self.part(f"the cache of `{_short(n)}`{self.where}",
                                       (int(self.const(b.get("width"), 4)) - 1) * self.width(b["x"]), n.span, (n,)))
            elif isinstance(n, ir.Call) and n.kind is ir.CallKind.OP and n.fn == "attention":
                b = self.bound(n, B.OPS)
                streams = 2 if b.get("memory") is not None else 1
                parts.append(self.part(f"the key/value cache of `{_short(n)}`{self.where}, a token",
                                       2 * streams * self.width(b["x"]), n.span, (n,), per_token=True))
                window, segment = (int(self.const(b.get(k), 0)) for k in ("window", "segment"))
                capacity = B.attention_cache_length(window, segment)
                if capacity is not None:  # a window's cache: a fixed length from the start
                    parts.append(self.part(f"the key/value cache of `{_short(n)}`{self.where}", capacity * 2 * streams
                                           * self.width(b["x"]), n.span, (n,)))
            if not isinstance(n, (ir.Ref, ir.Tuple)):
                activations += self.width(n)
        activations += self.facts.dim  # the block's output added to the residual stream
        parts.append(self.part(f"the activations of block `{self.block.name}`, a token", activations,
                               self.block.name_span, tuple(self.planned()), per_token=True))
        return parts

    def part(self, what: str, size: int, span: Span, roots: tuple[ir.Expr, ...], per_token: bool = False) -> Part:
        return Part(what, size, 1, span, roots, self, per_token=per_token)

    def params_of(self, roots) -> set[str]:
        """Parameter names the given expressions depend on, through lets, level states and the input `x`."""
        names: set[str] = set()
        stack, seen = list(roots), set()
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            for n in ir.walk(e):
                if isinstance(n, ir.Ref) and n.kind is ir.RefKind.PARAM:
                    names.add(n.name)
                elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.INPUT and self.block is not None:
                    names.add("dim")
                elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET and n.name in self.lets:
                    stack.append(self.lets[n.name].value)
                elif isinstance(n, ir.Ref) and n.kind is ir.RefKind.LEVEL and n.name in self.levels:
                    stack.append(self.levels[n.name].state)
                elif isinstance(n, ir.Call) and n.kind is ir.CallKind.READ and n.fn in self.levels:
                    stack.append(self.levels[n.fn].state)
        return names


def _counted_here(lv: ir.Level, shared: str | None) -> bool:
    """Whether a size part of lv belongs to the block's own parts (shared None: lv is not shared) or to
    those of the shared level `shared` (lv is it), which the model counts once."""
    return lv.name == shared and lv.shared if shared is not None else not lv.shared


def mlp_size(d: int, hidden: int, depth: int) -> int:
    """Numbers in an MLP memory d -> d with `depth` layers of `hidden` features (1 layer: d x d), in closed form."""
    if depth == 1:
        return d * d
    return 2 * d * hidden + (depth - 2) * hidden * hidden


# ---- optimizers ---------------------------------------------------------------------------------


def _optimizer(program: ir.Program, env, rep: Reporter, limits: SizeLimits, blame: "_Blame") -> SizeEstimate | None:
    """State per parameter tensor p: per_entry x p.numel() + per_tensor (nlc.codegen.optimizer's init_state)."""
    scope = _Scope(None, env, program.body, is_model=False)
    scope.check_depths(rep, limits)
    if rep.errors:
        return None
    per_entry, tensor_parts = 0, []
    for lv in scope.levels.values():
        periodic = not (isinstance(lv.period.count, ir.Num) and lv.period.count.value == 1)
        copies = 2 if periodic else 1  # a periodic level keeps its running state besides the one reads see
        if lv.state.fn == "params":
            per_entry += 1 if periodic else 0
        elif lv.state.fn == "mlp":
            b = scope.bound(lv.state, B.STATES)
            size = mlp_size(1, int(scope.const(b.get("hidden"), 4)), int(scope.const(b.get("depth"), 2)))
            tensor_parts.append(scope.part(f"the MLP memory `{lv.name}`", copies * size, lv.state.span, (lv.state,)))
        else:
            per_entry += copies
        if isinstance(lv.update, ir.Call) and lv.update.kind is ir.CallKind.FORM:
            per_entry += rules.buffers(lv.update.fn)
    per_tensor = sum(p.total for p in tensor_parts)
    if per_tensor > limits.max_state:
        _over(rep, blame, tensor_parts, "max_state",
              f"{_kind(program)} keeps {_num(per_tensor)} numbers of state ({_bytes(per_tensor)} as float32) for "
              f"every parameter tensor, more than the limit of {_num(limits.max_state)}")
    return SizeEstimate(per_entry=per_entry, per_tensor=per_tensor)


# ---- reporting ----------------------------------------------------------------------------------


class _Blame:
    """Finds the parameter to lower for an over-budget part: the largest one its size depends on."""

    def __init__(self, program: ir.Program, env: Mapping[str, object], overridden):
        self.program, self.env, self.overridden = program, env, set(overridden)
        self.defs = {p.name: p for p in program.params}

    def leaves(self, names) -> set[str]:
        """Follow parameter defaults (`ffn = 4 * dim` -> dim) to the parameters a user sets."""
        out, stack, seen = set(), list(names), set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            p = self.defs.get(name)
            refs = [] if p is None or name in self.overridden else \
                [n.name for n in ir.walk(p.value) if isinstance(n, ir.Ref) and n.kind is ir.RefKind.PARAM]
            if refs:
                stack.extend(refs)
            else:
                out.add(name)
        return out

    def parameter(self, part: Part) -> str | None:
        names = set(part.implicit)
        if part.scope is not None:
            names |= part.scope.params_of(part.roots)
        order = [*self.defs, *B.IMPLICIT_MODEL_PARAMS]
        numbers = sorted((n for n in self.leaves(names) if _is_number(self.env.get(n))),
                         key=lambda n: order.index(n) if n in order else len(order))
        return max(numbers, key=lambda n: abs(self.env[n]), default=None)  # the first of equals, in source order

    def span(self, name: str) -> Span:
        p = self.defs.get(name)
        return p.span.to(p.value.span) if p is not None else self.program.name_span

    def label(self, name: str) -> str | None:
        return f"`{name}` is {_exact(self.env[name])} here (set at build time)" if name in self.overridden else None


def _over(rep: Reporter, blame: _Blame, parts: list[Part], limit: str, message: str) -> None:
    """E420 at the parameter to lower (or the largest part's expression), naming the largest part."""
    largest = max(parts, key=lambda p: p.total)
    name = blame.parameter(largest)
    fix = f"lower `{name}`" if name is not None else "make it smaller"
    hint = f"the largest part is {largest.describe()}; {_raise_hint(limit, fix)}"
    if name is None:
        rep.error("E420", message, largest.span, hint)
    else:
        rep.error("E420", message, blame.span(name), hint, label=blame.label(name))


def _raise_hint(limit: str, fix: str) -> str:
    return f"{fix}, or raise the limit with `{OPTIONS[limit]} N` (`{limit}=N` in the Python API)"


def _kind(program: ir.Program) -> str:
    return f"{program.kind.value} `{program.name}`"


def _short(e: ir.Expr, width: int = 40) -> str:
    text = print_expr(e)
    return text if len(text) <= width else text[: width - 3] + "..."


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _exact(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _num(n: int) -> str:
    """A count as people read it: exact below 10**10 (2,000,000,001), else 2.6e13 (any size: Decimal)."""
    if n < 10**10:
        return f"{n:,}"
    mantissa, exponent = f"{Decimal(n):.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _bytes(numbers: int) -> str:
    """Bytes of `numbers` float32 values: 1.05 TB (integer arithmetic: sizes may pass a float's range)."""
    size, units, k = 4 * numbers, ("bytes", "KB", "MB", "GB", "TB", "PB", "EB"), 0
    while k < len(units) - 1 and size >= 1000 ** (k + 1):
        k += 1
    return f"{size / 1000 ** k:.3g} {units[k]}" if size < 1000 ** len(units) else f"{_num(size)} bytes"
