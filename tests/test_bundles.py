"""Bundles: closed-form levels that learn alike are stacked into one state (nlc.codegen.emit, nlc.runtime.bundle).

Each spec below bundles two or more levels (the generated source says so) and must compute what
the reference interpreter computes, what the sequential kernels (which bundle nothing) compute,
and the same in streamed pieces: momentum with its carried buffer and gates known before the loop
(their coefficients hoisted, then tiled), a bundle slower than the chunk (its chunks pending until
its period ends), and reads of members at different points of a chunk (waves of some members only,
rows not consecutive), next to a level with other gates that stays alone.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime import bundle as rt_bundle
from nlc.testing import properties as P

MOMENTUM = """
model m(dim = 8, chunk = 4) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    let lr = sigmoid(linear(h, 1)) * 0.1
    let keep = 1 - sigmoid(linear(h, 1)) * 0.1
    let beta = sigmoid(linear(h, 1))
    level a { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, linear(h, dim))
              objective l2 update momentum(beta = beta) lr lr retain keep period chunk tokens online }
    level c { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, h)
              objective l2 update momentum(beta = beta) lr lr retain keep period chunk tokens online }
    out = a(h) + c(linear(h, dim))
  }
}
"""

SLOW = """
model m(dim = 8, chunk = 4) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    let v = linear(h, dim)
    let eta = sigmoid(linear(h, 1)) * 0.1
    level a { state linear(dim, dim) init zeros context (k, v) objective l2 update gd lr eta period 8 tokens online }
    level c { state linear(dim, dim) init zeros context (k, h) objective l2 update gd lr eta period 8 tokens online }
    level d { state linear(dim, dim) init zeros context (k, v) objective l2 update gd lr eta period 8 tokens online }
    out = a(h) + c(h) + d(v)
  }
}
"""

# m_1 and m_3 read first (h and k); m_2 reads what m_1 answered; the values are the members' own reads (as Hope's);
# `alone` has other gates and stays out of the bundle
WAVES = """
model m(dim = 8, chunk = 4) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    let eta = sigmoid(linear(h, 1)) * 0.1
    let keep = 1 - sigmoid(linear(h, 1)) * 0.05
    let first = m_1(h) + m_3(k)
    let second = m_2(l2norm(first))
    level m_1 { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, m_1(second))
                objective l2 update dgd lr eta retain keep period chunk tokens online }
    level m_2 { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, m_2(first))
                objective l2 update dgd lr eta retain keep period chunk tokens online }
    level m_3 { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, h)
                objective l2 update dgd lr eta retain keep period chunk tokens online }
    level alone { state mlp(dim, 8, depth = 2, residual = true) init learned context (k, h)
                  objective l2 update dgd lr eta period chunk tokens online }
    out = second + alone(k)
  }
}
"""

SPECS = {"momentum": MOMENTUM, "slow": SLOW, "waves": WAVES}


def _source(text: str) -> str:
    return nlc.generate(nlc.loads(text))


@pytest.mark.parametrize("name", SPECS)
def test_the_levels_are_bundled(name):
    src = _source(SPECS[name])
    assert "rt_bundle.stack([" in src and "rt_bundle.split(" in src


def test_waves_read_some_members_and_the_lone_level_stays_apart():
    src = _source(WAVES)
    assert "rt_bundle.stack([m_1, m_2, m_3])" in src and "alone_bundle" not in src
    assert "rt_bundle.take(m_1_bundle, (0, 2), 3)" in src  # m_1(h), m_3(h): rows not consecutive
    assert "rt_bundle.take(m_1_bundle, (1,), 3)" in src  # m_2 reads after them


@pytest.mark.parametrize("name", SPECS)
def test_bundled_levels_match_the_reference(name):
    P.check_matches_reference(nlc.loads(SPECS[name]), tokens=torch.randint(0, 256, (2, 19)))


@pytest.mark.parametrize("name", SPECS)
def test_bundled_levels_match_the_sequential_kernels(name):
    P.check_chunked_equals_sequential(nlc.loads(SPECS[name]), tokens=torch.randint(0, 256, (2, 16)))


@pytest.mark.parametrize("name", SPECS)
def test_bundled_levels_stream(name):
    P.check_streaming(nlc.loads(SPECS[name]), tokens=torch.randint(0, 256, (2, 16)))


@pytest.mark.parametrize("name", ["momentum", "waves"])
def test_every_bundled_field_takes_effect(name):
    P.check_fields_live(nlc.loads(SPECS[name]))


def test_stack_split_take_tile():
    a, b, c = ({"W": torch.full((2, 3, 3), float(i))} for i in range(3))
    s = rt_bundle.stack([a, b, c])
    assert s["W"].shape == (6, 3, 3)
    assert [p["W"][0, 0, 0].item() for p in rt_bundle.split(s, 3)] == [0.0, 1.0, 2.0]
    assert rt_bundle.take(s, (0, 2), 3)["W"][:, 0, 0].tolist() == [0.0, 0.0, 2.0, 2.0]
    assert rt_bundle.take(s, (1, 2), 3)["W"].data_ptr() == s["W"][2:].data_ptr()  # consecutive rows: a view
    x = torch.arange(4.0).view(2, 2, 1)
    assert rt_bundle.tile(x, 3).shape == (6, 2, 1) and torch.equal(rt_bundle.tile(x, 3)[4:], x)
    assert rt_bundle.tile(0.5, 3) == 0.5 and rt_bundle.tile(torch.tensor(0.5), 3).dim() == 0


# ---- random bundles: hypothesis draws the members, their rule, state, period, gates, values and reads ----


@st.composite
def bundled_specs(draw) -> str:
    """A block whose levels share a key, gates, rule, state and period (so they bundle), with values and
    reads drawn: projections, the input, a member's own read (Hope's self-generated values) or another
    member's; reads at h, at the key, or at what another member answered (waves of some members)."""
    n = draw(st.integers(2, 4))
    rule = draw(st.sampled_from(["gd", "momentum(beta = beta)", "dgd"]))
    state = draw(st.sampled_from(["linear(dim, dim)", "mlp(dim, 8, depth = 2, residual = true)"]))
    period = draw(st.sampled_from(["chunk", "2 * chunk"]))
    lr = draw(st.sampled_from(["0.05", "sigmoid(linear(h, 1)) * 0.1"]))
    keep = draw(st.sampled_from(["1", "0.99", "1 - sigmoid(linear(h, 1)) * 0.05"]))
    names = [f"m_{i}" for i in range(n)]
    levels, reads = [], []
    for i, name in enumerate(names):
        value = draw(st.sampled_from(["h", "linear(h, dim)", f"{name}(h)", f"{names[(i + 1) % n]}(k)"]))
        levels.append(f"    level {name} {{ state {state} init learned context (k, {value}) objective l2\n"
                      f"      update {rule} lr eta retain keep period {period} tokens online }}")
        at = draw(st.sampled_from(["h", "k", *(f"l2norm(r_{j})" for j in range(i))]))
        reads.append(f"    let r_{i} = {name}({at})")
    beta = "    let beta = sigmoid(linear(h, 1))\n" if rule.startswith("momentum") else ""
    return ("model m(dim = 8, chunk = 4) {\n  block b {\n    let h = rmsnorm(x)\n"
            "    let k = l2norm(linear(h, dim))\n"
            f"    let eta = {lr}\n    let keep = {keep}\n{beta}" + "\n".join(levels) + "\n" + "\n".join(reads)
            + "\n    out = " + " + ".join(f"r_{i}" for i in range(n)) + "\n  }\n}\n")


@settings(max_examples=25, deadline=None)
@given(bundled_specs(), st.integers(1, 19))
def test_random_bundles_match_the_reference_and_the_sequential_kernels(text, length):
    assert "rt_bundle.stack([" in _source(text)
    tokens = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(length))
    P.check_matches_reference(nlc.loads(text), tokens=tokens)
    P.check_chunked_equals_sequential(nlc.loads(text), tokens=tokens)
