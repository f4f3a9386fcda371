"""Random valid program *text* for front-end properties (printer round trips, parser robustness).

Well-formed by construction: every name is defined once and used, widths agree,
periods nest. Unlike `nlc.testing.programs`, these texts exercise the front end:
comments anywhere, fields in any order, numbers of every size (1e16, 2**40),
`dim` of 64; they are not meant to be built into models.
"""

from __future__ import annotations

from hypothesis import strategies as st

from nlc.rules import DEFAULT, RULES, step_level_rules

__all__ = ["valid_programs"]

NUMBERS = [0.1, 0.5, 1e-08, 2, 3, 1.5, 0.01, 1e-3, 2.5e-4, 10, 1e16, 0.9]
UNARY = ["silu", "sigmoid", "l2norm", "rmsnorm", "tanh", "relu", "gelu", "softplus"]


def _num(draw) -> str:
    v = draw(st.one_of(st.sampled_from(NUMBERS),
                       st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False),
                       st.integers(1, 2**40)))
    return repr(v) if isinstance(v, float) else str(v)


class _Gen:
    """State while generating one program: names in scope, comments on/off."""

    def __init__(self, draw, dim_name: str, dim: int, comments: bool):
        self.draw = draw
        self.dim_name = dim_name
        self.dim = dim
        self.comments = comments
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def sp(self) -> str:
        """Whitespace between tokens: a space, or sometimes a comment and a newline."""
        if self.comments and self.draw(st.integers(0, 40)) == 0:
            return "  " + self.comment() + "\n"
        return " "

    def comment(self) -> str:
        body = self.draw(st.text(st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)),
                                 max_size=12))
        return "#" + body

    def tensor(self, names: list[str], depth: int) -> str:
        """An expression of width dim over x and the names (all dim wide)."""
        d = self.draw
        leaves = ["x", *names]
        if depth <= 0 or d(st.integers(0, 3)) == 0:
            return d(st.sampled_from(leaves))
        sub = lambda: self.tensor(names, depth - 1)  # noqa: E731
        kind = d(st.sampled_from(["unary", "conv", "linear", "bin", "scale", "pow", "neg", "gate", "concat",
                                  "slice", "attention", "swiglu", "paren"]))
        s = self.sp
        D = self.dim_name
        if kind == "unary":
            return f"{d(st.sampled_from(UNARY))}({sub()})"
        if kind == "conv":
            return f"conv({sub()}, {d(st.integers(1, 4))})" if d(st.booleans()) else f"conv({sub()})"
        if kind == "linear":
            bias = ", bias = true" if d(st.booleans()) else ""
            return f"linear({s()}{sub()},{s()}{D}{bias})"
        if kind == "bin":
            return f"{sub()}{s()}{d(st.sampled_from(['+', '-', '*', '/']))}{s()}{sub()}"
        if kind == "scale":
            n = _num(d)
            return f"{sub()} * {n}" if d(st.booleans()) else f"{n} * {sub()}"
        if kind == "pow":
            return f"({sub()}) ** {d(st.sampled_from(['2', '0.5', '3', '-1', '1e-08']))}"
        if kind == "neg":
            return f"-{sub()}"
        if kind == "gate":
            g = d(st.sampled_from([f"sigmoid(linear({sub()}, 1))", f"mean({sub()})"]))
            return f"{sub()} * {g}"
        if kind == "concat":
            return f"linear(concat({sub()}, {sub()}), {D})"
        if kind == "slice":
            cut = d(st.integers(1, self.dim - 1)) if self.dim > 1 else 0
            if cut and d(st.booleans()):  # the features rotated: slices put back together, dim wide
                t = sub()
                return f"concat(slice({t}, {cut}, {D}), slice({t}, 0, {cut}))"
            start = d(st.integers(0, self.dim - 1))
            return f"linear(slice({sub()}, {start}, {d(st.integers(start + 1, self.dim))}), {D})"
        if kind == "attention":
            heads = d(st.sampled_from([h for h in (1, 2, 4, 8) if self.dim % h == 0]))
            window = d(st.sampled_from(["", ", window = 4", ", window = 0, segment = 8", ", persistent = 2"]))
            return f"attention({sub()}, heads = {heads}{window})"
        if kind == "swiglu":
            return f"swiglu({sub()}, {d(st.sampled_from(['2 * ' + D, '16', D]))})"
        return f"({sub()})"

    def gate(self, names: list[str]) -> str:
        d = self.draw
        t = lambda: self.tensor(names, 2)  # noqa: E731
        return d(st.sampled_from([
            _num(d), "learned(0.01)", f"sigmoid(linear({t()}, 1))", f"sigmoid(linear({t()}, 1)) * 0.1",
            f"1 - sigmoid(linear({t()}, 1)) * 0.01", f"mean({t()})", "0.99", "1 - 1e-3",
        ]))


@st.composite
def valid_programs(draw) -> str:
    """Source text of a random, valid nlc model (well-formed by construction)."""
    dim = draw(st.sampled_from([8, 16, 32, 64]))
    comments = draw(st.booleans())
    use_dim_param = draw(st.booleans())
    dim_name = "dim"
    base = draw(st.sampled_from([1, 2, 4]))
    g = _Gen(draw, dim_name, dim, comments)
    params = []
    if use_dim_param:
        params.append(f"dim = {dim}")
    else:
        dim = 64  # the implicit default
        g.dim = dim
    params.append(f"base = {base}")
    if draw(st.booleans()):
        params.append(f"eps = {_num(draw)}")
    header = f"model {draw(st.sampled_from(['m', 'net', 'titans_like', 'hope_like']))}({', '.join(params)}) {{"
    lines = []
    if comments and draw(st.booleans()):
        lines.append(g.comment())
    lines.append(header + ("  " + g.comment() if comments and draw(st.booleans()) else ""))
    used_names: set[str] = set()
    for b in range(draw(st.integers(1, 3))):
        block = _block(draw, g, f"b{b}", base, used_names)
        if draw(st.integers(0, 2)) == 0:
            count = draw(st.sampled_from(["2", "base", "1", "2 * base"]))
            block = [f"repeat {count} {{"] + ["  " + x for x in block] + ["}"]
        lines += ["  " + x for x in block]
    if comments and draw(st.booleans()):
        lines.append("  " + g.comment())
    lines.append("}")
    return "\n".join(lines) + "\n"


def _block(draw, g: _Gen, name: str, base: int, used_names: set[str]) -> list[str]:
    body: list[str] = []
    lets: list[str] = []
    unused: list[str] = []
    levels: list[tuple[str, str]] = []  # (name, state kind)

    def maybe_comment():
        if g.comments and draw(st.integers(0, 3)) == 0:
            body.append(g.comment())

    def trailing() -> str:
        return ("  " + g.comment()) if g.comments and draw(st.integers(0, 4)) == 0 else ""

    for _ in range(draw(st.integers(0, 3))):
        maybe_comment()
        n = g.fresh("a")
        body.append(f"let {n} = {g.tensor(lets, draw(st.integers(0, 4)))}{trailing()}")
        lets.append(n)
        unused.append(n)
    n_levels = draw(st.integers(0, 2))
    for _ in range(n_levels):
        maybe_comment()
        lv = g.fresh("mem")
        body += _level(draw, g, lv, lets, levels, base, trailing)
        levels.append((lv, body[-1]))
    # reads of every level and every let join the output (nothing is unused)
    terms = []
    for lv, _ in levels:
        terms.append(f"{lv}({g.tensor(lets, 2)})")
    for n in lets:
        terms.append(n)
    if not terms:
        terms.append(g.tensor([], 3))
    out = f" {draw(st.sampled_from(['+', '-']))} ".join(terms[:8]) if len(terms) <= 8 else " + ".join(terms)
    if draw(st.booleans()):
        out = f"linear({out}, {g.dim_name})"
    maybe_comment()
    body.append(f"out = {out}{trailing()}")
    lines = [f"block {name} {{{trailing()}"] + ["  " + x for x in body]
    if g.comments and draw(st.integers(0, 4)) == 0:
        lines.append("  " + g.comment())
    lines.append("}")
    return lines


def _level(draw, g: _Gen, name: str, lets: list[str], levels, base: int, trailing) -> list[str]:
    D = g.dim_name
    t = lambda depth=2: g.tensor(lets, depth)  # noqa: E731
    kind = draw(st.sampled_from(["mlp", "mlp2", "linear", "vector", "like"] if levels else
                                ["mlp", "mlp2", "linear", "vector"]))
    if kind == "mlp":
        state = f"mlp({D})"
    elif kind == "mlp2":
        depth = draw(st.integers(1, 3))
        res = draw(st.sampled_from(["true", "false"]))
        state = f"mlp({D}, {draw(st.sampled_from(['2 * ' + D, '4 * ' + D, '16']))}, depth = {depth}, residual = {res})"
    elif kind == "linear":
        state = f"linear({D}, {D})"
    elif kind == "vector":
        state = f"vector({D})"
    else:
        state = f"like({draw(st.sampled_from([lv for lv, _ in levels]))})"
    vector = kind == "vector" or state.startswith("like(")  # a like() may copy a vector's shape
    init = draw(st.sampled_from(["learned", "zeros", "identity"]))
    context = draw(st.sampled_from(["kv", "loss"]))
    ctx = f"({t()}, {t()})" if context == "kv" else "loss"
    objective = draw(st.sampled_from(["l2", "dot", "huber", "huber(delta = 0.5)", "lp(p = 3)", "lp(3)"]))
    update = draw(st.sampled_from([name + args for name, rule in RULES.items() for args in rule.samples]))
    update = update.replace("GATE", g.gate(lets))
    if vector and RULES[update.split("(")[0]].matrix_only:  # e.g. muon orthogonalises matrices (E419 on a vector)
        update = DEFAULT
    # the task loss is known only after the forward pass: `context loss` levels count steps (E307)
    unit = draw(st.sampled_from(["tokens", "tokens", "steps", "never"] if context == "kv" else ["steps", "never"]))
    count = draw(st.sampled_from(["base", "2 * base", "4 * base", "base * 16"]))
    period = "never" if unit == "never" else f"{count} {unit}"
    gate = lambda: g.gate(lets)  # noqa: E731
    if unit == "steps":  # what the training loop runs for a step level (nlc check: E308, E504)
        ctx = "loss"
        objective = "dot"  # the loop steps along the task loss gradient (E308 for any other)
        update = draw(st.sampled_from([name + args for name in step_level_rules() for args in RULES[name].samples
                                       if "GATE" not in args]))
        gate = lambda: draw(st.sampled_from(["0.01", "1 - 0.001", "0.5 * 0.1"]))  # noqa: E731
    fields = [f"state {state}", f"init {init}"]
    if unit != "never":  # a frozen level learns nothing: its learning fields would have no effect (E314)
        fields += [f"context {ctx}", f"objective {objective}", f"update {update}"]
        if draw(st.booleans()):
            fields.append(f"lr {gate()}")
        if draw(st.booleans()):
            fields.append(f"retain {gate()}")
        if draw(st.booleans()):
            fields.append("online")
    fields.append(f"period {period}")
    order = draw(st.permutations(fields)) if draw(st.integers(0, 3)) == 0 else fields
    lines = [f"level {name} {{{trailing()}"]
    for f in order:
        if g.comments and draw(st.integers(0, 5)) == 0:
            lines.append("  " + g.comment())
        lines.append(f"  {f}{trailing()}")
    lines.append("}")
    return lines


