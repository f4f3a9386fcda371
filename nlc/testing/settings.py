"""Hypothesis profiles for nlc's property tests: `ci` (small, the default), `thorough`, `dev`.

The profile comes from the environment variable NLC_HYPOTHESIS_PROFILE:

    NLC_HYPOTHESIS_PROFILE=thorough pytest tests/test_testing.py

`load_profile()` registers the profiles and loads the selected one (tests/conftest.py
calls it). The model properties cost very different amounts (the reference
interpreter runs token by token), so each has its own number of examples per
profile: `for_property(name)` returns the settings to decorate a test with.

    from hypothesis import given
    from nlc.testing.settings import for_property

    @for_property("matches_reference")
    @given(programs(), inputs())
    def test_it(program, tokens): ...
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["ENV_VAR", "EXAMPLES", "PROFILES", "current_profile", "for_property", "load_profile",
           "register_profiles"]

ENV_VAR = "NLC_HYPOTHESIS_PROFILE"
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# the default number of examples of each profile (front-end properties use it as it is)
PROFILES = {
    # under CI (CI=true) the examples are derandomised, as in hypothesis's own `ci` profile: a
    # submission lands or not on its own merits, and new cases are found by local runs and `nlc fuzz`
    "ci": dict(max_examples=60, deadline=None, print_blob=True, suppress_health_check=_SLOW_OK,
               derandomize=bool(os.environ.get("CI"))),
    "thorough": dict(max_examples=2000, deadline=None, print_blob=True, suppress_health_check=_SLOW_OK),
    "dev": dict(max_examples=10, deadline=None, suppress_health_check=_SLOW_OK),
}

# examples per model property and profile (ci: the whole of tests/test_testing.py in well under
# two minutes on two cores, with dim 8, one block or two, and sequences of at most 16 tokens)
EXAMPLES = {
    "ci": {"compiles": 25, "matches_reference": 8, "causal": 8, "streaming": 12, "chunked_equals_sequential": 15,
           "round_trip": 40, "deterministic": 15, "finite": 20, "no_dead_parameters": 20, "defects": 80,
           "all": 3, "names": 15, "accepted_builds": 6, "fields_live": 3},
    "thorough": {"compiles": 500, "matches_reference": 200, "causal": 200, "streaming": 300,
                 "chunked_equals_sequential": 400, "round_trip": 1000, "deterministic": 300, "finite": 400,
                 "no_dead_parameters": 400, "defects": 2000, "all": 50, "names": 300, "accepted_builds": 300,
                 "fields_live": 50},
    "dev": {"compiles": 5, "matches_reference": 3, "causal": 3, "streaming": 3, "chunked_equals_sequential": 3,
            "round_trip": 5, "deterministic": 3, "finite": 3, "no_dead_parameters": 3, "defects": 10, "all": 1,
            "names": 3, "accepted_builds": 3, "fields_live": 1},
}


def register_profiles() -> None:
    """Register the `ci`, `thorough` and `dev` profiles with hypothesis (idempotent)."""
    for name, kw in PROFILES.items():
        settings.register_profile(name, **kw)


def current_profile() -> str:
    """The profile selected by NLC_HYPOTHESIS_PROFILE (default `ci`)."""
    name = os.environ.get(ENV_VAR, "ci")
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={name!r}: the profiles are {', '.join(PROFILES)}")
    return name


def load_profile(name: str | None = None) -> str:
    """Register the profiles and load `name` (default: the one NLC_HYPOTHESIS_PROFILE selects)."""
    register_profiles()
    name = name or current_profile()
    settings.load_profile(name)
    return name


def for_property(name: str, profile: str | None = None) -> settings:
    """Settings for a test of the model property `name` (a key of EXAMPLES[profile])."""
    register_profiles()
    profile = profile or current_profile()
    return settings(settings.get_profile(profile), max_examples=EXAMPLES[profile][name])
