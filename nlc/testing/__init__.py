"""nlc.testing: property-based testing of level graphs and the models nlc compiles from them.

Strategies (hypothesis) draw random well-formed level graphs, their text and inputs;
properties are functions you call on your own spec; `nlc fuzz` runs them from the
command line. See docs/testing.md.

    from hypothesis import given
    import nlc.testing as nt

    @given(nt.programs(max_levels=2), nt.inputs(max_length=12))
    def test_compiled_matches_reference(program, tokens):
        nt.check_matches_reference(program, tokens)

    nt.check_all("examples/titans_lmm.nl", params={"dim": 8, "layers": 1})
"""

from nlc.testing.properties import (PROPERTIES, check_all, check_causal, check_chunked_equals_sequential,
                                    check_compiles, check_deterministic, check_fields_live, check_finite,
                                    check_matches_reference, check_no_dead_parameters, check_round_trip,
                                    check_streaming, default_tokens, find_dead_fields, run_property)

# The strategies need hypothesis, an optional dependency (the `test` extra): they load on first use, so
# that the properties (and `nlc` itself, whose `fuzz` command lives in nlc.testing) work without it.
_STRATEGIES = ("inputs", "lengths", "programs", "spec_texts", "valid_programs")


def __getattr__(name: str):
    if name in _STRATEGIES:
        from nlc.testing import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module 'nlc.testing' has no attribute {name!r}")


__all__ = [
    "PROPERTIES", "check_all", "check_causal", "check_chunked_equals_sequential", "check_compiles",
    "check_deterministic", "check_fields_live", "check_finite", "check_matches_reference", "check_no_dead_parameters",
    "check_round_trip", "check_streaming", "default_tokens", "find_dead_fields", "inputs", "lengths", "programs", "run_property",
    "spec_texts", "valid_programs",
]
