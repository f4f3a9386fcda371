"""The examples' memories stay bounded where a user first runs them (issue #15).

At Titans' step-size cap of 0.1, `nlc train examples/titans_lmm.nl --task mqar:kv=8 --seq 128`
stopped with a NaN loss at step 1: MQAR's PAD gaps feed one (k, v) pair to the memory for dozens of
tokens, and the state diverged in float32 in 5 of 12 initialisations. The examples cap it at 0.01
(docs/training.md, "Step sizes"); this checks the cap holds the state down at initialisation.
"""

from __future__ import annotations

import pytest
import torch

import nlc
from nlc.train.tasks import make_task
from tests.model_cases import ROOT

SEEDS = range(12)


def _largest_state(model, tokens) -> float:
    with torch.no_grad():
        logits, state = model(tokens, state=model.init_state(tokens.shape[0]))
    assert torch.isfinite(logits).all()
    return max(w.abs().max().item() for block in state["blocks"] for level in block["levels"].values()
               for w in level["W"].values())


@pytest.mark.parametrize("name", ["titans_lmm.nl"])
def test_the_memory_stays_bounded_on_mqar_batches_at_the_default_step_size(name):
    prog = nlc.load(ROOT / "examples" / name)
    task = make_task("mqar:kv=8")
    largest = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = nlc.build(prog)
        largest.append(_largest_state(model, task.batch(seed, 16, 128, 0).tokens))
    assert max(largest) < 10, largest
