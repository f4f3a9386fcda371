"""delta_momentum is one product on one side (NL eqs. 48-49): m <- m (beta I - grad^T grad) - eta grad.

For a d_out x d_in weight grad^T grad is d_in x d_in: the decay acts on the input side. The
in-context rule (reference interpreter and generated code) and the optimizer (reference and
generated) are compared with hand-written loops on NON-square weights, where the two sides
differ (and only the input side type-checks in the paper's layout).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nlc
from nlc.optim.reference import reference_optimizer

ROOT = Path(__file__).resolve().parent.parent
BETA, LR = 0.7, 0.1

IN_CONTEXT = f"""\
model dm(dim = 4, vocab = 8) {{
  block b {{
    level mem {{
      state linear(3, 5)
      init zeros
      context (linear(x, 3), linear(x, 5))
      objective l2
      update delta_momentum(beta = {BETA})
      lr {LR}
      period 1 tokens
    }}

    out = linear(mem(linear(x, 3)), dim)
  }}
}}
"""


def _hand_in_context(model, tokens) -> torch.Tensor:
    """NL eqs. 48-49 in the paper's layout: M is 5 x 3 (d_out x d_in), read M k."""
    named = dict(model.named_parameters())
    x = named["embed.weight"][tokens[0]]
    keys = x @ named["blocks.0.mem_key_linear.weight"].T
    values = x @ named["blocks.0.mem_value_linear.weight"].T
    M, m = torch.zeros(5, 3), torch.zeros(5, 3)
    for k, v in zip(keys, values):
        grad = torch.outer(M @ k - v, k)  # d/dM of 1/2 ||M k - v||^2
        m = m @ (BETA * torch.eye(3) - grad.T @ grad) - LR * grad
        M = M + m
    return M


@pytest.mark.parametrize("backend,kernels", [("reference", "chunked"), ("compiled", "chunked"),
                                             ("compiled", "sequential")])
@torch.no_grad()
def test_in_context_delta_momentum_decays_the_input_side(backend, kernels):
    torch.manual_seed(0)
    model = nlc.build(nlc.loads(IN_CONTEXT), backend=backend, kernels=kernels)
    for p in model.parameters():  # keys and values of a size where the decay matters
        p.copy_(torch.randn_like(p))
    tokens = torch.randint(0, 8, (1, 6), generator=torch.Generator().manual_seed(1))
    _, state = model(tokens, state=model.init_state(1))
    mem = state["blocks"][0]["levels"]["mem"]
    W = (mem["running"] if backend == "reference" else mem["W"])["W"][0]  # [d_in, d_out] = M^T
    torch.testing.assert_close(W, _hand_in_context(model, tokens).T, rtol=1e-4, atol=1e-5)


def _hand_optimizer(w0: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    w, m = w0.clone(), torch.zeros_like(w0)
    for g in grads:
        m = m @ (BETA * torch.eye(w0.shape[1]) - g.T @ g) - LR * g
        w = w + m
    return w


@pytest.mark.parametrize("which", ["generated", "reference"])
def test_delta_momentum_optimizer_decays_the_input_side(which):
    spec = ROOT / "examples" / "delta_momentum.nl"
    w0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))  # nn.Linear(3, 5).weight
    grads = [torch.randn(5, 3, generator=torch.Generator().manual_seed(10 + i)) for i in range(4)]
    p = torch.nn.Parameter(w0.clone())
    make = nlc.build_optimizer if which == "generated" else reference_optimizer
    opt = make(spec, [p], lr=LR, beta=BETA)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), _hand_optimizer(w0, grads), rtol=1e-4, atol=1e-5)


def test_the_in_context_rule_and_the_optimizer_call_one_product():
    from nlc.rules.delta_momentum.decay import delta_momentum_decay

    m, g = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(delta_momentum_decay(m.mT, g.mT, 0.5, input_axis=-2).mT,
                               delta_momentum_decay(m, g, 0.5))
    torch.testing.assert_close(delta_momentum_decay(m, g, 0.5), 0.5 * m - m @ g.mT @ g)
