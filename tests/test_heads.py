"""Multi-head memories (`heads h`, docs/design.md §1.7): h independent memories over equal slices.

The definition is a rewrite: a level with `heads h` computes exactly what h levels compute, each
over its slice of the keys, values and queries (`slice`), with its column of a per-head gate (or
the shared gate), its answers put side by side (`concat`). The property below writes both specs
for drawn memories, rules, objectives, gates, inits and periods, gives them the same parameters
(head i's initial state is level i's) and requires the same logits and gradients in float64, in
both back ends. Generated code batches the heads as rows (one read, one gradient, one rule for all
of them), so this also holds the batching to the definition.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime import heads as rt_heads
from nlc.testing import properties as P

DIM = 8


def _specs(heads: int, kind: str, rule: str, objective: str, init: str, period: int,
           widths: dict[str, int]) -> tuple[str, str]:
    """(the spec with `heads`, the same model written as `heads` levels over slices)."""
    d = DIM // heads

    def state(width: int) -> str:
        return f"linear({width}, {width})" if kind == "linear" else \
            f"mlp({width}, {2 * width}, depth = 2, residual = {'true' if kind == 'residual' else 'false'})"

    def gate(name: str, i: int | None) -> str:
        return name if i is None or widths[name] == 1 else f"slice({name}, {i}, {i + 1})"

    def update(i: int | None) -> str:
        return {"gd": "gd", "dgd": "dgd", "momentum": f"momentum(beta = {gate('beta', i)})"}[rule]

    def features(name: str, i: int | None) -> str:
        return name if i is None else f"slice({name}, {i * d}, {(i + 1) * d})"

    def level(name: str, i: int | None) -> str:
        return f"""
    level {name} {{
      state {state(DIM if i is None else d)}
      init {init}
      context ({features('k', i)}, {features('v', i)})
      objective {objective}
      update {update(i)}
      lr {gate('eta', i)}
      retain {gate('keep', i)}{f'''
      heads {heads}''' if i is None else ''}
      period {period} tokens
    }}"""

    lets = f"""
    let h = rmsnorm(x)
    let q = linear(h, dim)
    let k = l2norm(linear(h, dim))
    let v = linear(h, dim)
    let eta = sigmoid(linear(h, {widths['eta']})) * 0.5
    let keep = 1 - sigmoid(linear(h, {widths['keep']})) * 0.1
    let beta = sigmoid(linear(h, {widths['beta']}))"""
    reads = ", ".join(f"memory_{i}({features('q', i)})" for i in range(heads))
    one = f"model m(dim = {DIM}) {{\n  block b {{{lets}{level('memory', None)}\n    out = linear(memory(q), dim)\n  }}\n}}\n"
    many = (f"model m(dim = {DIM}) {{\n  block b {{{lets}" + "".join(level(f"memory_{i}", i) for i in range(heads))
            + f"\n    out = linear(concat({reads}), dim)\n  }}\n}}\n")
    return one, many


def _same_parameters(split_into_heads, one_per_level, heads: int) -> None:
    """Give the many-level model the multi-head model's parameters: level i starts as head i."""
    own = one_per_level.state_dict()
    given = {}
    for name, t in split_into_heads.state_dict().items():
        if ".memory_init." in name:
            for i in range(heads):
                given[name.replace(".memory_init.", f".memory_{i}_init.")] = t[i]
        else:
            given[name] = t
    assert given.keys() == own.keys(), sorted(given.keys() ^ own.keys())
    one_per_level.load_state_dict(given)


@settings(max_examples=12, deadline=None)
@given(heads=st.sampled_from([2, 4]), kind=st.sampled_from(["linear", "mlp", "residual"]),
       rule=st.sampled_from(["gd", "momentum", "dgd"]), objective=st.sampled_from(["l2", "dot", "huber(0.5)"]),
       init=st.sampled_from(["learned", "zeros", "identity"]), period=st.sampled_from([1, 2, 4]),
       per_head=st.fixed_dictionaries({g: st.booleans() for g in ("eta", "keep", "beta")}),
       backend=st.sampled_from(["compiled", "reference"]))
def test_heads_are_independent_memories_over_slices(heads, kind, rule, objective, init, period, per_head, backend):
    widths = {g: heads if each else 1 for g, each in per_head.items()}
    one, many = _specs(heads, kind, rule, objective, init, period, widths)
    kw = {"backend": "reference"} if backend == "reference" else {}
    torch.manual_seed(0)
    a = nlc.build(nlc.loads(one), **kw).double()
    b = nlc.build(nlc.loads(many), **kw).double()
    _same_parameters(a, b, heads)
    tokens = torch.randint(0, 256, (2, 9))
    ya, yb = a(tokens), b(tokens)
    torch.testing.assert_close(ya, yb, rtol=P.F64["rtol"], atol=P.F64["atol"])
    weights = torch.randn_like(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        if ".memory_init." in name:
            other = torch.stack([grads_b[name.replace(".memory_init.", f".memory_{i}_init.")].grad
                                 for i in range(heads)])
        else:
            other = grads_b[name].grad
        torch.testing.assert_close(p.grad, other, rtol=P.F64["rtol"], atol=1e-9, msg=lambda m: f"{name}: {m}")


MULTI_HEAD = _specs(4, "residual", "momentum", "l2", "learned", 4, {"eta": 4, "keep": 1, "beta": 4})[0]


def test_multi_head_level_batches_its_heads_in_generated_code():
    source = nlc.generate(nlc.loads(MULTI_HEAD))
    assert "rt_heads.split(k, 4)" in source and "rt_heads.merge(" in source
    assert "for " not in "".join(line for line in source.splitlines() if "rt_memory" in line)


@pytest.mark.parametrize("prop", ["check_matches_reference", "check_chunked_equals_sequential", "check_streaming",
                                  "check_causal", "check_round_trip", "check_no_dead_parameters"])
def test_multi_head_level_has_every_model_property(prop):
    getattr(P, prop)(MULTI_HEAD)


def test_streaming_state_keeps_the_heads_apart():
    """A multi-head level's streaming state is [batch, heads, ...], so that its first dimension is the
    batch like every other state's (and `init_state(B)` fits B rows of tokens)."""
    for backend in ({}, {"backend": "reference"}):
        model = nlc.build(nlc.loads(MULTI_HEAD), **backend)
        state = model.init_state(3)
        level = state["blocks"][0]["levels"]["memory"]
        weights = level["W"] if "W" in level else level["frozen"]
        assert {tuple(w.shape[:2]) for w in weights.values()} == {(3, 4)}
        _, state = model(torch.randint(0, 256, (3, 8)), state=state)
        level = state["blocks"][0]["levels"]["memory"]
        weights = level["W"] if "W" in level else level["frozen"]
        assert weights["W0"].shape == (3, 4, 2, 4)


def test_split_and_merge_are_inverse_and_head_minor():
    x = torch.arange(2 * 3 * 8.0).reshape(2, 3, 8)
    parts = rt_heads.split(x, 4)
    assert parts.shape == (8, 3, 2)
    torch.testing.assert_close(parts[1 * 4 + 2], x[1, :, 4:6])  # row b*h + i: head i of sequence b
    torch.testing.assert_close(rt_heads.merge(parts, 4), x)
    gate = torch.rand(2, 3, 1)
    torch.testing.assert_close(rt_heads.split(gate, 4)[5], gate[1])  # a shared gate: the same for every head
    state = {"W": torch.rand(2, 4, 3, 3), "aux": {"n": 3}}
    torch.testing.assert_close(rt_heads.unfold(rt_heads.fold(state, 4), 4)["W"], state["W"])
