"""Invalid level graphs: random valid specs with exactly one injected defect, and the property
that `nlc.check` reports the matching error code at the right span.

    from hypothesis import given
    from nlc.testing.defects import defective_specs, check_reports_defect

    @given(defective_specs())
    def test_defects_are_reported(defect):
        check_reports_defect(defect)

A `Defect` carries the broken text, the code the checker must report, and the
exact character range (and text) the diagnostic must point at. The defect is
injected into a program drawn by `nlc.testing.spec_texts`, using the spans of
its checked IR, so it lands in a real block next to real levels. Kinds:

| kind | code | what is injected | the span |
|---|---|---|---|
| period_nesting | E303 | a level whose period is not a multiple of the block's largest | its `period N tokens` |
| let_cycle | E310 | `let _c1 = _c2 + x`, `let _c2 = linear(_c1, dim)` | `_c2` in `_c1`'s definition |
| self_update | E310 | a level's `update` names the level itself | that name |
| key_width | E404 | a read of a level with a key twice as wide | the key |
| broadcast | E407 | `x + linear(x, 3)` | the whole sum |
| out_width | E406 | the block output concatenated with `x` | the output expression |
| unknown_name | E201 | a misspelt reference to a `let` or `x` | the misspelt name |
| unknown_function | E202 | `lienar(x, dim)` | `lienar` |
| self_copy | E311 | a level's `init copy(itself)` | that name |
| slower_optimizer | E306 | an optimizer level twice as slow as the level it updates | its name in `update` |
| debias_without_retain | E409 | `debias` on a level without `retain` | `debias` |
| online_frozen | E304 | `online` on a `period never` level | `online` |
| loss_in_tokens | E307 | a `context loss` level counted in `tokens` every token | its `period 1 tokens` |
| identity_not_square | E417 | `init identity` on a `linear(dim, 2 * dim)` state | `identity` |
| gate_not_scalar | E405 | `lr linear(x, dim)` | the gate |
| duplicate_let | E203 | a second `let` with an existing name | the second name |
| unused_let | W206 | a `let` nobody reads (a warning: the spec still loads) | its name |
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import assume
from hypothesis import strategies as st

import nlc
from nlc import ir
from nlc.api import check_with_params
from nlc.errors import Reporter
from nlc.passes.params import fold
from nlc.testing.strategies import spec_texts

__all__ = ["ALL_DEFECTS", "Defect", "check_reports_defect", "defective_specs", "inject"]

ALL_DEFECTS = {
    "period_nesting": "E303", "let_cycle": "E310", "self_update": "E310", "key_width": "E404",
    "broadcast": "E407", "out_width": "E406", "unknown_name": "E201", "unknown_function": "E202",
    "self_copy": "E311", "slower_optimizer": "E306", "debias_without_retain": "E409",
    "online_frozen": "E304", "loss_in_tokens": "E307", "identity_not_square": "E417",
    "gate_not_scalar": "E405", "duplicate_let": "E203", "unused_let": "W206",
}


@dataclass(frozen=True)
class Defect:
    """A spec with one injected defect and the diagnostic it must produce."""

    kind: str
    text: str  # the broken spec
    code: str  # the expected diagnostic code
    start: int  # the expected span: text[start:end]
    end: int
    description: str

    @property
    def span_text(self) -> str:
        return self.text[self.start:self.end]

    @property
    def line_col(self) -> tuple[int, int]:
        before = self.text[: self.start]
        return before.count("\n") + 1, self.start - (before.rfind("\n") + 1) + 1

    def __str__(self) -> str:
        line, col = self.line_col
        return (f"{self.kind} ({self.description}): expect {self.code} at {line}:{col} "
                f"`{self.span_text}`\n{self.text}")


class _Edit:
    """Edits of a text by original offsets; the expected span is tracked through earlier edits."""

    def __init__(self, text: str):
        self.text = text
        self.edits: list[tuple[int, int, str]] = []

    def replace(self, start: int, end: int, new: str) -> None:
        self.edits.append((start, end, new))

    def apply(self, marker_edit: int, marker_start: int, marker_end: int) -> tuple[str, int, int]:
        """Apply every edit; return the text and the span [marker_start, marker_end) *inside* the
        replacement text of edit number `marker_edit`, as offsets in the new text."""
        out, pos, shift = [], 0, 0
        span = None
        for i, (s, e, new) in sorted(enumerate(self.edits), key=lambda ie: ie[1][0]):
            out.append(self.text[pos:s])
            offset = sum(len(p) for p in out)
            if i == marker_edit:
                span = (offset + marker_start, offset + marker_end)
            out.append(new)
            pos = e
        out.append(self.text[pos:])
        assert span is not None
        return "".join(out), span[0], span[1]


def _line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


def _indent(text: str, offset: int) -> str:
    start = _line_start(text, offset)
    return text[start:offset] if text[start:offset].strip() == "" else " " * (offset - start)


def _blocks(prog: ir.Program) -> list[ir.Block]:
    return [b for _body, b in ir.scopes(prog) if b is not None]


def _out(block: ir.Block) -> ir.Out:
    return next(s for s in block.body if isinstance(s, ir.Out))


def _levels(block: ir.Block) -> list[ir.Level]:
    return [s for s in block.body if isinstance(s, ir.Level)]


def _period(lv: ir.Level, env) -> int | None:
    if lv.period.unit is ir.PeriodUnit.NEVER:
        return None

    return int(fold(lv.period.count, env, Reporter()))


def _insert_before_out(text: str, block: ir.Block, lines: list[str], marker_line: int, marker: str):
    """Insert `lines` (each indented like the block's `out`) before the out statement; return the
    edit and the marker's span within it."""
    out = _out(block)
    at = _line_start(text, out.span.start)
    ind = _indent(text, out.span.start)
    new = "".join(ind + line + "\n" for line in lines)
    within = sum(len(ind + line + "\n") for line in lines[:marker_line]) + len(ind) + lines[marker_line].index(marker)
    return at, new, within, within + len(marker)


def applicable(prog: ir.Program, env) -> dict[str, list]:
    """For each defect kind, the places (blocks or levels) it can be injected into."""
    blocks = _blocks(prog)
    levels = [(b, lv) for b in blocks for lv in _levels(b)]
    kv = [(b, lv) for b, lv in levels if isinstance(lv.context, ir.Tuple)]
    lets = {b.name: [s.name for s in b.body if isinstance(s, ir.Let)] for b in blocks}
    out = {
        "let_cycle": blocks, "broadcast": blocks, "out_width": blocks, "unknown_name": blocks,
        "unknown_function": blocks, "identity_not_square": blocks, "gate_not_scalar": blocks,
        "unused_let": blocks,
        "duplicate_let": [b for b in blocks if lets[b.name]],
        "period_nesting": [b for b in blocks if max((_period(lv, env) or 0 for lv in _levels(b)
                                                      if lv.period.unit is ir.PeriodUnit.TOKENS), default=0) > 1],
        # The update's arguments must not be a let's only reader: replacing the update would leave that
        # let unused, a second finding (W206) beside the one injected.
        "self_update": [(b, lv) for b, lv in levels if isinstance(lv.update, ir.Call) and "update" in lv.stated_fields()
                        and not {e.name for e in ir.walk(lv.update) if isinstance(e, ir.Ref)} & set(lets[b.name])],
        "key_width": [(b, lv) for b, lv in kv if lv.state.fn in ("linear", "mlp", "vector")],
        "self_copy": levels,
        "slower_optimizer": [(b, lv) for b, lv in levels if isinstance(lv.update, ir.Ref)
                             and lv.period.unit is ir.PeriodUnit.TOKENS],
        "debias_without_retain": [(b, lv) for b, lv in levels if lv.retain is None and not lv.debias
                                  and lv.period.unit is not ir.PeriodUnit.NEVER],  # a frozen one: E314
        "online_frozen": [(b, lv) for b, lv in levels if lv.period.unit is ir.PeriodUnit.NEVER and not lv.online],
        # (not a level in an `init reset` pair: counting it in tokens would also be E317)
        "loss_in_tokens": [(b, lv) for b, lv in levels if ir.learns_loss(lv)
                           and lv.period.unit is ir.PeriodUnit.STEPS and lv.name not in restarting(b)],
    }
    return {k: v for k, v in out.items() if v}


def restarting(block) -> set[str]:
    """The levels of a block in an `init reset(L)` pair, either side."""
    return {name for lv in _levels(block) if ir.restarts_from(lv) for name in (lv.name, ir.restarts_from(lv))}


def inject(text: str, kind: str, where, prog: ir.Program, env) -> Defect:
    """Inject one defect of `kind` at `where` (a block, or (block, level)) into valid spec text."""
    ed = _Edit(text)
    code = ALL_DEFECTS[kind]
    if isinstance(where, tuple):
        block, lv = where
    else:
        block, lv = where, None

    def before_out(lines, marker_line, marker, desc):
        at, new, s, e = _insert_before_out(text, block, lines, marker_line, marker)
        ed.replace(at, at, new)
        t, s2, e2 = ed.apply(0, s, e)
        return Defect(kind, t, code, s2, e2, desc)

    def replace_span(span_start, span_end, new, marker_start, marker_end, desc):
        ed.replace(span_start, span_end, new)
        t, s, e = ed.apply(0, marker_start, marker_end)
        return Defect(kind, t, code, s, e, desc)

    def field_end(level: ir.Level) -> int:
        """Offset of the line holding the level's closing brace."""
        close = text.rfind("}", level.span.start, level.span.end)
        return _line_start(text, close)

    if kind == "period_nesting":
        biggest = max(_period(v, env) for v in _levels(block) if v.period.unit is ir.PeriodUnit.TOKENS)
        n = biggest + 1
        lines = ["level _bad_period {", "  state vector(dim)", "  init identity", "  context (x, x)",
                 f"  period {n} tokens", "}"]
        return before_out(lines, 4, f"period {n} tokens", f"a level every {n} tokens beside one every {biggest}")
    if kind == "let_cycle":
        return before_out(["let _c1 = _c2 + x", "let _c2 = linear(_c1, dim)"], 0, "_c2",
                          "two lets defined in terms of each other")
    if kind == "self_update":
        sp = lv.update.span
        return replace_span(sp.start, sp.end, lv.name, 0, len(lv.name), f"`{lv.name}` updates itself")
    if kind == "key_width":
        key = "linear(x, 2 * dim)" if lv.state.fn != "vector" else "concat(x, x)"
        return before_out([f"let _wide = {lv.name}({key})"], 0, key, f"`{lv.name}` read with a key twice as wide")
    if kind == "broadcast":
        return before_out(["let _sum = x + linear(x, 3)"], 0, "x + linear(x, 3)", "a dim-wide plus a 3-wide value")
    if kind == "out_width":
        value = _out(block).value.span
        old = text[value.start:value.end]
        new = f"concat({old}, x)"
        return replace_span(value.start, value.end, new, 0, len(new), "the block output is 2 * dim wide")
    if kind == "unknown_name":
        lets = [s.name for s in block.body if isinstance(s, ir.Let)]
        base = lets[0] if lets else "x"
        typo = base + base[-1]
        return before_out([f"let _typo = linear({typo}, dim)"], 0, typo, f"`{typo}`, a typo of `{base}`")
    if kind == "unknown_function":
        return before_out(["let _fn = lienar(x, dim)"], 0, "lienar", "`lienar`, a typo of `linear`")
    if kind == "self_copy":
        sp = lv.init.span
        new = f"copy({lv.name})"
        return replace_span(sp.start, sp.end, new, 5, 5 + len(lv.name), f"`{lv.name}` copies its own initial state")
    if kind == "slower_optimizer":
        opt = lv.update.name
        other = next(v for v in _levels(block) if v.name == opt)
        p = _period(lv, env)  # the updated level's: a level driving it may be faster than it
        ps = other.field_span("period")
        ed.replace(ps.start, ps.end, f"period {2 * p} tokens")
        sp = lv.update.span
        ed.replace(sp.start, sp.end, opt)  # unchanged: the marker
        t, s, e = ed.apply(1, 0, len(opt))
        return Defect(kind, t, code, s, e, f"`{opt}` ({2 * p} tokens) updates `{lv.name}` ({p} tokens)")
    if kind in ("debias_without_retain", "online_frozen"):  # a flag line added at the end of the level
        flag = kind.split("_")[0]
        at = field_end(lv)
        ind = _indent(text, lv.span.start) + "  "
        desc = (f"`debias` on `{lv.name}` without `retain`" if flag == "debias"
                else f"`online` on the frozen level `{lv.name}`")
        return replace_span(at, at, f"{ind}{flag}\n", len(ind), len(ind) + len(flag), desc)
    if kind == "loss_in_tokens":
        ps = lv.field_span("period")
        new = "period 1 tokens"  # a one-token chunk holds no prediction whose answer it has read
        return replace_span(ps.start, ps.end, new, 0, len(new), f"`{lv.name}` learns from the loss every token")
    # an added level learns at the block's slowest in-context period: a faster one would change which
    # level is the block's fastest (a `read current` level must be: E424), a new period might not nest
    slowest = max((_period(v, env) for v in _levels(block) if v.period.unit is ir.PeriodUnit.TOKENS
                   and not ir.learns_loss(v)), default=1)
    if kind == "identity_not_square":
        lines = ["level _not_square {", "  state linear(dim, 2 * dim)", "  init identity",
                 "  context (x, linear(x, 2 * dim))", f"  period {slowest} tokens", "}"]
        return before_out(lines, 2, "identity", "`identity` on a dim -> 2 * dim memory")
    if kind == "gate_not_scalar":
        lines = ["level _gated {", "  state vector(dim)", "  init identity", "  context (x, x)",
                 "  lr linear(x, dim)", f"  period {slowest} tokens", "}"]
        return before_out(lines, 4, "linear(x, dim)", "a dim-wide learning rate")
    if kind == "duplicate_let":
        name = next(s.name for s in block.body if isinstance(s, ir.Let))
        return before_out([f"let {name} = x"], 0, name, f"`{name}` defined twice")
    if kind == "unused_let":
        return before_out(["let unused_value = x"], 0, "unused_value", "a let nobody reads")
    raise ValueError(f"unknown defect kind {kind!r}; known: {', '.join(ALL_DEFECTS)}")


@st.composite
def defective_specs(draw, kinds=tuple(ALL_DEFECTS), **program_knobs) -> Defect:
    """A random valid spec (`spec_texts(**program_knobs)`) with exactly one defect of one of `kinds`."""
    bad = set(kinds) - set(ALL_DEFECTS)
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {sorted(ALL_DEFECTS)}, not {sorted(bad)}")
    knobs = {"roles": ("memory", "optimizer", "cms", "frozen"), **program_knobs}
    text = draw(spec_texts(**knobs))
    prog = nlc.loads(text, "<defect>")
    env = check_with_params(prog).params
    places = {k: v for k, v in applicable(prog, env).items() if k in kinds}
    if not places:
        assume(False)
    kind = draw(st.sampled_from(sorted(places)))
    where = draw(st.sampled_from(places[kind]))
    return inject(text, kind, where, prog, env)


def check_reports_defect(defect: Defect, first: bool = True) -> None:
    """`nlc.check` rejects the text with the defect's code at exactly its span (and, with `first`,
    that diagnostic comes first: the defect is what the user reads about)."""
    try:
        diags = nlc.check(nlc.loads(defect.text, "<defect>"))  # loads: only warnings, if any
    except nlc.SpecError as e:
        diags = list(e.diagnostics)
    if not diags:
        raise AssertionError(f"the spec loads without an error or a warning, but it has a defect: {defect}")
    hits = [d for d in diags if d.code == defect.code and d.span is not None
            and (d.span.start, d.span.end) == (defect.start, defect.end)]
    shown = "\n\n".join(d.render() for d in diags)
    if not hits:
        raise AssertionError(f"expected {defect.code} at `{defect.span_text}` ({defect.line_col[0]}:"
                             f"{defect.line_col[1]}) for {defect.kind} ({defect.description}); got:\n{shown}\n"
                             f"--- spec:\n{defect.text}")
    if first and diags[0] is not hits[0]:
        raise AssertionError(f"{defect.code} at `{defect.span_text}` is reported, but not first; got:\n{shown}\n"
                             f"--- spec:\n{defect.text}")
