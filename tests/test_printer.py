"""The printer (`nlc fmt`): round trip, idempotence, canonical examples, YAML twins.

Properties, for every example, every inline spec and random valid programs:
- `loads(print_program(p)) == p` (printing loses nothing the IR compares);
- `fmt(fmt(x)) == fmt(x)` (printing is idempotent, comments included);
- every comment of the source survives printing;
- examples/*.nl are already canonical (file text == printed text);
- a spec written in YAML loads to the same IR as the same spec in nlc text;
- `nlc fmt --to yaml` / `--to nl` convert both ways, comments kept where they were.
"""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nlc
from nlc.parser import _comment_tokens
from nlc.yaml_printer import print_yaml, scalar
from nlc.yaml_spec import yaml_comments

from spec_strategies import (CANONICAL_INLINE, INLINE, INLINE_YAML, example_paths, load_or_none,
                             seed_texts, tokens, valid_programs)

EXAMPLE_IDS = [p.name for p in example_paths()]


def fmt(text: str, path: str = "<string>") -> str:
    return nlc.print_program(nlc.loads(text, path))


def comments(text: str) -> list[str]:
    return sorted(c for _, _, c in _comment_tokens(text))


def assert_round_trip(text: str, path: str = "<string>") -> str:
    """Check round trip, idempotence and comment preservation; return the printed text."""
    p = nlc.loads(text, path)
    printed = nlc.print_program(p)
    again = nlc.loads(printed)
    assert again == p, f"print/reparse changed the program:\n{printed}"
    assert nlc.print_program(again) == printed, "printing is not idempotent"
    if not path.endswith((".yaml", ".yml")):
        assert comments(printed) == comments(text), "printing lost or changed comments"
    return printed


def _load_example(path):
    try:
        return nlc.load(path)
    except nlc.SpecError as e:  # another test reports the diagnostics; here we cannot go on
        pytest.skip(f"{path.name} does not load (see `nlc check {path}`):\n{e}")


# ---- examples and inline specs ----------------------------------------------------------


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_round_trips(path):
    _load_example(path)
    assert_round_trip(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_is_canonical(path):
    prog = _load_example(path)
    text = path.read_text(encoding="utf-8")
    assert nlc.print_program(prog) == text, f"{path.name} is not canonical: run `nlc fmt {path}`"


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_yaml_twin_loads_to_same_ir(path):
    prog = _load_example(path)
    assert nlc.loads(print_yaml(prog), path.stem + ".yaml") == prog


@pytest.mark.parametrize("name", sorted(INLINE))
def test_inline_spec_round_trips(name):
    assert_round_trip(INLINE[name])


@pytest.mark.parametrize("name", sorted(CANONICAL_INLINE))
def test_inline_spec_is_canonical(name):
    assert fmt(CANONICAL_INLINE[name]) == CANONICAL_INLINE[name]


@pytest.mark.parametrize("name", sorted(INLINE))
def test_inline_yaml_twin_loads_to_same_ir(name):
    prog = nlc.loads(INLINE[name])
    yaml_text = print_yaml(prog)
    assert nlc.loads(yaml_text, "twin.yaml") == prog
    assert nlc.loads(yaml_text, "twin", format="yaml") == prog


@pytest.mark.parametrize("name", sorted(INLINE_YAML))
def test_handwritten_yaml_equals_nlc(name):
    yaml_text, nl_text = INLINE_YAML[name]
    from_yaml = nlc.loads(yaml_text, f"{name}.yaml")
    assert from_yaml == nlc.loads(nl_text, f"{name}.nl")
    # the nlc text printed from YAML is the canonical text (comments aside)
    assert nlc.loads(nlc.print_program(from_yaml)) == from_yaml


def test_equality_ignores_comments_and_layout_but_not_content():
    text = CANONICAL_INLINE["misc"]
    squashed = " ".join(line.split("#")[0] for line in text.splitlines())
    assert nlc.loads(squashed) == nlc.loads(text)
    assert nlc.loads(text.replace("0.001", "0.002")) != nlc.loads(text)


@pytest.mark.parametrize("number", ["1e-08", "0.1", "1e+16", "2.5e-300", "4611686018427387904", "0.0", "1.0",
                                    "123456789.123456789", "5e-324", "1.7976931348623157e308"])
def test_numbers_print_back_to_the_same_value_and_type(number):
    text = f"model m(a = {number}) {{\n  block b {{\n    out = x * a\n  }}\n}}\n"
    p = nlc.loads(text)
    printed = assert_round_trip(text)
    value = p.params[0].value.value
    assert type(nlc.loads(printed).params[0].value.value) is type(value)


@pytest.mark.parametrize("expr", ["-(x + x)", "(-x) ** 2", "-x ** 2", "x ** 2 ** 3", "(x ** 2) ** 3",
                                  "x - (x - x)", "(x - x) - x", "x / (x * x)", "x * x / x", "-(-x)", "- - x",
                                  "x * -x", "(x + x) * (x - x)", "-x * x", "x * x ** -1"])
def test_parentheses_are_minimal_and_correct(expr):
    text = f"model m {{\n  block b {{\n    let a = {expr}\n    out = a\n  }}\n}}\n"
    try:
        nlc.loads(text)
    except nlc.SpecError:
        return  # not every string above is valid nlc; the ones that are must round-trip
    assert_round_trip(text)


# ---- random valid programs ----------------------------------------------------------------


@settings(max_examples=settings().max_examples * 2)
@given(valid_programs())
def test_random_valid_program_round_trips(text):
    assert_round_trip(text)


@given(valid_programs())
def test_random_valid_program_yaml_twin(text):
    prog = nlc.loads(text)
    assert nlc.loads(print_yaml(prog), "random.yaml") == prog


# ---- comments anywhere ---------------------------------------------------------------------

_comment_text = st.text(st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)), max_size=10)


@st.composite
def with_random_comments(draw):
    """A valid seed with `# ...` comments inserted between random tokens (still valid)."""
    text = draw(st.sampled_from(sorted(SEEDS_THAT_LOAD)))
    toks = tokens(text)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(toks)))
        toks.insert(i, f" #{draw(_comment_text)}\n")
    return "".join(toks)


SEEDS_THAT_LOAD = {t for t in seed_texts() if load_or_none(t) is not None}


@given(with_random_comments())
def test_comments_anywhere_survive_printing(text):
    assert_round_trip(text)


# ---- conversion between the two forms (nlc fmt --to) ---------------------------------------


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_converts_to_yaml_and_back_with_its_comments(path):
    """nl -> YAML -> nl gives the canonical text back, comments included, and the YAML is canonical too."""
    text = path.read_text()
    yaml_text = print_yaml(nlc.loads(text, path.name))
    assert comments(text), "the examples are commented: this test needs comments to keep"
    back = nlc.loads(yaml_text, path.stem + ".yaml")
    assert nlc.print_program(back) == text
    assert print_yaml(back) == yaml_text


@given(with_random_comments())
def test_comments_anywhere_survive_the_trip_through_yaml(text):
    assume(not re.search(r"[^\t\n -~\xa0-\U0010ffff]|[\x85\u2028\u2029]", text))  # escaped: the next test
    prog = nlc.loads(text)
    back = nlc.loads(print_yaml(prog), "random.yaml")
    assert back == prog and nlc.print_program(back) == nlc.print_program(prog)


def test_characters_yaml_cannot_hold_are_escaped_in_comments():
    prog = nlc.loads("# esc \x1b here\nmodel m {\n  block b {\n    out = x  # bell \x07\n  }\n}\n")
    printed = nlc.print_program(nlc.loads(print_yaml(prog), "e.yaml"))
    assert "# esc \\u001b here" in printed and "# bell \\u0007" in printed


@pytest.mark.parametrize("text", ["a: b", "x #y", "-", "- x", "[1]", "{a}", "'q'", '"q"', "true", "null", "",
                                  "&a", "*a", "!t", "%x", "@x", "`x", "| x", "> x", "? x", "a #", "1e3", "é ü"])
def test_a_scalar_reads_back_as_the_same_text(text):
    node = yaml.compose(f"k: {scalar(text)}", Loader=yaml.SafeLoader)
    assert node.value[0][1].value == text


def test_yaml_comments_are_found_outside_quotes_only():
    text = 'a: b  # one\n# two\nc: "x # not"  # three\nd: it\'s#not\n'
    assert [c for _, _, c in yaml_comments(text)] == ["# one", "# two", "# three"]


def test_trailing_yaml_comments_stay_on_their_lines():
    text = ("model: m\nbody:\n  - block b:  # the block\n      - let q: x  # a let\n"
            "      - level mem:  # the level\n          state: linear(dim, dim)  # a field\n"
            "          context: (q, x)\n          period: 1 tokens\n"
            "      # before out\n      - out: mem(q)\n# at the end\n")
    printed = nlc.print_program(nlc.loads(text, "c.yaml", dim=4))
    for line in ("block b {  # the block", "let q = x  # a let", "level mem {  # the level",
                 "state linear(dim, dim)  # a field", "    # before out\n    out = mem(q)", "  # at the end"):
        assert line in printed, printed
