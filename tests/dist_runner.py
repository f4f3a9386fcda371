"""`nlc train` as one rank of a test of data-parallel training (tests/test_train_dist.py).

    RANK=r WORLD_SIZE=n MASTER_ADDR=... MASTER_PORT=... python tests/dist_runner.py train SPEC ... [flags]

It trains in float64 on one thread, and writes RUN/rank<r>.hash, the sha256 of that rank's parameters
when it finishes (under --fsdp: of the whole parameters, gathered). Test-only flags: --float32 (the
default dtype), --skip-period-reduce (the negative control: step levels step with their own rank's sums),
--average-gradients (the negative control of --fsdp: FSDP's default mean over ranks instead of a sum), --die-at-step N (rank 1 exits at once, as a
killed process, during step N), --signal-at-step N (rank 1 alone gets a SIGINT during step N), --die-in-save (rank 1 exits at once in its
first --fsdp checkpoint save, after writing its shards).
"""

import hashlib
import os
import sys

import torch

if "--float32" in sys.argv:
    sys.argv.remove("--float32")
else:
    torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)

from nlc.optim.runtime import whole_tensor  # noqa: E402
from nlc.train import dist, fsdp, loop  # noqa: E402
from nlc.train.cli import main  # noqa: E402
from nlc.train.steplevels import StepLevels  # noqa: E402

if "--skip-period-reduce" in sys.argv:
    sys.argv.remove("--skip-period-reduce")
    dist.REDUCE_STEP_LEVEL_SUMS = False

if "--average-gradients" in sys.argv:
    sys.argv.remove("--average-gradients")
    fsdp.SUM_GRADIENTS = False

if "--die-at-step" in sys.argv:
    i = sys.argv.index("--die-at-step")
    die_at = int(sys.argv[i + 1])
    del sys.argv[i:i + 2]
    step = StepLevels.step

    def dying(self, *args, **kw):
        if self.count + 1 == die_at and os.environ.get("RANK") == "1":
            os._exit(9)
        return step(self, *args, **kw)

    StepLevels.step = dying

if "--signal-at-step" in sys.argv:  # rank 1 gets a SIGINT (as from Ctrl-C) during step N
    import signal

    i = sys.argv.index("--signal-at-step")
    signal_at = int(sys.argv[i + 1])
    del sys.argv[i:i + 2]
    step_before = StepLevels.step

    def signalled(self, *args, **kw):
        if self.count + 1 == signal_at and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGINT)
        return step_before(self, *args, **kw)

    StepLevels.step = signalled

if "--die-in-save" in sys.argv:  # rank 1 exits at once, as a killed process, in its first DCP save
    sys.argv.remove("--die-in-save")
    all_objects = dist.World.all_objects

    def dying_in_save(self, obj):
        if self.rank == 1:  # its shards are written, their hashes not yet sent: the folder is not whole
            os._exit(9)
        return all_objects(self, obj)

    dist.World.all_objects = dying_in_save

run = loop._run


def hashing_run(plan):
    out = run(plan)
    data = b"".join(whole_tensor(p.detach()).cpu().numpy().tobytes() for p in plan.model.parameters())
    (plan.out / f"rank{plan.world.rank}.hash").write_text(hashlib.sha256(data).hexdigest())
    return out


loop._run = hashing_run
dist.exit_process(main())  # as the `nlc` command ends a rank
