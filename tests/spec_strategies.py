"""Seeds and hypothesis strategies for the front-end property tests.

Seeds: every examples/*.nl that exists when the tests are collected, plus inline
specs (so the tests never depend on one example). Strategies: mutations of seed
text (tokens and characters deleted, duplicated, swapped; keywords, punctuation,
unicode, huge numbers and deep nesting inserted), random YAML, and random *valid*
programs built as source text (well-formed by construction).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hypothesis import strategies as st

import nlc
from nlc import ir
from nlc.printer import print_expr

from specs import CMS, SGD, TITANS, TITANS_YAML

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def example_paths() -> list[Path]:
    """Return every examples/*.nl, sorted (whatever exists now)."""
    return sorted(EXAMPLES.glob("*.nl"))


# ---- inline specs (canonical: `nlc fmt` leaves them as they are) -----------------------

MISC = """\
# A bit of everything the grammar has (inline test spec, not a reference model).
model misc(dim = 32, heads = 4, window = 8, eps = 1e-08, scale = 2 ** -1, base = 4) {
  block attn {  # sliding-window attention
    let h = rmsnorm(x)
    out = linear(attention(h, heads = heads, window = window), dim) * scale
  }

  repeat 2 {
    block mem {
      let h = rmsnorm(x)  # normalise first
      let k = l2norm(linear(h, dim))
      let v = -linear(h, dim, bias = true)

      level fast {
        state linear(dim, dim)
        init zeros
        context (k, v)
        objective huber(delta = 0.5)
        update dgd
        lr learned(0.01)
        retain 1 - 0.001
        period base tokens
        online
      }

      # slow, and learns from the task loss
      level slow {
        state linear(dim, dim)
        init copy(fast)
        context loss
        objective lp(p = 3)
        update delta_momentum(beta = 0.9)
        retain 0.99
        period 4 * base steps
        debias
      }

      level frozen {
        state vector(dim)
        init identity
        context (k, 1)
        objective l2
        update gd
        period never
      }

      out = linear(concat(fast(k), slow(v)), dim) * (1.0 - eps) + frozen(h) ** 2 / 3
    }
  }
}
"""

ADAM = """\
# Adam as two moment memories (inline test spec).
optimizer adamish(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-08) {
  level moments {
    state like(param)
    init zeros
    context grad(loss)
    objective l2
    update adam(beta1 = beta1, beta2 = beta2, eps = eps)
    period 1 steps
  }

  level weights {
    state params
    init zeros
    context grad(loss)
    objective dot
    update moments
    lr lr
    period 1 steps
  }
}
"""

# The same optimizer in YAML (nlc/yaml_spec.py's shape), written by hand.
ADAM_YAML = """\
optimizer: adamish
params:
  lr: 0.001
  beta1: 0.9
  beta2: 0.999
  eps: 1e-08
body:
  - level moments:
      state: like(param)
      init: zeros
      context: grad(loss)
      objective: l2
      update: adam(beta1 = beta1, beta2 = beta2, eps = eps)
      period: 1 steps
  - level weights:
      state: params
      init: zeros
      context: grad(loss)
      objective: dot
      update: moments
      lr: lr
      period: "1 steps"
"""

MISC_YAML = """\
model: misc
params: {dim: 32, heads: 4, window: 8, eps: 1e-08, scale: 2 ** -1, base: 4}
body:
  - block attn:
      - let h: rmsnorm(x)
      - out: linear(attention(h, heads = heads, window = window), dim) * scale
  - repeat 2:
      - block mem:
          - let h: rmsnorm(x)
          - let k: l2norm(linear(h, dim))
          - let v: '-linear(h, dim, bias = true)'
          - level fast:
              state: linear(dim, dim)
              init: zeros
              context: (k, v)
              objective: huber(delta = 0.5)
              update: dgd
              lr: learned(0.01)
              retain: 1 - 0.001
              period: base tokens
              online: true
          - level slow:
              state: linear(dim, dim)
              init: copy(fast)
              context: loss
              objective: lp(p = 3)
              update: delta_momentum(beta = 0.9)
              retain: 0.99
              period: 4 * base steps
              debias: true
          - level frozen:
              state: vector(dim)
              init: identity
              context: (k, 1)
              period: never
          - out: "linear(concat(fast(k), slow(v)), dim) * (1.0 - eps) + frozen(h) ** 2 / 3"
"""

CANONICAL_INLINE = {"misc": MISC, "adamish": ADAM}
INLINE = {"titans": TITANS, "sgd": SGD, "cms": CMS, **CANONICAL_INLINE}
INLINE_YAML = {"titans": (TITANS_YAML, TITANS), "adamish": (ADAM_YAML, ADAM), "misc": (MISC_YAML, MISC)}


def seed_texts() -> list[str]:
    """Return the text of every example (that loads or not) and every inline spec."""
    return [p.read_text(encoding="utf-8") for p in example_paths()] + list(INLINE.values())


# ---- IR -> YAML (to get a YAML twin of every example) ----------------------------


def to_yaml(p: ir.Program) -> str:
    """Return a YAML spec that should load to the same IR as p."""

    def stmts(body) -> list:
        return [stmt(s) for s in body]

    def stmt(s) -> dict:
        if isinstance(s, ir.Let):
            return {f"let {s.name}": print_expr(s.value)}
        if isinstance(s, ir.Out):
            return {"out": print_expr(s.value)}
        if isinstance(s, ir.Block):
            return {f"block {s.name}": stmts(s.body)}
        if isinstance(s, ir.Repeat):
            return {f"repeat {print_expr(s.count)}": stmts(s.body)}
        fields = {k: print_expr(getattr(s, k)) for k in ("state", "init", "context", "objective", "update")}
        for k in ("lr", "retain"):
            if getattr(s, k) is not None:
                fields[k] = print_expr(getattr(s, k))
        per = s.period
        fields["period"] = "never" if per.unit is ir.PeriodUnit.NEVER else f"{print_expr(per.count)} {per.unit.value}"
        for flag in ir.LEVEL_FLAGS:
            if getattr(s, flag):
                fields[flag] = True
        return {f"level {s.name}": fields}

    doc = {p.kind.value: p.name}
    if p.params:
        doc["params"] = {q.name: print_expr(q.value) for q in p.params}
    doc["body"] = stmts(p.body)
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


# ---- mutations of text ----------------------------------------------------------------

TOKEN_RE = re.compile(
    r"#[^\n]*|\s+|[A-Za-z_][A-Za-z0-9_]*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?|\*\*|.", re.S)
NUMBER_RE = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

KEYWORDS = ["model", "optimizer", "let", "out", "block", "repeat", "level", "state", "init", "context",
            "objective", "update", "lr", "retain", "period", "tokens", "steps", "never", "online", "debias",
            "true", "false"]
BUILTIN_NAMES = ["x", "dim", "vocab", "grad", "param", "step", "loss", "params", "linear", "mlp", "vector",
                 "like", "learned", "zeros", "identity", "copy", "l2", "dot", "huber", "lp", "gd", "momentum",
                 "dgd", "muon", "delta_momentum", "adam", "silu", "sigmoid", "attention", "concat", "mean",
                 "newton_schulz", "conv", "l2norm", "rmsnorm", "swiglu", "sqrt", "exp", "abs"]
PUNCT = ["{", "}", "(", ")", ",", "=", "+", "-", "*", "/", "**", "#", ":", ";", "'", '"', ".", "\n", " ",
         "\t", "\r\n", "\x00", "\\", "@", "$", "[", "]", "==", "->"]
WEIRD_NUMBERS = ["1e999", "1" + "0" * 40, "0", "-1", "0.0", "1e-400", "9" * 5000, "4611686018427387904",
                 "4611686018427387905", "2 ** 62", "2 ** 10000", "1e308 * 10", "1 / 0", "0 / 0", "-0",
                 "4.5", ".5", "5.", "1e-08", "(-1) ** 0.5", "10 ** 400", "sqrt(-1)", "exp(1000)", "1_000",
                 "0x10", "1e", "٣"]
YAML_BITS = [": ", "- ", "&a ", "*a", "!!str ", "!!python/object:os.system ", "[", "]", "{", "}", "\t", "  ",
             "'", '"', "|\n", ">\n", "---\n", "...\n", "? ", "%YAML 1.1\n", "<<: ", "~", "null", "!!binary ",
             "*", "&"]


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def nest(draw, core: str) -> str:
    """Wrap `core` (an expression) in deep nesting of one of several kinds."""
    depth = draw(st.sampled_from([1, 2, 10, 63, 64, 65, 100, 1000, 10000]))
    kind = draw(st.sampled_from(["paren", "neg", "sum", "pow", "call", "mul", "tuple"]))
    if kind == "paren":
        return "(" * depth + core + ")" * depth
    if kind == "neg":
        return "- " * depth + core
    if kind == "sum":
        return " + ".join([core] * min(depth, 5000))
    if kind == "pow":
        return " ** ".join([core] * min(depth, 5000))
    if kind == "mul":
        return core + " * 1" * min(depth, 5000)
    if kind == "tuple":
        return "(" * depth + core + ", " + core + ")" * depth
    return "silu(" * depth + core + ")" * depth


def nest_statements(draw, text: str) -> str:
    """Wrap a `block ... { }` (or a `level`) in `repeat N {` or `block {` nesting, many deep."""
    starts = [m.start() for m in re.finditer(r"\b(block|level|repeat)\b", text)]
    if not starts:
        return text
    start = draw(st.sampled_from(starts))
    open_at = text.find("{", start)
    if open_at < 0:
        return text
    level, end = 0, None
    for i in range(open_at, len(text)):
        if text[i] == "{":
            level += 1
        elif text[i] == "}":
            level -= 1
            if level == 0:
                end = i + 1
                break
    if end is None:
        return text
    depth = draw(st.sampled_from([1, 2, 63, 64, 65, 200, 3000]))
    opener = draw(st.sampled_from(["repeat 1 {\n", "repeat 2 {\n", "block b {\n", "level l {\n"]))
    return text[:start] + opener * depth + text[start:end] + "\n}" * depth + text[end:]


@st.composite
def mutation(draw, text: str, yaml_mode: bool = False) -> str:
    """Apply one random mutation to text."""
    toks = tokens(text)
    ops = ["del_tok", "dup_tok", "swap_tok", "ins_tok", "del_chars", "ins_unicode", "number", "name",
           "nest", "truncate", "dup_line", "del_line", "swap_lines", "nest_stmt", "case"]
    op = draw(st.sampled_from(ops))

    def pos(n: int) -> int:
        return draw(st.integers(0, max(0, n - 1)))

    if op == "del_tok" and toks:
        i = pos(len(toks))
        del toks[i]
    elif op == "dup_tok" and toks:
        i = pos(len(toks))
        toks.insert(i, toks[i])
    elif op == "swap_tok" and len(toks) > 1:
        i, j = pos(len(toks)), pos(len(toks))
        toks[i], toks[j] = toks[j], toks[i]
    elif op == "ins_tok":
        pool = KEYWORDS + PUNCT + BUILTIN_NAMES + WEIRD_NUMBERS + (YAML_BITS if yaml_mode else [])
        word = draw(st.sampled_from(pool))
        sep = draw(st.sampled_from(["", " ", "\n"]))
        toks.insert(pos(len(toks) + 1), sep + word + sep)
    elif op == "del_chars" and text:
        i = pos(len(text))
        j = i + draw(st.integers(1, 20))
        return text[:i] + text[j:]
    elif op == "ins_unicode":
        i = pos(len(text) + 1)
        return text[:i] + draw(st.text(min_size=1, max_size=4)) + text[i:]
    elif op == "number":
        idx = [i for i, t in enumerate(toks) if NUMBER_RE.fullmatch(t)]
        if idx:
            toks[draw(st.sampled_from(idx))] = draw(st.sampled_from(WEIRD_NUMBERS))
    elif op == "name":
        idx = [i for i, t in enumerate(toks) if NAME_RE.fullmatch(t)]
        if idx:
            names = sorted({t for t in toks if NAME_RE.fullmatch(t)})
            toks[draw(st.sampled_from(idx))] = draw(st.sampled_from(names + KEYWORDS + BUILTIN_NAMES))
    elif op == "nest":
        idx = [i for i, t in enumerate(toks) if NAME_RE.fullmatch(t) or NUMBER_RE.fullmatch(t)]
        if idx:
            i = draw(st.sampled_from(idx))
            toks[i] = nest(draw, toks[i])
    elif op == "truncate" and text:
        return text[:pos(len(text))]
    elif op in ("dup_line", "del_line", "swap_lines"):
        lines = text.splitlines(True)
        if lines:
            i, j = pos(len(lines)), pos(len(lines))
            if op == "dup_line":
                lines.insert(i, lines[i])
            elif op == "del_line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
        return "".join(lines)
    elif op == "nest_stmt" and not yaml_mode:
        return nest_statements(draw, text)
    elif op == "case" and toks:
        i = pos(len(toks))
        toks[i] = toks[i].upper()
    return "".join(toks)


@st.composite
def mutated(draw, seeds: list[str], yaml_mode: bool = False, max_ops: int = 3) -> str:
    """A seed text with 1..max_ops random mutations."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, max_ops))):
        text = draw(mutation(text, yaml_mode))
    return text


# ---- random YAML ------------------------------------------------------------------------

_yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                          st.sampled_from(KEYWORDS + BUILTIN_NAMES + ["(k, v)", "16 tokens", "never",
                                                                      "linear(x, dim)", "x +"]))
_yaml_keys = st.one_of(st.text(max_size=12), st.sampled_from(
    ["model", "optimizer", "params", "body", "let a", "out", "block b", "repeat 2", "level m", "state",
     "init", "context", "objective", "update", "lr", "retain", "period", "online", "debias", "let", "block",
     "level", "repeat"]))
yaml_values = st.recursive(_yaml_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(_yaml_keys, c, max_size=4),
                           max_leaves=25)


@st.composite
def random_yaml(draw) -> str:
    """YAML text: a random document, often shaped like a spec."""
    kind = draw(st.sampled_from(["model", "optimizer", "other"]))
    if kind == "other":
        doc = draw(yaml_values)
    else:
        doc = {kind: draw(st.one_of(st.sampled_from(["m", "let", "1", ""]), _yaml_scalars))}
        if draw(st.booleans()):
            doc["params"] = draw(st.one_of(st.dictionaries(_yaml_keys, _yaml_scalars, max_size=3), yaml_values))
        doc["body"] = draw(st.one_of(st.lists(st.dictionaries(_yaml_keys, yaml_values, min_size=1, max_size=2),
                                              max_size=3), yaml_values))
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    except yaml.YAMLError:  # pragma: no cover - e.g. keys that safe_dump cannot represent
        return str(doc)


# ---- random valid programs, built as source text --------------------------------------

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
                                  "attention", "swiglu", "paren"]))
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
    init = draw(st.sampled_from(["learned", "zeros", "identity"]))
    context = draw(st.sampled_from(["kv", "loss"]))
    ctx = f"({t()}, {t()})" if context == "kv" else "loss"
    objective = draw(st.sampled_from(["l2", "dot", "huber", "huber(delta = 0.5)", "lp(p = 3)", "lp(3)"]))
    update = draw(st.sampled_from(["gd", "momentum", "dgd", "muon", "muon(beta = 0.9, steps = 3)", "delta_momentum",
                                   "adam", "adam(beta1 = 0.8)", "momentum(beta = GATE)",
                                   "delta_momentum(beta = GATE)"]))
    update = update.replace("GATE", g.gate(lets))
    # the task loss is known only after the forward pass: `context loss` levels count steps (E307)
    unit = draw(st.sampled_from(["tokens", "tokens", "steps", "never"] if context == "kv" else ["steps", "never"]))
    count = draw(st.sampled_from(["base", "2 * base", "4 * base", "base * 16"]))
    period = "never" if unit == "never" else f"{count} {unit}"
    fields = [f"state {state}", f"init {init}", f"context {ctx}", f"objective {objective}", f"update {update}"]
    has_retain = False
    if draw(st.booleans()):
        fields.append(f"lr {g.gate(lets)}")
    if draw(st.booleans()):
        fields.append(f"retain {g.gate(lets)}")
        has_retain = True
    fields.append(f"period {period}")
    if unit != "never" and draw(st.booleans()):
        fields.append("online")
    if has_retain and draw(st.booleans()):
        fields.append("debias")
    order = draw(st.permutations(fields)) if draw(st.integers(0, 3)) == 0 else fields
    lines = [f"level {name} {{{trailing()}"]
    for f in order:
        if g.comments and draw(st.integers(0, 5)) == 0:
            lines.append("  " + g.comment())
        lines.append(f"  {f}{trailing()}")
    lines.append("}")
    return lines


def load_or_none(text: str, path: str = "<string>"):
    """Return the program, or None on SpecError (anything else propagates)."""
    try:
        return nlc.loads(text, path)
    except nlc.SpecError:
        return None
