"""Update rules against hand-written loops, independent of the interpreter and the generator.

A block with one linear memory M(k) = k W and constant gates; the loops below
are the rules written out by hand (Titans eqs. 9-14 for momentum, NL eqs. 56-57
for dgd), with "frequency is exact": gradients at the chunk-start state.
"""

import pytest
import torch

import nlc

SPEC = """\
model hand(dim = 6, chunk = 1) {
  block b {
    let q = linear(x, dim)
    let k = l2norm(linear(x, dim))
    let v = linear(x, dim)

    level mem {
      state linear(dim, dim)
      init zeros
      context (k, v)
      objective l2
      update RULE
      lr 0.5
      retain 0.95
      period chunk tokens
    }

    out = mem(q)
  }
}
"""


def by_hand(rule: str, q, k, v, chunk: int):
    B, T, D = q.shape
    W = torch.zeros(B, D, D, dtype=q.dtype)
    S = torch.zeros_like(W)
    frozen = W.clone()
    outs = []
    for t in range(T):
        outs.append(torch.einsum("bi,bio->bo", q[:, t], frozen))
        kt, vt = k[:, t], v[:, t]
        g = torch.einsum("bi,bo->bio", kt, torch.einsum("bi,bio->bo", kt, frozen) - vt)  # k^T (k W - v)
        if rule == "momentum(beta = 0.9)":
            S = 0.9 * S - 0.5 * g
            W = 0.95 * W + S
        else:  # dgd: W = (0.95 I - 0.5 k^T k) W - 0.5 g
            W = 0.95 * W - 0.5 * torch.einsum("bi,bo->bio", kt, torch.einsum("bi,bio->bo", kt, W)) - 0.5 * g
        if (t + 1) % chunk == 0:
            frozen = W.clone()
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("rule", ["momentum(beta = 0.9)", "dgd"])
@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_rule_matches_hand_written_loop(rule, chunk, backend):
    program = nlc.loads(SPEC.replace("RULE", rule))
    torch.manual_seed(0)
    model = nlc.build(program, backend=backend, chunk=chunk).double()
    block = model.blocks[0]
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    out, _ = block(x, block.init_state(2, x))
    q, v = block.q(x), block.v(x)
    k = torch.nn.functional.normalize(block.k_linear(x), dim=-1, eps=1e-6)
    torch.testing.assert_close(out, by_hand(rule, q, k, v, chunk), rtol=1e-10, atol=1e-12)
