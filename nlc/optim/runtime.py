"""Small kernels that generated optimizers import (`from nlc.optim import runtime as rt`).

Everything here works on one parameter tensor at a time, on any device, and never
reads a tensor's value on the host (no `.item()`, no Python branching on tensor
values), so a step stays asynchronous on CUDA and traceable by torch.compile.
Counts and hyper-parameters are Python numbers.

orthogonalize      Newton-Schulz (Muon) for a parameter-shaped tensor; vectors pass through
delta_product      m (beta I - g^T g): the forgetting term of delta momentum (NL section 4.4)
bias_correction    1 - retain^n (Adam's debiasing of an EMA memory)
PARAMETERS         the operations of a rule's step (nlc.rules.base.Ops) on parameter-shaped tensors
mlp_*              an MLP memory R -> R applied to every entry of a tensor (DMGD)
check_param_group  hyper-parameter validation for constructors and parameter groups

Under FSDP2 (`nlc train --fsdp`) parameters, gradients and states are DTensor shards (rows of
dim 0): elementwise arithmetic runs on them as it is; orthogonalize and delta_product gather the
whole matrices and keep this rank's rows; an MLP memory (DMGD) is whole on every rank, reads its
own entries and sums its gradient over the ranks.
"""

from __future__ import annotations

import difflib
import math
import sys

import torch

from nlc.runtime.memory import IDENTITY_SEED, act, act_backward
from nlc.runtime.memory import objective_grad as memory_objective_grad
from nlc.runtime.newton_schulz import newton_schulz
from nlc.rules.delta_momentum.decay import delta_momentum_decay, delta_momentum_decay_elementwise
# scalar forms of the elementwise builtins (Python numbers: gates over `step`); generated optimizers
# call them as rt.sigmoid(...) (nlc.unary's scalar_code)
from nlc.unary import gelu, relu, sigmoid, silu, softplus  # noqa: F401


# ---- update-rule kernels --------------------------------------------------------------


def orthogonalize(x: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz orthogonalisation of a parameter-shaped tensor, as Muon applies it.

    A tensor with two or more dims is treated as the matrix [shape[0], rest] (a conv
    kernel [out, in, kh, kw] becomes [out, in * kh * kw]) and replaced by the
    quintic Newton-Schulz approximation of U V^T from its SVD (nlc.runtime.newton_schulz:
    coefficients 3.4445, -4.7750, 2.0315). Vectors and scalars (biases, gains) have no
    orthogonal form and are returned unchanged: for them Muon is plain momentum.
    """
    if x.dim() < 2:
        return x
    if is_sharded(x):  # FSDP2 (`nlc train --fsdp`): the iteration needs the whole matrix
        return reshard_like(orthogonalize(x.full_tensor(), steps), x)
    return newton_schulz(x.reshape(x.shape[0], -1), int(steps)).reshape(x.shape)


def delta_product(m: torch.Tensor, g: torch.Tensor, beta) -> torch.Tensor:
    """m (beta I - g^T g) for a weight m and its gradient g (NL section 4.4, eqs. 48-49): nlc.rules.delta_momentum.

    Tensors of two or more dims are the matrices [shape[0], rest] (g^T g is
    [rest, rest]); the product is taken in the cheaper order. Vectors and scalars are
    treated entry by entry: (beta - g^2) m.
    """
    if m.dim() < 2:
        return delta_momentum_decay_elementwise(m, g, beta)
    if is_sharded(m) or is_sharded(g):  # FSDP2: g^T g sums over every row, so it needs the whole matrices
        whole = delta_product(whole_tensor(m), whole_tensor(g), whole_tensor(beta))
        return reshard_like(whole, m) if is_sharded(m) else whole
    m2, g2 = m.reshape(m.shape[0], -1), g.reshape(g.shape[0], -1)
    beta2 = beta.reshape(m2.shape) if isinstance(beta, torch.Tensor) and beta.shape == m.shape else beta
    return delta_momentum_decay(m2, g2, beta2).reshape(m.shape)


def is_sharded(x) -> bool:
    """Is x a DTensor (a shard of a parameter-shaped tensor under FSDP2)? Elementwise kernels run on
    shards as they are; the matrix kernels above gather the whole matrix and keep this rank's rows.
    A DTensor exists only once torch.distributed.tensor was imported: no import here for the others."""
    dtensor = _dtensor()
    return dtensor is not None and isinstance(x, dtensor.DTensor)


def _dtensor():
    """torch.distributed.tensor once something imported it (FSDP2 does), else None; not imported here:
    per-step code imports nothing, and runs without it need nothing of it."""
    return sys.modules.get("torch.distributed.tensor")


def whole_tensor(x):
    return x.full_tensor() if is_sharded(x) else x


def reshard_like(whole: torch.Tensor, like) -> torch.Tensor:
    """This rank's shard of `whole`, placed as `like` is (every rank holds the same `whole`: no traffic)."""
    return _dtensor().distribute_tensor(whole.detach(), like.device_mesh, like.placements, src_data_rank=None)


def bias_correction(retain, n: int):
    """1 - retain^n: the total weight an EMA with retention `retain` has after n updates from zero.

    With n = 0 the state has not been written yet and the read is left as it is (1).
    """
    return 1 - retain**n if n > 0 else 1.0


class ParameterOps:
    """A rule's step on parameter-shaped tensors (the reference optimizer, the trainer's step levels).

    The generated optimizer writes the same step as text that calls the same functions
    (nlc.codegen.optimizer), so both run one formula: the rule's, in nlc.rules.
    """

    torch = torch
    sqrt = staticmethod(torch.sqrt)
    orthogonalize = staticmethod(orthogonalize)
    delta_decay = staticmethod(delta_product)
    bias_correction = staticmethod(bias_correction)

    @staticmethod
    def key_decay(W, retain, lr, key):
        raise ValueError("a rule that reads the layer input runs on model memories only (E511 refuses it here)")

    @staticmethod
    def keep(name, value, why=""):
        return value


PARAMETERS = ParameterOps()


def l2norm(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x|| over the whole tensor (an optimizer has no feature axis)."""
    return x / x.norm().clamp_min(eps)




# ---- MLP memories applied entry by entry (DMGD) -------------------------------------------


def mlp_shapes(hidden: int, depth: int) -> list[tuple[int, int]]:
    """Weight shapes of an MLP R -> R: [1, h], [h, h] x (depth - 2), [h, 1] (depth 1: [1, 1])."""
    hidden, depth = int(hidden), int(depth)
    if depth == 1:
        return [(1, 1)]
    return [(1, hidden)] + [(hidden, hidden)] * (depth - 2) + [(hidden, 1)]


def mlp_init(like: torch.Tensor, hidden: int, depth: int, mode: str) -> list[torch.Tensor]:
    """Initial weights of an MLP memory, in `like`'s dtype and device.

    `zeros`: every weight zero. `identity`: the last layer zero (with the residual path the
    memory starts as the identity map), the others N(0, 1 / fan_in) from a fixed seed, so
    that the same spec gives the same optimizer on every run and device.
    """
    shapes = mlp_shapes(hidden, depth)
    if is_sharded(like):  # FSDP2: every rank keeps the whole (small) MLP; its gradients are summed (mlp_grads)
        like = like.to_local()
    if mode == "zeros":
        return [like.new_zeros(s) for s in shapes]
    gen = torch.Generator().manual_seed(IDENTITY_SEED)
    out = []
    for i, s in enumerate(shapes):
        if i == len(shapes) - 1:
            out.append(like.new_zeros(s))
        else:
            w = torch.randn(s, generator=gen, dtype=torch.float64) / math.sqrt(s[0])
            out.append(w.to(dtype=like.dtype, device=like.device))
    return out


def mlp_read(weights: list[torch.Tensor], k: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """M(k) for every entry of k: a_0 = k, a_{i+1} = gelu(a_i W_i), M(k) = a_{L-1} W_{L-1} (+ k)."""
    if is_sharded(k):  # entry by entry: each rank reads its own entries
        return _dtensor().DTensor.from_local(mlp_read(weights, k.to_local(), residual), k.device_mesh, k.placements,
                                  shape=k.shape, stride=k.stride())
    return _mlp_forward(weights, k, residual)[0]


def _mlp_forward(weights, k, residual):
    a = k.reshape(-1, 1)
    inputs, pre = [a], []
    for W in weights[:-1]:
        z = a @ W
        pre.append(z)
        a = act(z)
        inputs.append(a)
    y = a @ weights[-1]
    if residual:
        y = y + inputs[0]
    return y.reshape(k.shape), inputs, pre


def mlp_grads(weights: list[torch.Tensor], k: torch.Tensor, v, objective: str, arg=None,
              residual: bool = True) -> list[torch.Tensor]:
    """The gradient of the objective summed over every entry: d/dW_i sum_e l(M(k_e), v_e)."""
    if is_sharded(k):  # FSDP2: each rank sums over its own entries, then the sums are summed over the ranks
        grads = mlp_grads(weights, k.to_local(), v.to_local() if is_sharded(v) else v, objective, arg, residual)
        for g in grads:
            torch.distributed.all_reduce(g, group=k.device_mesh.get_group())
        return grads
    y, inputs, pre = _mlp_forward(weights, k, residual)
    d = objective_grad(objective, y, v, arg).reshape(-1, 1)
    grads = [None] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        grads[i] = inputs[i].transpose(0, 1) @ d
        if i > 0:
            d = act_backward(d @ weights[i].transpose(0, 1), pre[i - 1])
    return grads


def objective_grad(objective: str, y: torch.Tensor, v, arg=None) -> torch.Tensor:
    """d l(y, v) / d y, entry by entry, of y's shape: the objective's entry in nlc.objectives
    (`arg`: its one argument, if it has one)."""
    return memory_objective_grad((objective,) if arg is None else (objective, arg), y, v)


def load_mlp(state: dict, name: str) -> list[torch.Tensor]:
    """The weights of MLP memory `name` from a parameter's state (keys name.W0, name.W1, ...)."""
    out = []
    while f"{name}.W{len(out)}" in state:
        out.append(state[f"{name}.W{len(out)}"])
    return out


def store_mlp(state: dict, name: str, weights: list[torch.Tensor]) -> None:
    for i, w in enumerate(weights):
        state[f"{name}.W{i}"] = w


# ---- hyper-parameter validation -------------------------------------------------------------

GROUP_KEYS = ("params", "param_names")


def reject_unknown(opt, unknown: dict) -> None:
    """Raise a ValueError for constructor keywords that are not hyper-parameters of the spec."""
    if unknown:
        _unknown(opt, next(iter(unknown)), "keyword argument")


def check_param_group(opt, group: dict) -> None:
    """Validate a parameter group (its own values over the optimizer's defaults) before it is added.

    Unknown keys are an error (with a did-you-mean); every hyper-parameter must be a real
    number (or a boolean where the spec's default is one); learning rates must be >= 0;
    periods and counts must be positive whole numbers.
    """
    for key in group:
        if key not in GROUP_KEYS and key not in opt.defaults:
            _unknown(opt, key, "parameter group key")
    values = {**opt.defaults, **{k: v for k, v in group.items() if k not in GROUP_KEYS}}
    for name, value in values.items():
        want_bool = isinstance(opt.defaults.get(name), bool)
        ok = isinstance(value, bool) if want_bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        if not ok:
            what = "`true` or `false`" if want_bool else "a finite number"
            raise ValueError(f"{opt.spec_name}: hyper-parameter `{name}` must be {what}, not {value!r}")
    for name in opt.learning_rates:
        if values[name] < 0:
            raise ValueError(f"{opt.spec_name}: invalid learning rate `{name}` = {values[name]!r}: "
                             "learning rates must be >= 0")
    for name in opt.whole_numbers:
        v = values[name]
        if v < 1 or not float(v).is_integer():
            raise ValueError(f"{opt.spec_name}: hyper-parameter `{name}` is a period or a count and must be "
                             f"a positive whole number, not {v!r}")


def _unknown(opt, key, what: str) -> None:
    names = list(opt.hyperparameters)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"its hyper-parameters are {', '.join(names) or 'none'}"
    raise ValueError(f"{opt.spec_name}: unknown hyper-parameter `{key}` ({what}); {hint}")
