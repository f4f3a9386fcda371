"""torch.compile(fullgraph=True) on generated models: no graph breaks, same outputs as eager.

Slow on CPU (about a minute a model): marked `compile`, excluded from `make test`,
run by `make test-all`.
"""

import pytest
import torch

import nlc
from model_cases import pair
from specs import TWO_PERIODS, WINDOWED, WHOLE_PAST

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






@pytest.mark.parametrize("name, group", [("titans_lmm.nl", 1), ("hope.nl", 1), ("titans_mac.nl", 1),
                                         ("transformer.nl", 1), pytest.param(TWO_PERIODS, 1, id="two_periods"),
                                         pytest.param(WINDOWED, 1, id="windowed_attention_in_the_loop"),
                                         pytest.param(WHOLE_PAST, 1, id="whole_past_attention_in_the_loop"),
                                         pytest.param("titans_lmm.nl", 3, id="titans_lmm-3_chunks_a_graph"),
                                         pytest.param(TWO_PERIODS, 3, id="two_periods-3_chunks_a_graph"),
                                         ("shared_memory.nl", 1)])
def test_compiled_chunk_steps_equal_eager(name, group):
    """nlc.build(compile=True): each block's chunk step compiled once, reused by every chunk (or
    `group` chunks a compiled call: the same steps, in the same order); a model with shared levels
    calls its blocks a period at a time: each block compiled whole, and its `learn_shared`."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from nlc.runtime.compile import compile_chunks, uncompile_chunks

    torch._dynamo.reset()
    counters.clear()
    if name.endswith(".nl"):
        _, eager = pair(name, dtype=torch.float32, chunk=4)
    else:
        torch.manual_seed(0)
        eager = nlc.build(nlc.loads(name))
    tokens = torch.randint(0, 256, (2, 22), generator=torch.Generator().manual_seed(0))  # 5 full chunks + 2
    expected = eager(tokens)
    expected.square().mean().backward()
    expected_grads = {n: p.grad.clone() for n, p in eager.named_parameters() if p.grad is not None}
    eager.zero_grad()
    compiled = compile_chunks(eager, chunks_per_graph=group)
    whole = hasattr(compiled, "learn_shared")
    assert all((b.compiled_step is None) == whole for b in compiled.blocks if hasattr(b, "chunk_step"))
    assert all((b._compiled_call_impl is not None) == (whole or not hasattr(b, "chunk_step")) for b in compiled.blocks)
    assert all(b.compiled_period is not None for b in compiled.blocks if hasattr(b, "period_step"))
    assert any(hasattr(b, "period_step") for b in compiled.blocks) == (name is TWO_PERIODS)
    out = compiled(tokens)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    for n, p in compiled.named_parameters():
        if n in expected_grads:
            torch.testing.assert_close(p.grad, expected_grads[n], rtol=1e-3, atol=1e-5, msg=n)
    # graphs for distinct chunk situations (first chunk, later ones, the partial last one, the
    # end of a slow period), never one per chunk: a longer sequence compiles nothing new (a cache
    # over the whole past grows: its length became symbolic at its first change)
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        compiled(tokens)
        graphs_no_grad = counters["stats"]["unique_graphs"]
        compiled(torch.randint(0, 256, (2, 46), generator=torch.Generator().manual_seed(1)))  # 11 chunks + 2
        graphs_longer = counters["stats"]["unique_graphs"]  # strides of the slices changed: symbolic now
        compiled(torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(2)))  # 17 chunks + 2
    assert counters["stats"]["unique_graphs"] == graphs_longer, (graphs, graphs_no_grad, graphs_longer)
    assert sum(counters["graph_break"].values()) == 0
    uncompile_chunks(compiled)
    assert all(b.compiled_step is None for b in compiled.blocks if hasattr(b, "chunk_step"))
    assert all(b.compiled_period is None for b in compiled.blocks if hasattr(b, "period_step"))
    assert all(b._compiled_call_impl is None for b in compiled.blocks)



def test_a_compiled_comparison_trains_the_same_numbers(tmp_path):
    """nlc compare --compile: each run's config says so, and its training losses are the eager run's
    (the compiled chunk steps compute the same thing, up to float32 rounding)."""
    import json

    from model_cases import ROOT
    from nlc.train.compare import compare

    spec = str(ROOT / "examples" / "titans_lmm.nl")
    losses = {}
    for compiled in (False, True):
        out = tmp_path / ("compiled" if compiled else "eager")
        compare([spec], ["mqar:kv=2"], "1k", out, batch=2, seq=32, params={"dim": 16, "layers": 1},
                eval_batches=1, quiet=True, compile=compiled)
        run = out / "runs" / "mqar" / "titans_lmm"
        assert json.loads((run / "config.json").read_text())["train"].get("compile", False) is compiled
        losses[compiled] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                            if '"loss"' in line and '"eval"' not in line]
    assert len(losses[True]) == 1000 // 64 > 1
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-4, atol=1e-5)
