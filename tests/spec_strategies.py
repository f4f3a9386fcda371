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
        objective dot
        update momentum(beta = 0.9)
        retain 0.99
        period 4 * base steps
      }

      level frozen {
        state vector(dim)
        init identity
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
              objective: dot
              update: momentum(beta = 0.9)
              retain: 0.99
              period: 4 * base steps
          - level frozen:
              state: vector(dim)
              init: identity
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


# ---- random valid programs, built as source text (public: nlc.testing) ----------------

from nlc.testing import valid_programs  # noqa: E402,F401 - re-exported for the front-end tests


def load_or_none(text: str, path: str = "<string>"):
    """Return the program, or None on SpecError (anything else propagates)."""
    try:
        return nlc.loads(text, path)
    except nlc.SpecError:
        return None
