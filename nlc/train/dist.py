"""Data-parallel training: `nlc train` under torchrun (docs/distributed.md).

    torchrun --nproc-per-node 2 -m nlc train SPEC --out RUN ...     (or: nlc train SPEC --nproc 2 ...)

torchrun starts one process per rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT set; `join` reads them and opens the process group (gloo on CPU, nccl on CUDA, each
rank on cuda:LOCAL_RANK), with a timeout after which a collective that a dead or stuck rank
never joins fails (E642) instead of hanging. Without those variables a run is one process and
every method here does nothing (a `World` of size 1), so the single-process loop is unchanged.

What is communicated, and when (the loop in nlc.train.loop calls these):
  * each step, one all-reduce of [loss sum, scored-token count, stop flag]: the loss is divided
    by the *global* token count (tasks that score only answers have different counts on each
    rank), every rank logs the same loss, and a Ctrl-C/SIGTERM on any rank stops all of them
    after the same step;
  * each step, one all-reduce (sum) of the main parameters' gradients, flattened into one
    buffer (no DistributedDataParallel wrapper: its bucket all-reduce would also carry the CMS
    step levels' gradients every step). Every rank then holds the gradient one process with
    the whole batch would have, clips it identically and takes the same optimizer step;
  * a `period N steps` level adds its local gradients to its sum every step and all-reduces
    that sum only when it steps: N-fold less traffic, the same sum;
  * checkpoints: the streaming state's rows are gathered (each rank holds its rows of the
    batch), rank 0 writes (under --fsdp every rank writes its shards: nlc.train.dcp), all wait
    at a barrier; evaluation batches are shared out and their
    sums all-reduced.
In-context levels need nothing: their state is per sequence, and sequences are rows.
With --fsdp the parameters are sharded instead (nlc.train.fsdp): FSDP reduces the gradients in
backward and the two gradient all-reduces above are not taken.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as tdist

from nlc.runtime.state import map_tensors
from nlc.train.errors import train_error

DEFAULT_TIMEOUT_S = 600.0  # how long a rank waits at a collective for the others (--dist-timeout)
REDUCE_STEP_LEVEL_SUMS = True  # False only in the tests' negative control: ranks then step with their own sums


def exit_process(code: int) -> NoReturn:
    """End the process with `code`; a rank of a multi-process run ends without interpreter finalization.

    At finalization a gloo process group's worker threads can still be joinable, or hold work whose
    destruction needs the interpreter: the process then aborts ("terminate called without an active
    exception", SIGABRT) after the run finished and wrote everything (PyTorch pull request 179291;
    here, about one `--fsdp` test run in three on a loaded machine). The run's files are closed by
    then; stdout and stderr are flushed first.
    """
    if launched():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def launched() -> bool:
    """Is this process one rank of several (torchrun's variables say so)?"""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


@dataclass
class World:
    """The ranks of a run: this one's rank and how many there are (1: one process, nothing to do)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes config.json, metrics, checkpoints and the summary."""
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's rows of a global batch of `batch` rows."""
        n = batch // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place."""
        if self.size > 1:
            self._call(tdist.all_reduce, tensor)
        return tensor

    def sum_values(self, values: list[float]) -> list[float]:
        """Numbers summed over the ranks (as float64; unchanged when alone)."""
        if self.size == 1:
            return values
        return self.sum_(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def sum_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Sum tensors over the ranks in place, as one flat buffer (one collective, not one each)."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.sum_(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def sum_grads(self, params: list[torch.Tensor]) -> None:
        """Sum the parameters' gradients over the ranks (those that have one: the same on every rank)."""
        self.sum_tensors([p.grad for p in params if p.grad is not None])

    def agree(self, ok: bool) -> bool:
        """True when every rank says ok (one all-reduce of a flag)."""
        if self.size == 1:
            return ok
        return self.sum_(torch.tensor([0.0 if ok else 1.0], device=self.device)).item() == 0

    def all_objects(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        self._call(tdist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            self.sum_(torch.zeros(1, device=self.device))  # a barrier that obeys the group's timeout on every backend

    def gather_rows(self, state):
        """A nested streaming state with every tensor's rows (dim 0) gathered from all ranks, in rank order."""
        if self.size == 1:
            return state

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.size)]
            self._call(tdist.all_gather, parts, t.contiguous())
            return torch.cat(parts)

        return map_tensors(gather, state)

    def split_rows(self, state, batch: int):
        """This rank's rows of a whole-batch streaming state (a checkpoint's)."""
        if self.size == 1:
            return state
        return map_tensors(lambda t: t[self.rows(batch)].clone(), state)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")

    def _call(self, op, *args):
        try:
            op(*args)
        except RuntimeError as e:  # gloo/nccl: a peer that closed the connection, or a timeout
            raise lost_rank(self, e) from None

    def close(self) -> None:
        if self.size > 1 and tdist.is_initialized():
            gc.collect()  # collectives' work objects in reference cycles go while the group is alive
            tdist.destroy_process_group()


def lost_rank(world: World, error: Exception) -> Exception:
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return train_error("E642", f"rank {world.rank} of {world.size}: another rank of this run stopped, or did not "
                       f"answer within {world.timeout_s:g} s ({first}); this rank stops too, and the newest "
                       "checkpoint stays whole",
                       "see the first rank's own error above it; then resume the run with --resume")


def join(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[World, str]:
    """This process's World and the device it trains on (cuda -> cuda:LOCAL_RANK under torchrun)."""
    if not launched():
        return World(), device
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise train_error("E640", f"WORLD_SIZE is set but the launcher's variables are not ({e})",
                          "start ranks with torchrun (or nlc train --nproc N)") from None
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise train_error("E633", f"--dist-timeout must be a positive number of seconds, not {timeout_s}")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise train_error("E631", f"rank {rank} (local rank {local}) needs a CUDA GPU of its own: this machine "
                              f"has {torch.cuda.device_count() if torch.cuda.is_available() else 0}",
                              "start at most one process per GPU, or train with --device cpu")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not tdist.is_available():
        raise train_error("E640", "this torch build has no torch.distributed", "train in one process")
    if not tdist.is_initialized():
        try:
            tdist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, TimeoutError) as e:
            raise train_error("E640", f"rank {rank} of {size} could not join the others: {e}",
                              "check MASTER_ADDR/MASTER_PORT (torchrun's --rdzv-endpoint) and that every node "
                              "starts the same command") from None
    return World(rank=rank, size=size, local_rank=local, timeout_s=timeout_s), device
