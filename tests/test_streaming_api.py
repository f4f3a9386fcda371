"""The calling API of built models, both back ends: `logits = model(tokens)` and
`logits, state = model(tokens, state=state)`.

Bad input (tokens that are not ids [batch, length], ids out of range, a state of another model
or batch) is a StreamError (a SpecError and a ValueError) with a code, never a raw error or a
silently wrong result; the returned state is detached unless `detach_state=False`, so carrying
it costs constant memory; and valid streaming still equals reading the sequence whole.
"""

import json

import numpy as np
import pytest
import torch

import nlc
from model_cases import pair
from nlc.errors import StreamError
from nlc.train.checkpoint import flatten, unflatten
from specs import TITANS

BACKENDS = ["compiled", "reference"]
TINY = dict(dim=8, chunk=2)  # TITANS at dim 8: two blocks (depth 2), each a Titans memory and four convs
GD_TITANS = TITANS.replace("update momentum(beta = sigmoid(linear(h, 1)))", "update gd")  # no momentum in the state


def build(backend: str, spec: str = TITANS, seed: int = 0, **params):
    torch.manual_seed(seed)
    return nlc.build(nlc.loads(spec), backend=backend, **{**TINY, **params}).double()


def tokens(batch: int = 2, length: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def rejects(code: str, model, toks, **kw) -> StreamError:
    """Call the model; it must raise a StreamError with `code`, a message and a hint."""
    with pytest.raises(StreamError) as e:
        model(toks, **kw)
    err = e.value
    assert err.codes == [code], str(err)
    assert isinstance(err, ValueError) and isinstance(err, nlc.SpecError)
    assert err.diagnostics[0].hint, str(err)
    assert str(err).startswith(f"error[{code}]: ")
    return err


# ---- tokens ---------------------------------------------------------------------------------

NOT_IDS = {  # E607: not a tensor of integer ids
    "float": lambda t: t.float(),
    "double": lambda t: t.double(),
    "bool": lambda t: t > 100,
    "uint8": lambda t: t.to(torch.uint8),
    "int16": lambda t: t.to(torch.int16),
    "list": lambda t: t.tolist(),
    "numpy": lambda t: t.numpy(),
    "int": lambda t: 3,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", NOT_IDS)
def test_tokens_that_are_not_integer_ids(backend, kind):
    model = build(backend)
    err = rejects("E607", model, NOT_IDS[kind](tokens()))
    assert "tokens must be" in str(err)
    rejects("E607", model, NOT_IDS[kind](tokens()), state=model.init_state(2))


def test_not_ids_messages_name_what_was_given():
    model = build("compiled")
    assert "not a torch.float32 tensor" in str(rejects("E607", model, tokens().float()))
    assert "tokens.long()" in rejects("E607", model, tokens().float()).diagnostics[0].hint
    assert "not a list" in str(rejects("E607", model, tokens().tolist()))
    assert "torch.tensor(" in rejects("E607", model, tokens().tolist()).diagnostics[0].hint


BAD_SHAPES = {  # E608: not [batch, length], or no tokens
    "0-D": lambda t: t[0, 0],
    "1-D": lambda t: t[0],
    "3-D, last 1": lambda t: t[..., None],
    "3-D one-hot": lambda t: torch.nn.functional.one_hot(t, 256),
    "4-D": lambda t: t[None, ..., None],
    "empty sequence": lambda t: t[:, :0],
    "empty batch": lambda t: t[:0],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BAD_SHAPES)
def test_tokens_of_the_wrong_shape(backend, kind):
    model = build(backend)
    rejects("E608", model, BAD_SHAPES[kind](tokens()))
    rejects("E608", model, BAD_SHAPES[kind](tokens()), state=model.init_state(2))


def test_wrong_shape_messages():
    model = build("compiled")
    one = rejects("E608", model, tokens()[0])
    assert "not 1-D (shape [4])" in str(one) and "tokens[None]" in one.diagnostics[0].hint
    assert "squeeze(-1)" in rejects("E608", model, tokens()[..., None]).diagnostics[0].hint
    assert "an empty sequence" in str(rejects("E608", model, tokens()[:, :0]))


OUT_OF_RANGE = [256, -1, 1000, 2**40]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_token_ids_out_of_range(backend, bad):
    model = build(backend)
    t = tokens(length=6)
    t[1, 3] = bad
    err = rejects("E609", model, t)
    assert f"token id {bad} at tokens[1, 3]" in str(err) and "0..255" in str(err)
    rejects("E609", model, t, state=model.init_state(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_ids_in_range_are_accepted(backend):
    model = build(backend)
    t = tokens()
    torch.testing.assert_close(model(t.int()), model(t))
    rejects("E609", model, torch.full((1, 2), 256, dtype=torch.int32))


# ---- the state ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_of_a_model_with_another_layer_count(backend):
    """zip() used to run a 2-block model with a 1-block state on block 1 only, without a word."""
    two, one = build(backend, depth=2), build(backend, depth=1)
    err = rejects("E605", two, tokens(), state=one.init_state(2))
    assert "the streaming state has 1 block, this model has 2 blocks" in str(err)
    rejects("E605", one, tokens(), state=two.init_state(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_of_a_model_with_other_parameters(backend):
    model, wider = build(backend), build(backend, dim=16)
    err = rejects("E605", model, tokens(), state=wider.init_state(2))
    assert "state['blocks'][0]" in str(err) and "has shape [2, 16" in str(err) and "this model's is [batch, 8" in \
        str(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_of_another_spec(backend):
    model, other = build(backend), build(backend, spec=GD_TITANS)
    rejects("E605", model, tokens(), state=other.init_state(2))
    rejects("E605", other, tokens(), state=model.init_state(2))


def test_a_state_of_the_other_back_end():
    gen, ref = build("compiled"), build("reference")
    assert "state['blocks'][0] has `t`, which this model's state has not" in \
        str(rejects("E605", gen, tokens(), state=ref.init_state(2)))
    assert "state['blocks'][0] has no `t`" in str(rejects("E605", ref, tokens(), state=gen.init_state(2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_of_another_dtype(backend):
    model = build(backend)
    state = model.init_state(2)
    model.float()
    err = rejects("E605", model, tokens(), state=state)
    assert "torch.float64, this model's state is torch.float32" in str(err)
    assert "model.init_state" in err.diagnostics[0].hint


NOT_STATES = {  # E605: not a streaming state at all
    "empty dict": lambda m: {},
    "a tensor": lambda m: torch.zeros(2, 8),
    "a list": lambda m: [m.init_state(2)],
    "call result": lambda m: (torch.zeros(2, 4, 256), m.init_state(2)),
    "no t": lambda m: {"blocks": m.init_state(2)["blocks"]},
    "t negative": lambda m: {**m.init_state(2), "t": -2},
    "t float": lambda m: {**m.init_state(2), "t": 2.0},
    "t string": lambda m: {**m.init_state(2), "t": "0"},
    "blocks a dict": lambda m: {**m.init_state(2), "blocks": {}},
    "extra key": lambda m: {**m.init_state(2), "extra": 1},
    "levels emptied": lambda m: _with_block(m, levels={}),
    "a tensor replaced by a number": lambda m: _with_block(m, caches={k: 0 for k in m.init_state(2)["blocks"][0]["caches"]}),
    "tensors of two batch sizes": lambda m: _with_block(m, caches=m.init_state(3)["blocks"][0]["caches"]),
}


def _with_block(model, **changes) -> dict:
    state = model.init_state(2)
    state["blocks"][0] = {**state["blocks"][0], **changes}
    return state


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", NOT_STATES)
def test_not_a_state_of_this_model(backend, kind):
    model = build(backend)
    rejects("E605", model, tokens(), state=NOT_STATES[kind](model))


def test_not_a_state_messages():
    model = build("compiled")
    assert "`state` is an empty dict, not a streaming state" in str(rejects("E605", model, tokens(), state={}))
    call_result = rejects("E605", model, tokens(), state=NOT_STATES["call result"](model))
    assert "logits, state = model(tokens, state=state)" in call_result.diagnostics[0].hint
    assert "disagree on the batch size" in str(rejects("E605", model, tokens(),
                                                       state=NOT_STATES["tensors of two batch sizes"](model)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state_batch", [1, 3])
def test_a_state_of_another_batch_size(backend, state_batch):
    model = build(backend)
    err = rejects("E606", model, tokens(batch=2), state=model.init_state(state_batch))
    assert f"a batch of {state_batch} rows (`init_state({state_batch})`), the tokens have 2" in str(err)
    assert "model.init_state(2)" in err.diagnostics[0].hint


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_carried_state_of_another_batch_size(backend):
    model = build(backend)
    _, state = model(tokens(batch=3), state=model.init_state(3))
    rejects("E606", model, tokens(batch=2), state=state)


def test_unaligned_pieces_are_still_e603_and_a_value_error():
    model = build("compiled", chunk=4)
    _, state = model(tokens(length=3), state=model.init_state(2))
    err = rejects("E603", model, tokens(length=4), state=state)
    assert "at token 3, not a multiple of 4" in str(err)


# ---- valid streaming ------------------------------------------------------------------------

def _stream(model, toks, lengths, **kw):
    state, outs = model.init_state(toks.shape[0]), []
    for s, e in zip(np.cumsum([0, *lengths[:-1]]), np.cumsum(lengths)):
        logits, state = model(toks[:, s:e], state=state, **kw)
        outs.append(logits)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("detach", [True, False])
def test_streaming_equals_whole(backend, detach):
    model = build(backend)
    toks = tokens(length=9)
    got, state = _stream(model, toks, [2, 4, 3], detach_state=detach)
    torch.testing.assert_close(got, model(toks), rtol=1e-9, atol=1e-12)
    assert state["t"] == 9


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_with_a_growing_attention_cache(backend):
    """An attention cache starts empty and grows: a state that has read tokens still fits."""
    ref, gen = pair("titans_mac.nl", chunk=2)
    model = gen if backend == "compiled" else ref
    toks = tokens(length=8)
    got, _ = _stream(model, toks, [2, 2, 4])
    torch.testing.assert_close(got, model(toks), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_through_a_checkpoint_is_accepted(backend):
    """--stream checkpoints flatten the state and read it back: it is still this model's state."""
    model = build(backend)
    toks = tokens(length=6)
    _, state = model(toks[:, :2], state=model.init_state(2))
    tensors, skeleton = flatten(state)
    restored = unflatten({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(skeleton)))
    torch.testing.assert_close(model(toks[:, 2:], state=restored)[0], model(toks[:, 2:], state=state)[0])


# ---- detaching the carried state -------------------------------------------------------------

def _graph_nodes(tensors) -> int:
    """How many autograd nodes the tensors reach (their whole backward graph)."""
    seen, todo = set(), [t.grad_fn for t in tensors if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)


def _state_tensors(state) -> list:
    return list(flatten(state)[0].values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_returned_state_is_detached_by_default(backend):
    model = build(backend)
    _, state = model(tokens(), state=model.init_state(2))
    assert all(not t.requires_grad and t.grad_fn is None for t in _state_tensors(state))
    _, kept = model(tokens(), state=model.init_state(2), detach_state=False)
    assert any(t.grad_fn is not None for t in _state_tensors(kept))


@pytest.mark.parametrize("backend", BACKENDS)
def test_carrying_the_state_does_not_grow_the_graph(backend):
    """The graph each call's logits hold: constant by default, one call's more each call with detach_state=False."""
    model = build(backend)
    sizes = {}
    for detach in (True, False):
        state, sizes[detach] = model.init_state(2), []
        for i in range(4):
            logits, state = model(tokens(seed=i), state=state, detach_state=detach)
            sizes[detach].append(_graph_nodes([logits, *_state_tensors(state)]))
    assert len(set(sizes[True][1:])) == 1, sizes  # the first call also reaches the learned initial state
    growth = np.diff(sizes[False])
    assert (growth > 0).all() and len(set(growth[1:])) == 1, sizes


@pytest.mark.parametrize("backend", BACKENDS)
def test_detach_state_false_lets_gradients_reach_earlier_pieces(backend):
    """Truncated BPTT: the loss of piece 2 reaches the embeddings of ids that only piece 1 read."""
    model = build(backend)
    first, second = torch.full((2, 2), 7), torch.full((2, 2), 9)
    for detach in (True, False):
        model.zero_grad()
        _, state = model(first, state=model.init_state(2), detach_state=detach)
        logits, _ = model(second, state=state, detach_state=detach)
        logits.square().mean().backward()
        reached = model.embed.weight.grad[7].abs().sum() > 0
        assert reached == (not detach)


# ---- under torch.compile (marked `compile`: excluded from `make test`) -----------------------

@pytest.mark.compile
def test_compiled_forward_streams_and_checks():
    """torch.compile(fullgraph=True) traces the checks into guards: valid streaming == eager; a bad
    call fails with dynamo's error quoting the StreamError (fullgraph), or the StreamError itself."""
    import torch._dynamo

    torch._dynamo.reset()
    model = build("compiled")
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # dynamo only: the checks are its part
    toks = tokens(length=8)
    got, state = _stream(compiled, toks, [2, 2, 2, 2])
    torch.testing.assert_close(got, model(toks), rtol=1e-9, atol=1e-12)
    with pytest.raises(Exception, match="E606"):
        compiled(toks, state=model.init_state(3))
    torch._dynamo.reset()
    rejects("E606", torch.compile(model, backend="eager"), toks, state=model.init_state(3))
