"""Shared levels: one memory that several blocks, or the copies of a `repeat`ed block, read and write.

docs/design.md §1.8: each block that declares a `shared` level reads its period-start state; at
the period's end the level has learned from every block's (key, value) pairs, token by token and,
within a token, in model order, all gradients at the period-start state. The reference interpreter
runs that token-major; generated code runs the model chunk-major at the shared period and steps the
level once per period over the woven pairs (nlc.runtime.shared). Here: the definition written out
by hand, the two back ends against each other for drawn rules, memories, gates and periods (with a
planted mutation of the weave that must fail), and the diagnostics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime import layers, memory
from nlc.runtime import shared as rt_shared
from nlc.testing import properties as P
from tests.model_cases import rejection

DEFINITION = """
model s(dim = 8, layers = {layers}) {{
  repeat layers {{
    block b {{
      let h = rmsnorm(x)
      let k = l2norm(linear(h, dim))
      let v = linear(h, dim)
      let eta = sigmoid(linear(h, 1)) * 0.5
      level mem {{
        state linear(dim, dim)
        init learned
        context (k, v)
        update gd
        lr eta
        retain 1 - eta * 0.5
        period {period} tokens
        shared
      }}
      out = linear(mem(k), dim)
    }}
  }}
}}
"""


def _by_hand(model, tokens: torch.Tensor, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, token by token: (logits, the shared state after the last full period)."""
    B, T = tokens.shape
    S = model.mem_init(B)["W"].clone()  # [B, d, d]; reads see it until a period ends
    running = S
    outs = []
    for t in range(T):
        x = model.embed(tokens[:, t])
        for block in model.blocks:
            h = block.h(x)
            k, v = layers.l2norm(block.k_linear(h)), block.v(h)
            eta = torch.sigmoid(block.eta_linear(h)) * 0.5  # [B, 1]
            with torch.enable_grad():  # the objective's gradient at the period-start state
                frozen = S.detach().requires_grad_()
                loss = memory.objective_value(("l2",), torch.einsum("bi,bij->bj", k, frozen), v).sum()
                (g,) = torch.autograd.grad(loss, [frozen])
            running = (1 - eta * 0.5)[:, :, None] * running - eta[:, :, None] * g  # this block's write
            x = x + block.out_(torch.einsum("bi,bij->bj", k, S))
        outs.append(model.head(model.norm(x)))
        if (t + 1) % period == 0:  # the token counts once, after every block has written
            S = running
    return torch.stack(outs, dim=1), S


@settings(max_examples=6, deadline=None)
@given(layers=st.sampled_from([2, 3]), period=st.sampled_from([1, 2, 3]), length=st.integers(1, 9))
@example(layers=2, period=2, length=1)  # no period completes: the state stays the initial one
def test_the_definition_written_out_by_hand(layers, period, length):
    spec = nlc.loads(DEFINITION.format(layers=layers, period=period))
    tokens = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(length))
    compiled = nlc.build(spec).double()
    with torch.no_grad():
        want_logits, want_S = _by_hand(compiled, tokens, period)
    for backend in ("compiled", "reference"):
        model = compiled
        if backend == "reference":
            model = nlc.build(spec, backend="reference").double()
            model.load_state_dict(compiled.state_dict())
        logits, state = model(tokens, state=model.init_state(2))
        S = state["shared"]["mem"]["W" if backend == "compiled" else "frozen"]["W"]
        torch.testing.assert_close(logits, want_logits, rtol=1e-9, atol=1e-10, msg=backend)
        torch.testing.assert_close(S, want_S, rtol=1e-9, atol=1e-10, msg=backend)


def _spec(rule: str, kind: str, period: int, block_period: int, layers: int, gates: str, two_kinds: bool) -> str:
    state = {"linear": "linear(dim, dim)", "mlp": "mlp(dim, 16, depth = 2, residual = true)",
             "vector": "vector(dim)"}[kind]
    update = {"gd": "gd", "momentum": "momentum(beta = sigmoid(linear(h, 1)))", "dgd": "dgd",
              "adam": "adam"}[rule]
    lr, retain = {"data": ("sigmoid(linear(h, 1)) * 0.3", "1 - sigmoid(linear(h, 1)) * 0.1"),
                  "numbers": ("0.2", "0.95"), "learned": ("learned(0.2)", "learned(0.95)")}[gates]
    shared = f"""
      level mem {{
        state {state}
        init learned
        context (k, v)
        update {update}
        lr {lr}
        retain {retain}
        period {period} tokens
        shared
      }}"""
    local = f"""
      level fast {{
        state linear(dim, dim)
        context (k, linear(h, dim))
        update gd
        lr 0.3
        period {block_period} tokens
      }}"""
    other = "" if not two_kinds else f"""
  block c {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    let v = linear(h, dim)
{shared.replace("lr " + lr, "lr 0.1")}
    out = attention(h, heads = 2) + mem(k)
  }}"""
    return f"""
model s(dim = 8) {{
  repeat {layers} {{
    block b {{
      let h = rmsnorm(x)
      let k = l2norm(linear(h, dim))
      let v = fast(k)
{local}
{shared}
      out = linear(mem(k), dim)
    }}
  }}{other}
}}
"""


CASES = dict(rule=st.sampled_from(["gd", "momentum", "dgd", "adam"]), kind=st.sampled_from(["linear", "mlp", "vector"]),
             period=st.sampled_from([2, 4]), block_period=st.sampled_from([1, 2]), layers=st.sampled_from([1, 2]),
             gates=st.sampled_from(["data", "numbers", "learned"]), two_kinds=st.booleans())


@settings(max_examples=12, deadline=None)
@given(**CASES)
def test_shared_levels_compile_to_the_reference(rule, kind, period, block_period, layers, gates, two_kinds):
    if layers == 1 and not two_kinds:
        layers = 2  # one writer: `shared` would change nothing (E425)
    if rule == "dgd" and kind == "vector":
        rule = "gd"
    spec = _spec(rule, kind, period, block_period, layers, gates, two_kinds)
    tokens = torch.randint(0, 256, (2, 3 * period + 1))
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
    P.check_streaming(spec)
    P.check_causal(spec, tokens)
    P.check_round_trip(spec)


def test_a_mutated_weave_fails(monkeypatch):
    """Block-major instead of token-major: the property test above must see it."""
    spec = _spec("gd", "linear", 4, 2, 2, "data", False)
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    P.check_matches_reference(spec, tokens)

    def block_major(values, d):
        tokens_ = [v for v in values if isinstance(v, torch.Tensor) and v.dim() >= 2]
        return torch.cat(tokens_, dim=1) if tokens_ else values[0]

    monkeypatch.setattr(rt_shared, "_weave", block_major)
    try:
        P.check_matches_reference(spec, tokens)
    except AssertionError:
        return
    raise AssertionError("a block-major weave went unnoticed")


def test_sharing_is_live_and_costs_one_state():
    """Not shared, each copy keeps its own state (and its own initial state): a different model."""
    spec = _spec("momentum", "mlp", 2, 1, 2, "data", False)
    dead, _ = P.find_dead_fields(spec)
    assert not dead, dead
    model = nlc.build(nlc.loads(spec))
    names = [n for n, _ in model.named_parameters() if "mem_init" in n]
    assert names and all(n.startswith("mem_init.") for n in names), names  # the model's, not a block's
    state = model.init_state(1)
    assert "mem" in state["shared"] and all("mem" not in b["levels"] for b in state["blocks"])


def test_state_dicts_are_interchangeable_between_back_ends():
    spec = nlc.loads(_spec("dgd", "mlp", 2, 2, 2, "data", True))
    a, b = nlc.build(spec), nlc.build(spec, backend="reference")
    assert sorted(a.state_dict()) == sorted(b.state_dict())


def test_the_level_reads_the_period_start_state_of_every_writer():
    """Within a period nothing any block writes is seen; at its end every writer's pairs are."""
    spec = nlc.loads(DEFINITION.format(layers=2, period=4))
    model = nlc.build(spec).double()
    frozen = nlc.build(nlc.loads(DEFINITION.format(layers=2, period=4).replace("lr eta", "lr 0 * eta"))).double()
    frozen.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(1))
    a, b = model(tokens), frozen(tokens)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert float((a[:, 4:] - b[:, 4:]).detach().abs().max()) > 1e-6


def test_diagnostics():
    base = _spec("gd", "linear", 4, 2, 2, "numbers", False)
    once = rejection(base.replace("repeat 2", "repeat 1"))
    assert "E425" in once and "only one block instance declares it" in once, once
    heads = rejection(base.replace("        shared", "        heads 2\n        shared"))
    assert "E425" in heads and "split into heads" in heads, heads
    current = rejection(base.replace("        shared", "        read current\n        shared"))
    assert "E425" in current and "reads `current`" in current, current
    slow = rejection(base.replace("period 2 tokens", "period 8 tokens"))
    assert "E318" in slow and "does not divide 4" in slow, slow
    differ = rejection(_spec("gd", "linear", 4, 2, 2, "numbers", True).replace(
        "      level mem {\n        state linear(dim, dim)\n        init learned",
        "      level mem {\n        state linear(dim, dim)\n        init zeros", 1))
    assert "E425" in differ and "has init `learned` here but `zeros` in block `b`" in differ, differ
    steps = rejection(base.replace("period 4 tokens", "period 4 steps"))
    assert "E425" in steps and "does not learn in context" in steps, steps


def test_an_unshared_level_of_the_same_name_in_another_block_is_its_own():
    shared = _spec("gd", "linear", 4, 2, 2, "numbers", True)
    at = shared.index("  block c")
    own = shared[:at] + shared[at:].replace("        shared\n", "", 1)  # block c's `mem` is not shared
    model = nlc.build(nlc.loads(own))
    assert model.shared_blocks == (0, 1)
    state = model.init_state(1)
    assert "mem" in state["blocks"][2]["levels"] and "mem" in state["shared"]
    assert nlc.build(nlc.loads(shared)).shared_blocks == (0, 1, 2)


def test_loss_is_finite_and_learns_through_the_shared_state():
    """The outer gradient reaches every writer's projections through the shared state's updates."""
    spec = nlc.loads(DEFINITION.format(layers=2, period=2))
    model = nlc.build(spec)
    tokens = torch.randint(0, 256, (2, 8))
    loss = F.cross_entropy(model(tokens)[:, :-1].reshape(-1, 256), tokens[:, 1:].reshape(-1))
    loss.backward()
    assert torch.isfinite(loss)
    for i in range(2):
        assert model.blocks[i].v.weight.grad.abs().sum() > 0  # only through the shared level's learning
