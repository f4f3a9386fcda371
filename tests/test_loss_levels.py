"""`context loss` levels counted in tokens (issue #14 item 1, docs/design.md §1.4).

The level learns inside the sequence from the model's own next-token loss: after each chunk of
its period, one step of its rule from the gradient, at the state its reads saw, of the mean
cross-entropy of the chunk's predictions whose answer is in the chunk. The reference interpreter
(token-major) defines it; generated code (chunk-major) must agree in float64 on outputs and
slow-parameter gradients, stream in pieces, stay causal, and take the first-order form when asked.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nlc
from nlc.runtime.loss_levels import period_loss
from tests.model_cases import assert_same_outputs_and_gradients

F64 = dict(rtol=1e-6, atol=1e-10)

SPEC = """\
model lt(dim = 8, vocab = 32, chunk = 2, fast = 4, slow = 8, rule_beta = 0.5) {{
  block memory {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    level memory {{
      state linear(dim, dim)
      init zeros
      context (k, linear(h, dim))
      lr sigmoid(linear(h, 1)) * 0.5
      period chunk tokens
    }}
    out = memory(k)
  }}
  block cms {{
    let h = rmsnorm(x)
    level slow_mlp {{
      state mlp(dim, 2 * dim)
      init learned
      context loss
      update {slow_update}
      lr 0.3
      retain 0.99
      period slow tokens
      {flag}
    }}
    level fast_mlp {{
      state mlp(dim, 2 * dim)
      init identity
      context loss
      update gd
      lr 0.2
      period fast tokens
    }}
    out = fast_mlp(slow_mlp(h)) - h
  }}
}}
"""


def _spec(slow_update="momentum(beta = rule_beta)", flag=""):
    return nlc.loads(SPEC.format(slow_update=slow_update, flag=flag), "<loss levels>")


def _pair(prog, seed=0, **params):
    torch.manual_seed(seed)
    ref = nlc.build(prog, backend="reference", **params).double()
    gen = nlc.build(prog, **params).double()
    gen.load_state_dict(ref.state_dict())
    return ref, gen


def _tokens(length, seed=1, batch=2):
    return torch.randint(0, 32, (batch, length), generator=torch.Generator().manual_seed(seed))


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("flag", ["", "first_order"])
@pytest.mark.parametrize("length", [7, 16])
def test_generated_equals_reference_on_outputs_and_slow_gradients(flag, length):
    ref, gen = _pair(_spec(flag=flag))
    assert_same_outputs_and_gradients(ref, gen, _tokens(length), **F64)


def test_the_levels_learn_from_the_text_and_only_after_their_first_chunk():
    ref, _ = _pair(_spec())
    tokens = _tokens(16)
    learning = ref(tokens)
    ref.learn_from_loss = False
    fixed = ref(tokens)
    diff = (learning - fixed).abs().amax(dim=(0, 2))
    assert torch.all(diff[:4] == 0)  # reads in the first chunk of the fastest level see the initial state
    assert torch.all(diff[4:] > 0)


def test_a_step_is_the_rules_step_on_the_mean_loss_of_the_chunks_predictions():
    # one level, gd, lr 0.5: after its first chunk its state is W0 - 0.5 * grad of the chunk's mean loss
    prog = nlc.loads("""\
model one(dim = 4, vocab = 8) {
  block b {
    level cms {
      state linear(dim, dim)
      init zeros
      context loss
      update gd
      lr 0.5
      period 3 tokens
    }
    out = cms(x)
  }
}
""", "<one>")
    torch.manual_seed(0)
    model = nlc.build(prog).double()
    tokens = _tokens(6, batch=1) % 8
    state = model.init_state(1)
    logits, state = model(tokens[:, :3], state=state)
    W = torch.zeros(1, 4, 4, dtype=torch.float64, requires_grad=True)
    x = model.embed(tokens[:, :3])
    own = model.head(model.norm(x + torch.einsum("btd,bde->bte", x, W)))
    loss = F.cross_entropy(own[0, :2], tokens[0, 1:3], reduction="mean")
    (g,) = torch.autograd.grad(loss, W)
    torch.testing.assert_close(state["blocks"][0]["levels"]["cms"]["W"]["W"], W.detach() - 0.5 * g, **F64)
    torch.testing.assert_close(logits, own.detach(), **F64)


def test_streaming_in_aligned_pieces_equals_the_whole_sequence():
    _, gen = _pair(_spec())
    assert gen.alignment == 8
    tokens = _tokens(24)
    whole = gen(tokens)
    state, parts = gen.init_state(2), []
    for s in (0, 8, 16):
        y, state = gen(tokens[:, s : s + 8], state=state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, **F64)


def test_an_output_never_sees_its_own_answer():
    _, gen = _pair(_spec())
    tokens = _tokens(16)
    base = gen(tokens)
    for t in (3, 7, 12):
        changed = tokens.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 32
        torch.testing.assert_close(gen(changed)[:, : t + 1], base[:, : t + 1], **F64)


def test_first_order_changes_the_outer_gradient_not_the_forward():
    second, _ = _pair(_spec())
    first, _ = _pair(_spec(flag="first_order"))
    tokens = _tokens(16)
    a, b = second(tokens), first(tokens)
    torch.testing.assert_close(b, a, **F64)
    a.square().mean().backward()
    b.square().mean().backward()
    name = next(n for n in _grads(second) if "slow_mlp_init" in n)
    assert not torch.allclose(_grads(second)[name], _grads(first)[name])


def test_under_no_grad_the_levels_still_learn_and_nothing_keeps_a_graph():
    _, gen = _pair(_spec())
    tokens = _tokens(16)
    with_grad = gen(tokens)
    with torch.no_grad():
        without = gen(tokens)
    assert not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach(), **F64)


def test_period_loss_scores_the_predictions_inside_the_period():
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    tokens = torch.randint(0, 7, (2, 5))
    by_hand = sum(F.cross_entropy(logits[b, :4], tokens[b, 1:]) for b in range(2))
    torch.testing.assert_close(period_loss(logits, tokens), by_hand)


def test_the_example_hope_tokens_agrees_between_back_ends():
    prog = nlc.load("examples/hope_tokens.nl")
    params = dict(dim=8, layers=1, hidden=8, cms_hidden=8, chunk=2, cms_fast=2, cms_mid=4, cms_slow=8)
    ref, gen = _pair(prog, **params)
    tokens = _tokens(10) % 256
    torch.testing.assert_close(gen(tokens), ref(tokens), **F64)


def test_eval_learns_from_the_test_text_unless_frozen():
    from nlc.train.evaluate import Learner

    _, gen = _pair(_spec())
    tokens = _tokens(17)
    scores = {}
    for frozen in (False, True):
        learner = Learner(gen, frozen, 2, "cpu")
        assert gen.learn_from_loss is (not frozen)
        scores[frozen], _ = learner.segment(tokens[:, :16], tokens[:, 1:17])
    assert torch.equal(scores[False][:, :4], scores[True][:, :4])  # the first chunk reads the initial states
    assert not torch.allclose(scores[False][:, 8:], scores[True][:, 8:])
