"""Lion (signed momentum, arXiv:2302.06675), the rule added through the registry alone:
as an optimizer (examples/lion.nl) against a hand-written Lion loop, and as an in-context
`update lion(...)` of a model level, reference interpreter against generated code and a hand loop."""

from pathlib import Path

import pytest
import torch

import nlc
from nlc.optim import build_optimizer
from nlc.optim.reference import reference_optimizer

LION = Path(__file__).resolve().parent.parent / "examples" / "lion.nl"


def hand_lion(params, grads_of, steps, lr, beta1, beta2, weight_decay):
    """Algorithm 2 of the Lion paper, written out: the parameters after `steps` steps."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = grads_of(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            c = beta1 * m[i] + (1 - beta1) * g
            params[i] = p - lr * (torch.sign(c) + weight_decay * p)
            m[i] = beta2 * m[i] + (1 - beta2) * g
    return params


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


X = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def loss_of(model):
    return (model(X) ** 2).mean()


@pytest.mark.parametrize("make", [build_optimizer, reference_optimizer], ids=["generated", "reference"])
@pytest.mark.parametrize("hyper", [dict(lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0.0),
                                   dict(lr=0.003, beta1=0.5, beta2=0.8, weight_decay=0.1)])
def test_lion_optimizer_matches_a_hand_written_loop(make, hyper):
    model = mlp()
    start = [p.detach().clone() for p in model.parameters()]
    opt = make(LION, model.parameters(), **hyper)
    for _ in range(6):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()

    def grads_of(params):
        ps = [p.clone().requires_grad_() for p in params]
        twin = mlp()
        with torch.no_grad():
            for t, p in zip(twin.parameters(), ps):
                t.copy_(p)
        loss_of(twin).backward()
        return [t.grad for t in twin.parameters()]

    want = hand_lion(start, grads_of, 6, **hyper)
    for got, w in zip(model.parameters(), want):
        torch.testing.assert_close(got.detach(), w, rtol=1e-12, atol=1e-12)


MODEL = """\
model lion_memory(dim = 6, chunk = CHUNK) {
  block b {
    let q = linear(x, dim)
    let k = l2norm(linear(x, dim))
    let v = linear(x, dim)
    level mem {
      state STATE
      init zeros
      context (k, v)
      objective l2
      update lion(beta1 = 0.8, beta2 = BETA2)
      lr 0.05
      retain 0.95
      period chunk tokens
    }
    out = mem(q)
  }
}
"""


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("state", ["linear(dim, dim)", "mlp(dim, 8)", "vector(dim)"])
@pytest.mark.parametrize("beta2", ["0.9", "sigmoid(linear(x, 1))"])
def test_in_context_lion_reference_equals_generated(chunk, state, beta2):
    text = MODEL.replace("CHUNK", str(chunk)).replace("STATE", state).replace("BETA2", beta2)
    program = nlc.loads(text)
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    outs = []
    for backend in ("compiled", "reference"):
        torch.manual_seed(0)
        outs.append(nlc.build(program, backend=backend).double()(tokens))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-12)


def test_in_context_lion_matches_a_hand_written_loop():
    """One linear memory M(k) = k W; gradients at the chunk-start state (chunk 3)."""
    program = nlc.loads(MODEL.replace("CHUNK", "3").replace("STATE", "linear(dim, dim)").replace("BETA2", "0.9"))
    torch.manual_seed(0)
    model = nlc.build(program, chunk=3).double()
    block = model.blocks[0]
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    out, _ = block(x, block.init_state(2, x))
    q, v = block.q(x), block.v(x)
    k = torch.nn.functional.normalize(block.k_linear(x), dim=-1, eps=1e-6)
    W = torch.zeros(2, 6, 6, dtype=torch.float64)
    m, frozen, want = torch.zeros_like(W), W.clone(), []
    for t in range(9):
        want.append(torch.einsum("bi,bio->bo", q[:, t], frozen))
        g = torch.einsum("bi,bo->bio", k[:, t], torch.einsum("bi,bio->bo", k[:, t], frozen) - v[:, t])
        W = 0.95 * W - 0.05 * torch.sign(0.8 * m + 0.2 * g)
        m = 0.9 * m + 0.1 * g
        if (t + 1) % 3 == 0:
            frozen = W.clone()
    torch.testing.assert_close(out, torch.stack(want, dim=1), rtol=1e-10, atol=1e-12)
