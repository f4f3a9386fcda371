"""Hypothesis strategies for nlc: random well-formed level graphs, their text, and inputs.

    from hypothesis import given
    from nlc.testing import programs, inputs

    @given(programs(max_levels=2), inputs(max_length=12))
    def test_my_property(program, tokens): ...

`spec_texts()` draws the canonical source text of a random model (what `nlc fmt`
prints); `programs()` draws the checked IR of that text. Every program drawn is
valid (it loads without diagnostics) and builds with both back ends
(`nlc.build(p)` and `nlc.build(p, backend="reference")`), by construction:
the strategy never draws what the code generator cannot compile yet (E5xx, see
`AVOIDED` below). What it draws, per block:

- state kinds: `linear(d, d)` and `linear(d, 2d)`, `mlp(d, hidden, depth, residual)`,
  `vector(d)`, `like(level)`; matrix memories split into `heads 2` or `heads 4` (with `heads`),
  whose gates are shared or one per head; `read current` on matrix memories with `gd` or `momentum`
  at the chunk;
- inits: `learned`, `zeros`, `identity`, `copy(level)` (chains of copies; with `copies_across`,
  copies between in-context and `steps`/`never` levels), `reset(level)` (a copy that restarts at
  each of a slower level's periods: in-context from in-context, `steps` from `steps`);
- keys: projections (some through feature slices, `slice` and `concat`), flows, and the
  constant key `1` of a vector memory;
- objectives `l2`, `dot`, `huber(delta)`, `lp(p)`; update rules `gd`, `momentum`,
  `dgd`, `muon`, `delta_momentum`, `adam`, and `update LEVEL` (a deep optimizer);
- gates (`lr`, `retain`, `beta`): constants, `learned(...)`, data-dependent
  (`sigmoid(linear(h, 1))`), or another level's output (self-modification);
- periods that nest (`c`, `2c`, `4c` tokens, where `c` may be 3), given as numbers
  or through the `chunk` parameter;
- flows between levels: a key or value read from another level (`l2norm(m1(h))`);
  self-generated values (`context (k, m(v))`, as in Hope); projections that are
  memories (self-modifying keys);
- optimizer levels over gradients: `state like(m)`, `context grad(m)`, and
  `update o` in `m`; or a faster level `o` with pairs of its own that drives `m` (`update o`, and
  `m` without a context: it moves by o's state, at a period of its own);
- CMS chains: levels with `context loss` and `period N steps` read in a chain, or
  the model's slowest token period (learning in context from the model's loss; with `loss_tokens`,
  sometimes `first_order`), frozen levels (`period never`);
- blocks without levels (attention, SwiGLU) and `repeat N`;
- `shared` (with `shared`): one memory written and read by both copies of a `repeat 2` block.

Knobs bound the size (`max_blocks`, `max_levels`, `max_period`, `dim`) and
restrict the kinds drawn (`state_kinds`, `objectives`, `updates`, `gates`,
`roles`). Shrinking goes toward fewer blocks and levels, `gd`, constant gates
and period 1.

`valid_programs()` is a different strategy, for front-end properties (printer,
parser): valid text with comments, odd layouts and field orders, and numbers
of every size, that is not meant to be built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

import nlc
from nlc import builtins as B
from nlc.objectives import OBJECTIVES
from nlc.rules import DEFAULT, RULES, step_level_rules
from nlc.signature import ArgType
from nlc.testing._frontend import valid_programs  # front-end text (printer, parser); its own module

__all__ = [
    "ALL_GATES", "ALL_OBJECTIVES", "ALL_ROLES", "ALL_STATE_KINDS", "ALL_UPDATES", "AVOIDED",
    "inputs", "lengths", "programs", "spec_texts", "valid_programs",
]

ALL_STATE_KINDS = ("linear", "mlp", "vector", "like")
ALL_OBJECTIVES = tuple(OBJECTIVES)
ALL_UPDATES = tuple(RULES)
ALL_GATES = ("constant", "learned", "data", "level")
ALL_ROLES = ("memory", "optimizer", "cms", "frozen")

# What the strategies never draw, and why (each would stop `nlc.build` with an E5xx, or is
# not a model feature the back ends implement):
AVOIDED = {
    "E305": "a level learning another's gradients (`context grad(LEVEL)`) at another period: such a level "
            "always gets the period of the level it optimizes (a faster level that drives another through "
            "`update LEVEL` without learning its gradients is drawn)",
    "E504": "per-token or learned gates on `steps` levels: their lr, retain and beta are numbers",
    "E308": "`steps` levels with a context other than `loss`, an objective other than dot, a rule other than "
            "gd/momentum, or `debias`: the training loop would not honour them",
    "E502": "`newton_schulz` in a model (an optimizer builtin)",
    "E418": "`update m / (sqrt(v) + eps)` in a model: the model back ends take a rule or a level",
    "E309": "`debias` on in-context model levels: no model back end debiases a memory",
    "dead by construction": "`init zeros` MLP memories, `identity` MLPs and learned (zero) vectors on levels that "
                            "do not learn in the forward pass, flows, gates and self-generated values read from a "
                            "level whose initial read is zero, a value equal to the key of an identity memory: "
                            "their gradients are zero at the default init (check_no_dead_parameters)",
    "unstable by construction": "keys read from levels without l2norm, unnormalised block inputs below the first "
                                "block, lp(p = 3) on values read from levels, delta_momentum on MLP states or "
                                "optimizer levels: they diverge within 16 tokens (check_finite)",
}


# ---- the sketch of a program ---------------------------------------------------------------


@dataclass
class _Level:
    name: str
    role: str  # memory | optimizer | cms | frozen
    kind: str  # linear | mlp | vector | like
    state: str
    d_out: int  # width of a read (times dim: 1 or 2)
    init: str = "learned"
    context: str | None = ""  # None, objective and update: not written (a frozen level learns nothing: E314)
    objective: str | None = "l2"
    update: str | None = DEFAULT
    lr: str | None = None
    retain: str | None = None
    period: str = "1 tokens"
    online: bool = False
    first_order: bool = False
    loss_in_tokens: bool = False  # a CMS level learning in context from the model's loss (no copy source: E316)
    optimized_by: str | None = None
    heads: int = 1  # split into heads: no level is tied to it (`update`, `like`, `copy`, `grad`: E423)
    read_current: bool = False  # `read current`: no level is tied to it (E424)
    shared: bool = False  # one state for the copies of its `repeat`ed block (E425, E318)
    rule_lets: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"level {self.name} {{", f"  state {self.state}", f"  init {self.init}"]
        for key in ("context", "objective", "update", "lr", "retain"):
            if getattr(self, key) is not None:
                out.append(f"  {key} {getattr(self, key)}")
        if self.heads > 1:
            out.append(f"  heads {self.heads}")
        if self.read_current:
            out.append("  read current")
        out.append(f"  period {self.period}")
        if self.online:
            out.append("  online")
        if self.first_order:
            out.append("  first_order")
        if self.shared:
            out.append("  shared")
        out.append("}")
        return out


@dataclass
class _Block:
    name: str
    lets: list[tuple[str, str]] = field(default_factory=list)
    levels: list[_Level] = field(default_factory=list)
    out: str = "x"
    repeat: int = 1

    def lines(self) -> list[str]:
        body = [f"let {n} = {v}" for n, v in self.lets]
        for lv in self.levels:
            body += lv.lines()
        body.append(f"out = {self.out}")
        lines = [f"block {self.name} {{"] + ["  " + b for b in body] + ["}"]
        if self.repeat > 1:
            lines = [f"repeat {self.repeat} {{"] + ["  " + b for b in lines] + ["}"]
        return lines


class _Drawer:
    """Draws one block's lets, levels and output (names are unique within the block)."""

    def __init__(self, draw, knobs: dict, chunk: int, chunk_param: bool, steps_base: int):
        self.draw = draw
        self.k = knobs
        self.chunk = chunk
        self.chunk_param = chunk_param
        self.steps_base = steps_base
        self.n = 0
        self.lets: list[tuple[str, str]] = []
        self.heads = 1  # of the level whose gates are being drawn: a gate may be one per head

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    # ---- expressions of width dim ----
    def proj(self, h: str, normalise: bool = False) -> str:
        e = self.pick(["linear", "linear", "conv", "silu", "slice"])
        if e == "linear":
            t = f"linear({h}, dim)"
        elif e == "slice":  # features sliced and put back together (rotated by one), or a slice projected
            t = self.pick([f"linear(concat(slice({h}, 1, dim), slice({h}, 0, 1)), dim)",
                           f"linear(slice({h}, 0, dim - 1), dim)"])
        elif e == "conv":
            t = f"conv(linear({h}, dim), {self.draw(st.integers(1, 4))})"
        else:
            t = f"silu(linear({h}, dim))"
        return f"l2norm({t})" if normalise else t

    def read(self, lv: _Level, key: str) -> str:
        """A dim-wide value read from level lv."""
        r = f"{lv.name}({key})"
        return r if lv.d_out == 1 else f"linear({r}, dim)"

    def flow(self, h: str, sources: list[_Level], normalise: bool, key: bool = False) -> tuple[str, bool]:
        """A key or value: a projection of h, or (a flow) another level's read; and whether it is a flow.

        Keys read from a level are always l2-normalised: a read can grow as that level learns,
        and a gradient step is stable only while lr * |k|^2 < 2.
        """
        if sources and self.k["flows"] and self.draw(st.integers(0, 2)) == 2:
            src = self.pick(sources)
            t = self.read(src, h)
            return (f"l2norm({t})" if normalise or key else t), True
        return self.proj(h, normalise), False

    def gate(self, h: str, readable: list[_Level], what: str) -> str | None:
        """A gate expression (what: lr, retain or beta), or None for the default."""
        kinds = list(self.k["gates"])
        if "level" in kinds and not (readable and self.k["self_modification"]):
            kinds.remove("level")
        if not kinds:
            kinds = ["constant"]
        g = self.pick(["default", *kinds]) if what != "lr" else self.pick(kinds)
        scale = {"lr": "0.1", "retain": "0.05", "beta": "1"}[what]
        const = {"lr": ["0.1", "0.05", "max_lr", "0.5 * max_lr"], "retain": ["0.99", "1 - 0.01", "0.9"],
                 "beta": ["0.9", "0.5"]}[what]
        if g == "default":
            return None
        if g == "constant":
            return self.pick(const)
        if g == "learned":
            return {"lr": "learned(0.1)", "retain": "learned(0.99)", "beta": "learned(0.9)"}[what]
        width = self.pick([1, self.heads]) if self.heads > 1 else 1  # shared by the heads, or one per head
        if g == "data":
            src = f"linear({h}, {width})" if self.draw(st.booleans()) else f"mean(linear({h}, dim))"
        else:  # another level's output: self-modification
            lv = self.pick(readable)
            r = f"{lv.name}({h})"
            src = f"linear({r}, {width})" if self.draw(st.booleans()) else f"mean({r})"
        s = f"sigmoid({src})"
        if what == "beta" and g == "level":
            # inside `update`, a level's name means its *new* state (language.md section 5); a `let`
            # reads the state from before this step, which is what a gate wants
            name = self.fresh("beta")
            self.lets.append((name, s))
            return name
        if what == "retain":
            return f"1 - {s} * {scale}"
        return s if what == "beta" else f"{s} * {scale}"

    def count(self, period: str) -> int:
        """The number of tokens or steps of a drawn period (`2 * chunk tokens`, `4 steps`)."""
        n = 1
        for word in period.split()[:-1]:
            n *= self.chunk if word == "chunk" else int(word) if word.isdigit() else 1
        return n

    def restart_source(self, levels: dict[str, _Level], role: str, fastest: int) -> _Level | None:
        """Sometimes a level for a new level of `role` to restart from (`init reset(o)`, which then takes o's
        state and the fastest period): o of the same role, not split into heads, slower than `fastest`
        at a multiple of it (E317, E416, E423)."""
        # (at least 3 times slower: restarting every 2 periods would leave a momentum's beta no effect, E317)
        candidates = [o for o in levels.values() if o.role == role and o.heads == 1 and not o.loss_in_tokens
                      and o.kind != "like" and self.count(o.period) >= 3 * fastest
                      and self.count(o.period) % fastest == 0]
        if candidates and self.draw(st.booleans()):
            return self.pick(candidates)
        return None

    def period_tokens(self) -> str:
        mults = [m for m in (1, 2, 4) if self.chunk * m <= self.k["max_period"]] or [1]
        m = self.pick(mults)
        if self.chunk_param:
            return "chunk tokens" if m == 1 else f"{m} * chunk tokens"
        return f"{self.chunk * m} tokens"

    # ---- levels ----
    def state(self, memories: list[_Level], allow_like: bool, slow: list[_Level] = ()) -> tuple[str, str, int]:
        kinds = [k for k in self.k["state_kinds"] if k != "like" or (allow_like and memories)]
        twins = [m for m in memories + slow if m.kind in kinds and m.kind != "like"]
        if twins and self.draw(st.booleans()):  # another level's state: something to `init copy`
            twin = self.pick(twins)
            return twin.kind, twin.state, twin.d_out
        kind = self.pick(kinds or ["linear"])
        if kind == "linear":
            wide = self.draw(st.integers(0, 3)) == 3
            return kind, ("linear(dim, 2 * dim)" if wide else "linear(dim, dim)"), 2 if wide else 1
        if kind == "mlp":
            hidden = self.pick(["", ", dim", ", 2 * dim"])
            depth = self.draw(st.integers(1, 2))
            residual = self.pick(["true", "false"])
            if not hidden and depth == 2 and residual == "true" and self.draw(st.booleans()):
                return kind, "mlp(dim)", 1
            return kind, f"mlp(dim{hidden}, depth = {depth}, residual = {residual})", 1
        if kind == "vector":
            return kind, "vector(dim)", 1
        of = self.pick([m for m in memories if m.heads == 1] or memories)
        if of.heads > 1:  # nothing to be shaped like but a split memory (E423): a state of its own
            return "linear", "linear(dim, dim)", 1
        return "like", f"like({of.name})", of.d_out

    def base_kind(self, lv: _Level, levels: dict[str, _Level]) -> str:
        while lv.kind == "like":
            lv = levels[lv.state[len("like("):-1]]
        return lv.kind

    def init(self, lv: _Level, levels: dict[str, _Level], in_context: bool) -> str:
        base = self.base_kind(lv, levels)
        options = ["learned"]
        if base != "mlp":
            options.append("zeros")
        if (base == "mlp" and in_context) or base == "vector" or (base == "linear" and lv.d_out == 1):
            options.append("identity")
        # copy chains (`copy(b)` where b copies a) and copies across frequencies (an in-context level
        # starting from a `steps` level's weights, a `steps` level from another's initial state)
        same = [o for o in levels.values() if o is not lv and o.state == lv.state and o.kind != "like"
                and not o.loss_in_tokens and o.heads == 1
                and (o.role == "memory" or o.role in ("cms", "frozen") and self.k["copies_across"])]
        if same and self.draw(st.booleans()):
            return f"copy({self.pick(same).name})"
        choice = self.pick(options)
        return choice

    def objective(self) -> str:
        o = self.pick(self.k["objectives"])
        samples = OBJECTIVES[o].samples
        return o + self.pick(samples) if len(samples) > 1 else o

    def rule(self, h: str, readable: list[_Level], delta_ok: bool = True, muon_ok: bool = True) -> str:
        # the properties ask every slow parameter for a gradient: rules the outer level cannot learn through
        # (lion's sign) are left to their own tests (tests/test_lion.py)
        rules = [r for r in self.k["updates"] if (delta_ok or not RULES[r].bounded_grads)
                 and (muon_ok or not RULES[r].matrix_only) and RULES[r].outer_gradient]
        r = self.pick(rules or [DEFAULT])
        sig = RULES[r].args
        if not any(a.type in (ArgType.GATE, ArgType.POSINT) for a in sig):  # numbers: the rule's samples
            return r + self.pick(list(RULES[r].samples))
        args = []
        for a in sig:
            value = self.gate(h, readable, "beta") if a.type is ArgType.GATE else \
                str(self.draw(st.integers(1, 3))) if a.type is ArgType.POSINT else None
            if value is not None:
                args.append(f"{a.name} = {value}")
        return f"{r}({', '.join(args)})" if args else r

    def block(self, name: str, n_levels: int, first: bool = True) -> _Block:
        b = _Block(name)
        self.lets = b.lets
        h = "x"
        # levels deeper in the stack read a normalised input (pre-norm), as every reference model does:
        # the residual stream grows with depth, and so would unnormalised keys
        if (n_levels and not first) or self.draw(st.booleans()):
            h = "h"
            b.lets.append(("h", "rmsnorm(x)"))
        levels: dict[str, _Level] = {}
        roles = list(self.k["roles"])
        for _ in range(n_levels):
            memories = [lv for lv in levels.values() if lv.role == "memory"]
            free = [m for m in memories if m.optimized_by is None and m.heads == 1 and not m.read_current]
            options = [r for r in roles if r != "optimizer" or free]
            role = self.pick(options or ["memory"])
            if role == "optimizer":
                self.optimizer_level(h, self.pick(free), levels)
            elif role == "memory":
                self.memory_level(h, levels)
            else:
                self.slow_level(h, role, levels)
        b.levels = list(levels.values())
        b.out = self.output(h, b)
        return b

    def memory_level(self, h: str, levels: dict[str, _Level]) -> None:
        name = self.fresh("mem")
        source = self.restart_source(levels, "memory", self.chunk)
        if source is not None:  # restarts from a slower memory at its periods: its state, the fastest period
            kind, state, d_out = source.kind, source.state, source.d_out
        else:
            kind, state, d_out = self.state([lv for lv in levels.values() if lv.role == "memory"], True,
                                            [lv for lv in levels.values() if lv.role in ("cms", "frozen")])
        lv = _Level(name, "memory", kind, state, d_out)
        levels[name] = lv
        lv.init = f"reset({source.name})" if source is not None else self.init(lv, levels, True)
        if self.k["heads"] and kind in ("linear", "mlp") and source is None and not lv.init.startswith("copy(") \
                and self.draw(st.integers(0, 2)) == 2:
            lv.heads = self.pick([n for n in (2, 4) if self.k["dim"] % n == 0] or [1])
        self.heads = lv.heads
        # flows and gates read only levels whose initial read is not zero: a zero read as a key,
        # value or gate would stop gradients until that level has learned, and every parameter
        # must get a gradient within 2 * alignment + 1 tokens (check_no_dead_parameters)
        others = [o for o in levels.values() if o.role in ("memory", "cms", "frozen") and o is not lv
                  and self.nonzero_at_init(o, levels)]
        me = [lv] if self.nonzero_at_init(lv, levels) else []
        before = len(self.lets)
        # delta_momentum, S <- S (beta I - g^T g) - eta g, is stable only while |g|^2 < 1 + beta: it gets
        # linear or elementwise states, l2-normalised keys and a Huber objective whose gradient is
        # clipped to |d|^2 <= 1/4 (an MLP's hidden activations are not normalised)
        delta_ok = self.base_kind(lv, levels) != "mlp"
        # muon orthogonalises matrices: a vector memory has none (E419)
        rule = self.rule(h, others + me, delta_ok, muon_ok=self.base_kind(lv, levels) != "vector")
        lv.rule_lets = [n for n, _ in self.lets[before:]]
        rule_name = rule.split("(")[0]
        normalise = RULES[rule_name].unit_keys or self.draw(st.booleans())
        key, _ = self.flow(h, others, normalise, key=True)
        if (self.base_kind(lv, levels) == "vector" and self.draw(st.integers(0, 3)) == 3
                and not RULES[rule_name].bounded_grads):
            # a constant key: M(k) = m * 1. Not for a bounded-gradient rule: its small Huber delta (below)
            # saturates on every token when the read starts at 1 (an identity vector), and the value's
            # projection would then get no gradient at all (check_no_dead_parameters)
            key = "1"
        if d_out == 1 and me and self.k["self_modification"] and self.draw(st.integers(0, 3)) == 3:
            value, read = f"{name}({self.proj(h)})", True  # a self-generated value (Hope, NL eq. 95)
        else:
            value, read = self.flow(h, others, False)
            if d_out == 2:
                value = f"linear({value}, 2 * dim)"
        if value == key or f"l2norm({value})" == key:
            value, read = self.proj(h), False  # a memory that starts as the identity would see nothing to learn
        lv.context = f"({key}, {value})"
        # lp(p = 3) steps grow with the square of the error: only for values that do not grow themselves
        lv.objective = self.objective().replace("lp(p = 3)", "lp") if read else self.objective()
        if RULES[rule_name].bounded_grads:
            lv.objective = f"huber(delta = {0.5 / self.k['dim'] ** 0.5:.3g})"
        lv.update = rule
        lv.lr = self.gate(h, others + me, "lr")
        lv.retain = self.gate(h, others + me, "retain")
        self.heads = 1
        lv.period = self.period_tokens() if source is None else \
            "chunk tokens" if self.chunk_param else f"{self.chunk} tokens"
        lv.online = self.draw(st.booleans())
        # reads that see the chunk's updates (E424: gd or momentum, a matrix memory at the block's fastest
        # period, the chunk), unless the level learns from its own reads (E310)
        own = " ".join([lv.context, lv.update, lv.lr or "", lv.retain or "",
                        *(v for n, v in self.lets if n in lv.rule_lets)])
        if (rule_name in B.CURRENT_READ_RULES and self.base_kind(lv, levels) in ("linear", "mlp") and kind != "like"
                and not (self.base_kind(lv, levels) == "linear" and OBJECTIVES[lv.objective.split("(")[0]].minus_value_gradient)
                and self.count(lv.period) == self.chunk and f"{name}(" not in own and self.draw(st.booleans())):
            lv.read_current = True

    def nonzero_at_init(self, lv: _Level, levels: dict[str, _Level]) -> bool:
        """Does reading lv at its initial state give a non-zero value?"""
        if lv.init.startswith("copy("):
            return self.nonzero_at_init(levels[lv.init[len("copy("):-1]], levels)
        base = lv
        while base.kind == "like":
            base = levels[base.state[len("like("):-1]]
        if lv.init == "zeros":
            return False
        if lv.init == "learned":
            return base.kind != "vector"  # a learned vector starts at zeros
        return base.kind != "mlp" or "residual = false" not in base.state  # identity

    def optimizer_level(self, h: str, target: _Level, levels: dict[str, _Level]) -> None:
        name = self.fresh("opt")
        others = [lv for lv in levels.values() if lv.role in ("memory", "cms", "frozen")
                  and self.nonzero_at_init(lv, levels)]
        lv = _Level(name, "optimizer", "like", f"like({target.name})", target.d_out)
        lv.init = self.pick(["zeros", "zeros", "learned"])
        drives = self.draw(st.integers(0, 2)) == 2  # a faster level whose state moves the target
        if drives:  # it learns from pairs of its own; the target learns nothing itself (no context: E314)
            if self.base_kind(target, levels) == "mlp":
                # a zero MLP's gradients are zero (every layer's output is), so its pairs' projections would
                # never get a gradient (check_no_dead_parameters; AVOIDED "dead by construction")
                lv.init = "learned"
            key, _ = self.flow(h, others, True, key=True)
            value, _ = self.flow(h, others, False)
            lv.context = f"({key}, {value if target.d_out == 1 else f'linear({value}, 2 * dim)'})"
            lv.objective = self.objective().replace("lp(p = 3)", "lp")
            if self.base_kind(target, levels) in ("linear", "vector") and \
                    OBJECTIVES[lv.objective.split("(")[0]].minus_value_gradient:
                # its gradients would not depend on its state, which only the target's update sees (every
                # token): its period would change nothing (E314)
                lv.objective = "l2"
        else:
            lv.context = f"grad({target.name})"
            lv.objective = self.pick(["dot", "l2"])
        lv.update = self.rule(h, others, delta_ok=False,  # its gradients are another level's: unbounded
                              muon_ok=self.base_kind(target, levels) != "vector")
        lv.lr = self.gate(h, others, "lr")
        lv.retain = self.gate(h, others, "retain")
        # a level learning the target's gradients learns at its period (E305); a driver may be faster (E306)
        lv.period = target.period
        if drives:
            lv.period = "chunk tokens" if self.chunk_param else f"{self.chunk} tokens"
            target.context = target.objective = None
        lv.online = target.online
        target.update = name
        self.lets[:] = [(n, v) for n, v in self.lets if n not in target.rule_lets]  # its old rule's gates
        target.optimized_by = name
        levels[name] = lv

    def slow_level(self, h: str, role: str, levels: dict[str, _Level]) -> None:
        name = self.fresh("cms" if role == "cms" else "frz")
        kinds = [k for k in self.k["state_kinds"] if k != "like"] or ["linear"]
        kind = self.pick(kinds)
        source = self.restart_source(levels, "cms", self.steps_base) if role == "cms" else None
        if source is not None:  # restarts from a slower CMS level at its periods: its state, the fastest period
            kind, state = source.kind, source.state
        elif kind == "mlp":
            state = self.pick(["mlp(dim)", "mlp(dim, dim, depth = 2, residual = true)", "mlp(dim, depth = 1)"])
        elif kind == "vector":
            state = "vector(dim)"
        else:
            state = "linear(dim, dim)"
        lv = _Level(name, role, kind, state, 1)
        slowest = self.chunk * max(m for m in (1, 2, 4) if self.chunk * m <= self.k["max_period"] or m == 1)
        if role == "cms" and source is None and self.k["loss_tokens"] and slowest >= 2 \
                and self.draw(st.integers(0, 2)) == 0:
            # learning from the model's loss in context, at the slowest token period: every in-context
            # period (chunk, 2 chunk, 4 chunk up to max_period) divides it (E307)
            lv.period, lv.loss_in_tokens = f"{slowest} tokens", True
        # these levels do not learn inside the forward pass: their initial read must not be zero
        lv.init = {"mlp": "learned", "vector": "identity"}.get(kind) or self.pick(["learned", "identity"])
        if source is not None:
            lv.init = f"reset({source.name})"
        elif self.k["copies_across"] and not lv.loss_in_tokens and self.draw(st.integers(0, 2)) == 2:
            lv.init = self.init(lv, levels, False)
            if not self.nonzero_at_init(lv, levels):
                lv.init = {"mlp": "learned", "vector": "identity"}.get(kind, "learned")
        if role == "cms":
            lv.context, lv.objective = "loss", "dot"
            lv.update = self.pick([DEFAULT, *step_level_rules()])
            lv.lr = self.pick(["0.01", "cms_lr", None] if not lv.loss_in_tokens else ["0.01", "cms_lr", "0.1"])
            lv.retain = self.pick([None, None, "0.999"])
            if lv.loss_in_tokens:
                lv.first_order = self.draw(st.booleans())
            else:
                m = 1 if source is not None else self.pick([1, 2, 4])
                lv.period = f"{m * self.steps_base} steps"
            lv.online = self.draw(st.booleans())
        else:  # frozen: a state read as it is, nothing to learn from (E314)
            lv.context = lv.objective = lv.update = None
            lv.period = "never"
        levels[name] = lv

    def output(self, h: str, b: _Block) -> str:
        """Every level is read (optimizer levels are used by their `update`); a CMS chain is read as one."""
        terms = []
        chain = [lv for lv in b.levels if lv.role == "cms"]
        readers = [lv for lv in b.levels if lv.role in ("memory", "frozen")]
        chained = False
        if len(chain) > 1 and self.draw(st.booleans()):
            # a CMS chain (NL eq. 70): the slowest level first, the fastest last
            chain.sort(key=lambda lv: -int(lv.period.split()[0]))
            inner = h
            for lv in chain:
                inner = f"{lv.name}({inner})"
            terms.append(inner)
            chained = True
        for lv in readers + ([] if chained else chain):
            if lv.role == "memory" and self.draw(st.integers(0, 2)) == 2:
                qn = self.fresh("q")
                b.lets.append((qn, self.proj(h, self.draw(st.booleans()))))
                terms.append(self.read(lv, qn))
            else:
                terms.append(self.read(lv, self.pick([h, self.proj(h, True)])))
        if not terms:
            kind = self.pick(["linear", "attention", "swiglu"] if self.k["attention"] else ["linear", "swiglu"])
            if kind == "attention":
                heads = self.pick([n for n in (1, 2) if self.k["dim"] % n == 0])
                extra = self.pick(["", ", window = 4", ", persistent = 2", ", segment = 4"])
                return f"attention({h}, heads = {heads}{extra})"
            if kind == "swiglu":
                return f"swiglu({h}, 2 * dim)"
            return f"linear({h}, dim)"
        out = " + ".join(terms)
        if self.draw(st.integers(0, 2)) == 2:
            out = f"linear({out}, dim)"
        return out


_DEFAULTS = dict(max_blocks=2, max_levels=3, dim=8, state_kinds=ALL_STATE_KINDS, objectives=ALL_OBJECTIVES,
                 updates=ALL_UPDATES, gates=ALL_GATES, roles=ALL_ROLES, max_period=4, flows=True,
                 self_modification=True, attention=True, max_repeat=1, vocab=None, copies_across=True,
                 loss_tokens=True, heads=True, shared=True)


def _knobs(**kw) -> dict:
    unknown = set(kw) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown knob(s): {', '.join(sorted(unknown))}; known: {', '.join(_DEFAULTS)}")
    k = {**_DEFAULTS, **kw}
    for name, allowed in (("state_kinds", ALL_STATE_KINDS), ("objectives", ALL_OBJECTIVES),
                          ("updates", ALL_UPDATES), ("gates", ALL_GATES), ("roles", ALL_ROLES)):
        k[name] = tuple(k[name])
        bad = set(k[name]) - set(allowed)
        if bad or not k[name]:
            raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {k[name]}")
    if set(k["state_kinds"]) == {"like"}:
        raise ValueError("state_kinds needs a kind other than `like` (like(m) copies the shape of m)")
    if k["max_blocks"] < 1 or k["max_levels"] < 0 or k["max_period"] < 1 or k["max_repeat"] < 1:
        raise ValueError("max_blocks, max_period and max_repeat must be >= 1 and max_levels >= 0")
    return k


@st.composite
def _raw_spec(draw, knobs: dict) -> str:
    k = knobs
    chunk = draw(st.sampled_from([c for c in (1, 2, 3) if c <= k["max_period"]]))
    chunk_param = draw(st.booleans())
    steps_base = draw(st.sampled_from([1, 2]))
    name = draw(st.sampled_from(["m", "net", "random_model"]))
    params = [f"dim = {k['dim']}"]
    if k["vocab"] is not None:
        params.append(f"vocab = {k['vocab']}")
    params += [f"chunk = {chunk}", "max_lr = 0.1", "cms_lr = 0.01"]
    lines = [f"model {name}({', '.join(params)}) {{"]
    n_blocks = draw(st.integers(1, k["max_blocks"]))
    d = _Drawer(draw, k, chunk, chunk_param, steps_base)
    blocks = []
    for i in range(n_blocks):
        n_levels = draw(st.integers(0 if n_blocks > 1 or k["max_levels"] == 0 else 1, k["max_levels"]))
        repeat = draw(st.integers(1, k["max_repeat"])) if k["max_repeat"] > 1 else 1
        b = d.block(f"b{i}", n_levels, first=i == 0 and repeat == 1)
        b.repeat = repeat
        blocks.append(b)
    if k["shared"]:
        _share_one(draw, d, blocks)
    for b in blocks:
        lines += ["  " + line for line in b.lines()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _share_one(draw, d: _Drawer, blocks: list[_Block]) -> None:
    """Sometimes one memory becomes `shared` by the copies of its block (repeated twice if it was not): an
    untied in-context memory of a block with a normalised input, moved to the model's slowest in-context
    period (which every other one divides: they nest), in a model that learns from its loss only in steps
    (E425, E318)."""
    levels = [lv for b in blocks for lv in b.levels]
    if any(lv.loss_in_tokens for lv in levels):
        return
    in_context = [lv for lv in levels if lv.role in ("memory", "optimizer")]
    slowest = max(in_context, key=lambda lv: d.count(lv.period), default=None)
    tied = {name for lv in levels for name in (
        lv.state[len("like("):-1] if lv.kind == "like" else None,
        lv.init[lv.init.index("(") + 1:-1] if "(" in lv.init else None)}
    candidates = [(b, lv) for b in blocks if ("h", "rmsnorm(x)") in b.lets for lv in b.levels
                  if lv.role == "memory" and lv.optimized_by is None and lv.heads == 1 and not lv.read_current and lv.kind != "like"
                  and lv.init in ("learned", "zeros", "identity") and lv.name not in tied]
    if candidates and draw(st.integers(0, 2)) == 2:
        b, lv = draw(st.sampled_from(candidates))
        lv.shared = True
        lv.period = slowest.period  # (untied: nothing else follows its period)
        b.repeat = max(b.repeat, 2)


def spec_texts(**knobs) -> st.SearchStrategy[str]:
    """Canonical source text of random valid models (see the module docstring for the knobs).

    Knobs: max_blocks (2), max_levels per block (3), dim (8), state_kinds, objectives, updates,
    gates, roles (subsets of ALL_*), max_period in tokens (4), flows (True), self_modification
    (True), attention (True: blocks without levels may use attention), max_repeat (1), vocab
    (None: the default 256), copies_across (True: `init copy` between in-context and `steps` levels),
    loss_tokens (True: CMS levels learning in context from the model's loss), heads (True: matrix
    memories split into heads), shared (True: sometimes a memory shared by the two copies of its block).
    """
    k = _knobs(**knobs)
    return _raw_spec(k).map(_canonical)


def _canonical(text: str) -> str:
    return nlc.print_program(nlc.loads(text, "<random>"))


def programs(**knobs) -> st.SearchStrategy:
    """Checked IR (`nlc.ir.Program`) of random valid models; the same knobs as `spec_texts`."""
    return spec_texts(**knobs).map(lambda text: nlc.loads(text, "<random>"))


# ---- inputs ------------------------------------------------------------------------------


def lengths(min_length: int = 1, max_length: int = 16, periods: tuple[int, ...] = (2, 3, 4)):
    """Sequence lengths in [min_length, max_length], often not a multiple of any of `periods`."""
    if min_length < 1 or max_length < min_length:
        raise ValueError("need 1 <= min_length <= max_length")
    awkward = [n for n in range(min_length, max_length + 1) if all(n % p for p in periods if p > 1)]
    base = st.integers(min_length, max_length)
    return st.one_of(st.sampled_from(awkward), base) if awkward else base


def inputs(vocab: int = 256, min_batch: int = 1, max_batch: int = 2, min_length: int = 1, max_length: int = 16,
           periods: tuple[int, ...] = (2, 3, 4)):
    """Token batches: LongTensor [B, T] with B in [min_batch, max_batch] and T from `lengths(...)`."""
    import torch

    @st.composite
    def _tokens(draw):
        b = draw(st.integers(min_batch, max_batch))
        t = draw(lengths(min_length, max_length, periods))
        flat = draw(st.lists(st.integers(0, vocab - 1), min_size=b * t, max_size=b * t))
        return torch.tensor(flat, dtype=torch.long).reshape(b, t)

    return _tokens()
