"""Chunk loops grouped under compile (`compile_chunks(chunks_per_graph=K)`, nlc.runtime.chunks).

Grouping changes only how many chunk steps one compiled call runs, never which steps run or in
what order: outputs, states and gradients equal the eager loop's. These tests compile with dynamo's
`aot_eager` backend (dynamo and AOTAutograd, no inductor), which takes seconds, so they run in the
default suite; inductor's grouped graphs are checked by a `compile`-marked test in
test_torch_compile.py.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import nlc
from model_cases import ROOT, pair
from specs import TWO_PERIODS, WHOLE_PAST, WINDOWED
from nlc.runtime import chunks as rt_chunks
from nlc.runtime.compile import StepPerDevice, compile_chunks


def _step(W, pending, x, full, at):
    """A chunk step with the shapes of a generated one: outputs first, then the carried values
    (a state dict and a buffer that is None at the first chunk), then flags per chunk."""
    out = x @ W["W0"]
    W = {"W0": W["W0"] + 0.1 * x.transpose(-1, -2) @ out} if full else W
    pending = x.sum(1, keepdim=True) if pending is None else pending + at * x.sum(1, keepdim=True)
    return out, out.sum(-1), W, pending


@pytest.mark.parametrize("group", [1, 2, 3, 8])
def test_grouped_chunks_run_the_same_steps_in_the_same_order(group):
    torch._dynamo.reset()
    x = torch.randn(2, 7 * 4, 3)
    calls = [(c, c.shape[1] == 4, i % 3) for i, c in enumerate(x.split(4, dim=1))] + [(x[:, :2], False, 0)]
    carried = ({"W0": torch.randn(3, 3)}, None)
    expected_parts, expected = rt_chunks.run(_step, carried, calls, outputs=2)
    assert [len(p) for p in expected_parts] == [8, 8]
    step = StepPerDevice(_step, {"backend": "eager"}, chunks_per_graph=group)
    parts, final = rt_chunks.run(step, carried, calls, outputs=2)
    for got, want in zip(parts, expected_parts):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(final, expected, rtol=0, atol=0)
    # one chunk a call goes through the compiled step; groups through the compiled group of steps
    assert (list(step.compiled), list(step.grouped)) == ((["cpu"], []) if group == 1 else ([], ["cpu"]))


def test_every_grouped_runner_has_its_own_compile_cache():
    """Dynamo caches graphs and counts recompiles per code object: group runners sharing one would
    hit the recompile limit (8) in a process with several models and silently run eagerly."""

    torch._dynamo.reset()
    counters.clear()
    x = torch.randn(2, 8, 3)
    calls = [(c, True, 0) for c in x.split(4, dim=1)]
    runners = [StepPerDevice(lambda *a, i=i: _step(*a), {"backend": "eager"}, chunks_per_graph=2) for i in range(10)]
    for r in runners:
        rt_chunks.run(r, ({"W0": torch.randn(3, 3)}, None), calls, outputs=2)
    assert counters["stats"]["unique_graphs"] == 10




@pytest.mark.parametrize("name, extra, period_step", [
    ("titans_lmm.nl", {}, False), ("mixed_memories.nl", {}, False),
    pytest.param("hope.nl", {"memory_chunk": 16}, True, id="hope-memory_chunk16"),
    pytest.param(TWO_PERIODS, {}, True, id="two_periods"),
    pytest.param(WINDOWED, {}, False, id="windowed_attention_in_the_loop"),
    pytest.param(WHOLE_PAST, {}, False, id="whole_past_attention_in_the_loop")])
def test_grouped_compiled_models_equal_eager(name, extra, period_step):
    """Generated models, 3 chunks a compiled call, against the same model eager: logits, the
    streaming state and every parameter's gradient. mixed_memories carries pending buffers and
    period flags; hope with a slower memory (hope_peer's form) and two_periods have a `period_step`
    between groups: a group never crosses a period's end. An attention cache inside the loop: a
    window's of fixed length, or the whole past's, which grows from group to group."""
    torch._dynamo.reset()
    if name.endswith(".nl"):
        _, eager = pair(name, dtype=torch.float32, chunk=4, **extra)
    else:
        torch.manual_seed(0)
        eager = nlc.build(nlc.loads(name), **({"ratio": 4} if name is TWO_PERIODS else {}))  # a period of 4 chunks
    assert period_step == any(hasattr(b, "period_step") for b in eager.blocks)
    tokens = torch.randint(0, 256, (2, 38), generator=torch.Generator().manual_seed(0))  # 9 full chunks + 2
    expected, expected_state = eager(tokens, detach_state=False)
    expected.square().mean().backward()
    expected_grads = {n: p.grad.clone() for n, p in eager.named_parameters() if p.grad is not None}
    eager.zero_grad()
    grouped = compile_chunks(eager, chunks_per_graph=3, backend="aot_eager")
    out, state = grouped(tokens, detach_state=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=1e-5, atol=1e-6)
    out.square().mean().backward()
    for n, p in grouped.named_parameters():
        if n in expected_grads:
            torch.testing.assert_close(p.grad, expected_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert all(b.compiled_step.grouped for b in grouped.blocks if hasattr(b, "chunk_step"))


@pytest.mark.parametrize("group", [1, 3])
def test_a_model_with_shared_levels_compiles_whole_blocks_and_its_shared_step(group):
    """A model with shared levels calls its blocks one shared period at a time: compile_chunks compiles
    every block whole (its chunk loop and the work around it, one graph a situation) and the shared levels'
    `learn_shared`, not only the chunk steps (the work around them would run eagerly once a period).
    Against the same model eager: logits, streaming state, every gradient; a longer sequence compiles
    nothing new; uncompile_chunks restores the eager methods."""
    from nlc.runtime.compile import uncompile_chunks

    torch._dynamo.reset()
    counters.clear()
    _, eager = pair("shared_memory.nl", dtype=torch.float32, chunk=4)
    assert hasattr(eager, "learn_shared") and all(hasattr(b, "chunk_step") for b in eager.blocks)
    tokens = torch.randint(0, 256, (2, 22), generator=torch.Generator().manual_seed(0))  # 5 periods + 2
    expected, expected_state = eager(tokens, detach_state=False)
    expected.square().mean().backward()
    expected_grads = {n: p.grad.clone() for n, p in eager.named_parameters() if p.grad is not None}
    eager.zero_grad()
    compiled = compile_chunks(eager, chunks_per_graph=group, backend="aot_eager")
    assert all(isinstance(b._compiled_call_impl, StepPerDevice) and b.compiled_step is None for b in compiled.blocks)
    assert isinstance(compiled.learn_shared, StepPerDevice)
    out, state = compiled(tokens, detach_state=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=1e-5, atol=1e-6)
    out.square().mean().backward()
    assert expected_grads
    for n, p in compiled.named_parameters():
        if n in expected_grads:
            torch.testing.assert_close(p.grad, expected_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert compiled.learn_shared.compiled and all(b._compiled_call_impl.compiled for b in compiled.blocks)
    with torch.no_grad():
        compiled(tokens)
        graphs = counters["stats"]["unique_graphs"]
        compiled(torch.randint(0, 256, (2, 46), generator=torch.Generator().manual_seed(1)))
    assert counters["stats"]["unique_graphs"] == graphs
    assert sum(counters["graph_break"].values()) == 0
    uncompile_chunks(compiled)
    assert "learn_shared" not in vars(compiled) and all(b._compiled_call_impl is None for b in compiled.blocks)


def test_chunks_per_graph_must_be_a_positive_whole_number():
    model = nlc.build(ROOT / "examples" / "titans_lmm.nl", dim=8, layers=1)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="chunks_per_graph must be a positive integer"):
            compile_chunks(model, chunks_per_graph=bad)
    with pytest.raises(ValueError, match="chunks_per_graph applies with compile=True"):
        nlc.build(ROOT / "examples" / "titans_lmm.nl", dim=8, layers=1, chunks_per_graph=2)


def test_a_step_with_many_situations_stays_compiled(monkeypatch):
    """mixed_memories' chunk step meets more situations (grad mode, first chunk, which of two periods end)
    than dynamo's default recompile limit (8): past it the step would silently run eagerly. compile_chunks
    raises the limit (RECOMPILE_LIMIT); a hit here is a hard error."""
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    torch._dynamo.reset()
    counters.clear()
    _, eager = pair("mixed_memories.nl", dtype=torch.float32)
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    expected = eager(tokens)
    compiled = compile_chunks(eager, backend="aot_eager")
    out = compiled(tokens)
    out.square().mean().backward()
    with torch.no_grad():
        compiled(tokens)
    assert counters["stats"]["unique_graphs"] > 8
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_a_second_order_model_is_refused_not_compiled_half_way():
    """hope_tokens' `context loss` levels differentiate through their steps: its training backward is second
    order, which torch.compile cannot differentiate (a RuntimeError at the first backward). compile_chunks
    refuses it up front, saying how to compile it."""
    model = nlc.build(ROOT / "examples" / "hope_tokens.nl", dim=8, layers=1)
    with pytest.raises(ValueError, match="second-order gradient.*`first_order`"):
        compile_chunks(model)
    assert all(b.compiled_step is None for b in model.blocks if hasattr(b, "chunk_step"))
    with pytest.raises(ValueError, match="second-order"):
        nlc.build(ROOT / "examples" / "hope_tokens.nl", dim=8, layers=1, compile=True)


@pytest.mark.parametrize("group", [1, 2])
def test_small_cpu_states_compile_with_a_recompute_budget(group, monkeypatch):
    """A CPU step with inductor whose carried tensors are small runs (and so compiles) with AOTAutograd's
    activation budget at RECOMPUTE_BUDGET, restored after each call; larger states, another backend or
    another device keep torch's default. (The compiled step is replaced by a probe: no compiling here.)"""
    import torch._functorch.config as functorch_config

    from nlc.runtime import compile as rt_compile

    default = functorch_config.activation_memory_budget
    seen = []

    def probe(*args):
        seen.append(functorch_config.activation_memory_budget)
        return ([torch.zeros(1)] * args[2], args[0]) if group > 1 else _step(*args)

    x = torch.randn(2, 2 * 4, 3)
    calls = [(c, True, 0) for c in x.split(4, dim=1)]
    for options, limit, expected in (({}, rt_compile.RECOMPUTE_MAX_STATE_BYTES, rt_compile.RECOMPUTE_BUDGET),
                                     ({}, 16, default),  # the state (36 bytes and the buffer) is larger
                                     ({"backend": "aot_eager"}, rt_compile.RECOMPUTE_MAX_STATE_BYTES, default)):
        monkeypatch.setattr(rt_compile, "RECOMPUTE_MAX_STATE_BYTES", limit)
        step = StepPerDevice(_step, options, chunks_per_graph=group)
        (step.grouped if group > 1 else step.compiled)["cpu"] = probe
        seen.clear()
        rt_chunks.run(step, ({"W0": torch.randn(3, 3)}, None), calls, outputs=2)
        assert seen and set(seen) == {expected}, (options, limit, seen)
        assert functorch_config.activation_memory_budget == default
    assert StepPerDevice(_step, {})._options("cuda") == {}  # (a GPU step: torch's defaults, no C++ wrapper)
