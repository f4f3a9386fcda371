"""torch.compile of a training step that uses a generated optimizer (slow: `pytest -m compile`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlc.optim import build_optimizer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


@pytest.mark.compile
@pytest.mark.parametrize("name, hyper", [("adam", dict(lr=0.01)), ("m3", dict(lr=0.001, f=2))])
def test_compiled_training_step_matches_eager(name, hyper):
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=gen), torch.randn(8, 4, generator=gen)) for _ in range(10)]

    def make():
        model = _model()
        return model, build_optimizer(EXAMPLES / f"{name}.nl", model.parameters(), **hyper)

    def train_step(model, opt, x, y):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    eager_model, eager_opt = make()
    model, opt = make()
    compiled = torch.compile(train_step)
    torch._dynamo.reset()
    frames = []
    for x, y in batches:
        want = train_step(eager_model, eager_opt, x, y)
        got = compiled(model, opt, x, y)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)  # float32: docs/design.md §1.2 tolerance
        frames.append(torch._dynamo.utils.counters["frames"]["ok"])
    # the step count is a Python int: dynamo specialises on it once, then treats it as dynamic;
    # after a few steps nothing recompiles any more
    assert frames[-1] == frames[len(frames) // 2]
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
