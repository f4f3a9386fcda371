"""Streaming state helpers shared by the interpreter and generated modules.

Both back ends' `forward(tokens, state=None, detach_state=True)` start with
`check_stream(self, tokens, state)` and return `carried_state(new_state, detach_state)`, so a
bad call fails the same way whichever back end runs it: with a StreamError (a SpecError and a
ValueError) whose code says what was wrong (docs/errors.md):

  E603  a state whose token count is not a multiple of the model's alignment
  E605  a state that is not one of this model's (another spec, parameters, layer count or back
        end, another dtype or device, or not a state at all)
  E606  a state made for another batch size
  E607  tokens that are not integer token ids on the model's device (a list, floats, bools)
  E608  tokens that are not 2-D [batch, length], or hold no tokens
  E609  token ids outside the vocabulary

A state stays the plain nested dict `init_state(batch)` makes (tensors and ints): checkpoints
store it as it is, old ones too. Whether it belongs to a model is read from its layout: the
same keys, and tensors of the same shapes (the batch dimension aside, and dimensions that start
empty and grow, as an attention cache does), dtype and device as the model's own fresh state.
That layout is computed once per dtype and device (from `init_state(1)`) and kept on the model.
`layout_difference` is the one walker of that layout: the trainer checks a checkpoint's streaming
state with it too (E622, nlc.train.loop).

Under torch.compile the checks of Python structure, shapes and dtypes become guards and cost
nothing at run time; a bad call raises the same StreamError (under fullgraph=True, dynamo's
"Observed exception" error, which quotes it). The token-range check reads the ids (a
data-dependent test and a device sync), so it runs only outside compilation
(`torch.compiler.is_compiling()`): a compiled forward does not check the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nlc.errors import StreamError

INDEX_DTYPES = (torch.int64, torch.int32)  # what nn.Embedding accepts
START_HINT = ("start from `state = model.init_state(batch)` of this model and pass on the state each "
              "call returns: `logits, state = model(tokens, state=state)`")
LAYOUT_CACHE = "_stream_layouts"  # attribute of the model: (dtype, device) -> layout of its fresh state


def check_alignment(position: int, alignment: int) -> None:
    """Streaming pieces must start at a multiple of the model's largest in-context period."""
    if position % alignment:
        raise StreamError(
            "E603", f"streaming state is at token {position}, not a multiple of {alignment}",
            f"feed pieces whose lengths are multiples of {alignment} tokens (the largest period); "
            "only the last piece may be shorter")


def check_stream(model, tokens, state) -> None:
    """Raise a StreamError unless `model(tokens, state=state)` is a valid call (state None: a whole sequence).

    `model` is either back end's model: it has `embed` (nn.Embedding), `blocks`, `alignment`
    and `init_state(batch)`.
    """
    _check_tokens(model, tokens)
    if state is not None:
        _check_state(model, state, tokens.shape[0])
        check_alignment(state["t"], model.alignment)
    if not torch.compiler.is_compiling():  # reads the ids: data-dependent, so never inside a compiled graph
        _check_token_range(tokens, model.embed.num_embeddings)


def carried_state(state: dict, detach: bool) -> dict:
    """The state a streaming call returns: detached from this call's autograd graph unless `detach` is False.

    A state that kept its graph would keep every earlier call's graph alive through it, so memory
    grows with the stream (examples/hope.nl, 64-token pieces, CPU: 499 MB after 20 calls, 982 MB
    after 60; detached, 278 MB throughout) and a backward pass reaches back to the first piece. `detach_state=False` keeps it, for truncated backpropagation through time.
    """
    return detach_state(state) if detach else state


def detach_state(state):
    """A copy of a nested dict/list of tensors and numbers with every tensor detached."""
    return map_tensors(torch.Tensor.detach, state)


def state_bytes(state) -> int:
    """Bytes of the tensors in a (nested) state: dicts, lists and tuples of tensors (anything else: 0)."""
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return state.numel() * state.element_size() if isinstance(state, torch.Tensor) else 0


def map_tensors(fn, state):
    """A copy of a nested dict/list/tuple of tensors and numbers with `fn` applied to every tensor, in
    the order the nesting lists them (the same order in every process: collectives may be applied)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_tensors(fn, v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_tensors(fn, v) for v in state)
    return state


# ---- tokens ---------------------------------------------------------------------------------

def _check_tokens(model, tokens) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise StreamError("E607", f"tokens must be a tensor of token ids [batch, length], not a {type(tokens).__name__}",
                          "make one: `torch.tensor(ids, dtype=torch.long)`")
    if tokens.dtype not in INDEX_DTYPES:
        raise StreamError("E607", f"tokens must be integer token ids (torch.long), not a {tokens.dtype} tensor",
                          _dtype_hint(tokens.dtype, model.embed.num_embeddings))
    device = model.embed.weight.device
    if tokens.device != device:
        raise StreamError("E607", f"tokens are on {tokens.device}, the model is on {device}",
                          f"move them: `tokens.to({str(device)!r})`")
    if tokens.dim() != 2:
        raise StreamError("E608", f"tokens must be 2-D [batch, length], not {tokens.dim()}-D (shape {_shape(tokens)})",
                          _rank_hint(tokens))
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        what = "an empty batch" if tokens.shape[0] == 0 else "an empty sequence"
        raise StreamError("E608", f"tokens of shape {_shape(tokens)} hold no tokens ({what})",
                          "pass at least one row of at least one token; skip the call when a piece is empty")


def _dtype_hint(dtype: torch.dtype, vocab: int) -> str:
    if dtype == torch.bool:
        return f"a mask is not token ids: pass ids in 0..{vocab - 1} as a torch.long tensor"
    if dtype.is_floating_point or dtype.is_complex:
        return "token ids are whole numbers: pass `tokens.long()`"
    return "pass `tokens.long()`"


def _rank_hint(tokens: torch.Tensor) -> str:
    if tokens.dim() == 1:
        return "one sequence is a batch of one: pass `tokens[None]`"
    if tokens.dim() == 0:
        return "one token is a batch of one sequence of length one: pass `tokens.view(1, 1)`"
    if tokens.dim() == 3 and tokens.shape[-1] == 1:
        return "drop the last dimension: `tokens.squeeze(-1)`"
    return "pass token ids [batch, length], not one-hot vectors or embeddings"


def _check_token_range(tokens: torch.Tensor, vocab: int) -> None:
    lo, hi = torch.stack(torch.aminmax(tokens)).tolist()  # one device sync
    if lo >= 0 and hi < vocab:
        return
    row, col = ((tokens < 0) | (tokens >= vocab)).nonzero()[0].tolist()
    raise StreamError("E609", f"token id {int(tokens[row, col])} at tokens[{row}, {col}] is outside this model's "
                              f"vocabulary 0..{vocab - 1}",
                      f"this model has {vocab} token ids: map yours into 0..{vocab - 1}")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


# ---- the state ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _TensorLayout:
    """One tensor of a fresh state, its batch dimension aside."""

    sizes: tuple  # sizes after the batch dimension; None where the fresh state is empty (a cache that grows)
    dtype: torch.dtype
    device: torch.device

    def describe(self) -> str:
        """`[batch, 8, any]`: the shape as a message shows it."""
        return "[" + ", ".join(["batch", *("any" if n is None else str(n) for n in self.sizes)]) + "]"


def _check_state(model, state, batch: int) -> None:
    if not isinstance(state, dict) or "blocks" not in state or "t" not in state:
        raise StreamError("E605", f"`state` is {_what(state)}, not a streaming state (a dict with `blocks` and `t`)",
                          _not_a_state_hint(state))
    t = state["t"]
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise StreamError("E605", f"state['t'] is {t!r}, not a count of tokens", START_HINT)
    blocks = state["blocks"]
    if isinstance(blocks, (list, tuple)) and len(blocks) != len(model.blocks):
        raise StreamError("E605", f"the streaming state has {_blocks(len(blocks))}, this model has "
                                  f"{_blocks(len(model.blocks))}",
                          "the state comes from another model (another layer count?); " + START_HINT)
    sizes: list[tuple[str, int]] = []
    problem = layout_difference(state, _model_layout(model), sizes)
    if problem is not None:
        message, hint = problem
        raise StreamError("E605", f"the streaming state does not fit this model: {message}", hint)
    _check_batch(sizes, batch)


def _check_batch(sizes: list[tuple[str, int]], batch: int) -> None:
    """Every state tensor's batch size (path, rows) must be the tokens' `batch`."""
    if not sizes:  # a state without tensors fits any batch
        return
    path, rows = sizes[0]
    other = next(((p, n) for p, n in sizes if n != rows), None)
    if other is not None:
        raise StreamError("E605", f"the streaming state's tensors disagree on the batch size: {path} has {rows} rows, "
                                  f"{other[0]} has {other[1]}", START_HINT)
    if rows != batch:
        raise StreamError("E606", f"the streaming state is for a batch of {rows} rows (`init_state({rows})`), "
                                  f"the tokens have {batch} rows",
                          f"make a state for this batch: `model.init_state({batch})`, or feed {rows} rows at a time")


def _model_layout(model) -> dict:
    """The layout of the model's fresh state at its current dtype and device (computed once each)."""
    like = model.embed.weight
    key = (like.dtype, like.device)
    cache = vars(model).setdefault(LAYOUT_CACHE, {})
    if key not in cache:
        with torch.no_grad():  # the layout only: no graph to a learned initial state
            cache[key] = state_layout(model.init_state(1))
    return cache[key]


def state_layout(state):
    """The layout of a fresh state (`init_state(batch)`): the same nesting, each tensor a _TensorLayout
    (its batch dimension aside; a dimension that is 0 is a cache that grows, and may have any length),
    each number its type (int or float)."""
    if isinstance(state, torch.Tensor):
        return _TensorLayout(tuple(n if n else None for n in state.shape[1:]), state.dtype, state.device)
    if isinstance(state, dict):
        return {k: state_layout(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [state_layout(v) for v in state]
    return float if isinstance(state, float) else int


def layout_difference(given, expected, sizes: list, path: str = "state") -> tuple[str, str] | None:
    """The first place where the state `given` does not have the layout `expected` (of `state_layout`):
    (what differs, a hint), or None. Appends (path, batch size) of every tensor to `sizes`.

    The one walker of state layouts: the streaming API's check (E605) and the trainer's check of a
    checkpoint's streaming state (E622) both use it.
    """
    other = "it comes from another model (another spec, parameters or back end) or was changed; " + START_HINT
    if isinstance(expected, _TensorLayout):
        if not isinstance(given, torch.Tensor):
            return f"{path} is {_what(given)}, this model's is a tensor {expected.describe()}", other
        if given.dim() != len(expected.sizes) + 1 or any(
                e is not None and g != e for g, e in zip(given.shape[1:], expected.sizes)):
            return f"{path} has shape {_shape(given)}, this model's is {expected.describe()}", other
        moved = "make the state after moving or casting the model: `model.to(...)`, then `model.init_state(batch)`"
        if given.dtype != expected.dtype:
            return f"{path} is {given.dtype}, this model's state is {expected.dtype}", moved
        if given.device != expected.device:
            return f"{path} is on {given.device}, this model is on {expected.device}", moved
        sizes.append((path, given.shape[0]))
        return None
    if isinstance(expected, dict):
        if not isinstance(given, dict):
            return f"{path} is {_what(given)}, this model's is a dict", other
        missing = [k for k in expected if k not in given]
        if missing:
            return f"{path} has no `{missing[0]}`", other
        extra = [k for k in given if k not in expected]
        if extra:
            return f"{path} has `{extra[0]}`, which this model's state has not", other
        items = ((f"{path}[{k!r}]", given[k], sub) for k, sub in expected.items())
    elif isinstance(expected, list):
        if not isinstance(given, (list, tuple)) or len(given) != len(expected):
            return f"{path} is {_what(given)}, this model's is a list of {len(expected)}", other
        items = ((f"{path}[{i}]", g, sub) for i, (g, sub) in enumerate(zip(given, expected)))
    else:  # a number: a whole number where the fresh state has one (a float may be either)
        if isinstance(given, bool) or not isinstance(given, (int, expected)):
            return f"{path} is {_what(given)}, this model's is {_NUMBER_NAMES[expected]}", other
        return None
    for where, g, sub in items:
        problem = layout_difference(g, sub, sizes, where)
        if problem is not None:
            return problem
    return None


_NUMBER_NAMES = {int: "a whole number", float: "a number"}


def _what(x) -> str:
    """A short description of a value for a message: `an empty dict`, `a tuple of 2`, `a Tensor [2, 8]`."""
    if isinstance(x, torch.Tensor):
        return f"a tensor {_shape(x)}"
    if isinstance(x, dict):
        return "an empty dict" if not x else "a dict with keys " + ", ".join(f"`{k}`" for k in list(x)[:6])
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)}"
    if x is None or isinstance(x, (bool, int, float)):
        return repr(x)
    return f"a {type(x).__name__}"


def _not_a_state_hint(state) -> str:
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        return "a streaming call returns two things: unpack them, `logits, state = model(tokens, state=state)`"
    return START_HINT


def _blocks(n: int) -> str:
    return f"{n} block" + ("" if n == 1 else "s")
