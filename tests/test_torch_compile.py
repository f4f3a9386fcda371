"""torch.compile(fullgraph=True) on generated models: no graph breaks, same outputs as eager.

Slow on CPU (about a minute a model): marked `compile`, excluded from `make test`,
run by `make test-all`.
"""

import pytest
import torch

from model_cases import pair

pytestmark = pytest.mark.compile


@pytest.mark.parametrize("name", ["titans_lmm.nl", "hope.nl"])
def test_fullgraph_forward_and_backward(name):
    import torch._dynamo

    torch._dynamo.reset()
    _, model = pair(name, dtype=torch.float32, chunk=4)
    tokens = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    explanation = torch._dynamo.explain(model)(tokens)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(tokens)
    torch.testing.assert_close(out, model(tokens), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
