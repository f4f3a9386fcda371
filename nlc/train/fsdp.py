"""Sharded data-parallel training: `nlc train --fsdp` under torchrun (FSDP2, docs/distributed.md).

    torchrun --nproc-per-node 4 -m nlc train SPEC --fsdp --out RUN ...     (or: nlc train SPEC --nproc 4 --fsdp ...)

Each block of `model.blocks`, then the model itself, is wrapped by torch's FSDP2
(`torch.distributed.fsdp.fully_shard`): every parameter becomes a DTensor sharded on dim 0 over
the ranks (uneven shards allowed: a [1, d] gate weight lives on rank 0, the others hold 0 rows).
A block's parameters are all-gathered just before its forward (and backward) and freed after;
`init_state`, which reads the memories' initial weights outside `forward`, is registered as a
forward method so that it is gathered too. The step levels and the outer optimizer are built
after sharding, so their sums, momenta and moments are DTensor shards as well.

What changes against plain data parallelism (nlc.train.dist), and why:
  * gradients are reduce-scattered by FSDP during backward; the divide factor is set to 1 on
    every FSDP module so that the reduction is a sum (the loss is already divided by the global
    token count: the sum over ranks is one process's gradient), and the per-step all-reduce of
    nlc.train.dist is not applied on top;
  * a `period N steps` level's parameters are sharded like the others, so FSDP reduce-scatters
    their gradients every step (it has no cheap way to leave some parameters of a module out of
    the reduction): the sums each rank keeps are already the global ones, and the period-end
    all-reduce is skipped;
  * matrix rules (Newton-Schulz, delta products: nlc.optim.runtime) gather the whole matrix,
    compute, and keep their rank's rows; elementwise rules work on the shards as they are;
  * gradient clipping takes the global norm of the sharded gradients (`clip_grad_norm`);
  * checkpoints are written with torch.distributed.checkpoint (nlc.train.dcp): every rank writes
    its own shards, and any number of processes, sharded or not, resumes from them (DCP reads a
    shard or a whole tensor, as the resuming process keeps it); an ordinary checkpoint (of a run
    without --fsdp) is resumed under --fsdp by cutting each rank's shard out of its whole tensors
    (`place_like`).
"""

from __future__ import annotations

import warnings

import torch

from nlc.optim.runtime import is_sharded, reshard_like, whole_tensor  # (whole_tensor: a collective)
from nlc.train.errors import train_error

SUM_GRADIENTS = True  # False only in the tests' negative control: FSDP then averages the gradients over ranks


def shard(model: torch.nn.Module, world) -> torch.nn.Module:
    """Wrap each block, then the model, with FSDP2 (in place); E643 when this is not a run of several
    ranks or the model has no blocks to shard."""
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    if world.size < 2:
        raise train_error("E643", "--fsdp shards the model over the processes of a torchrun run, and this run "
                          "is one process", "start it with --nproc N (or torchrun --nproc-per-node N -m nlc "
                          "train ...), or leave --fsdp out")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList) or not len(blocks):
        raise train_error("E643", f"--fsdp shards a model block by block, and this model "
                          f"({type(model).__name__}) has no `blocks`", "leave --fsdp out")
    # FSDP warns once that a block returns a view, on which an in-place op would skip its backward
    # all-gather: the generated models and the loop add to block outputs out of place (x = x + y), and
    # the tests check the gradients against one process
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for block in blocks:
        fully_shard(block)
        if hasattr(block, "init_state"):
            register_fsdp_forward_method(block, "init_state")
    fully_shard(model)
    if hasattr(model, "init_state"):
        register_fsdp_forward_method(model, "init_state")
    if SUM_GRADIENTS:
        for module in model.modules():  # the factor is per FSDP module, not inherited
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)
                module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM
    return model


def place_like(value: torch.Tensor, like):
    """`value` (a whole tensor) as `like` is kept: this rank's shard of it when `like` is a DTensor (a
    value that is already a shard, read so from a DCP checkpoint, stays as it is)."""
    if not is_sharded(like) or is_sharded(value):
        return value
    return reshard_like(value.to(device=like.device, dtype=like.dtype), like)


def clip_grad_norm(params: list, max_norm: float) -> float:
    """torch's clip_grad_norm_ for sharded gradients: the norm of the whole gradient, on every rank."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    total = whole_tensor(total)  # the norms of the shards, combined
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)
