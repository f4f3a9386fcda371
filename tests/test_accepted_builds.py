"""Accepted means correct (issue #12): whatever `nlc check` accepts builds in both back ends and agrees.

Each test here pins one form that once passed `nlc check` and then built wrongly or not at all:
`init copy` chains, a vector memory with a constant key, copies between levels of different
frequencies. The closing property (`test_checked_specs_build_and_agree`) states the class: a
random spec that checks builds in both back ends and runs (whole and streamed) raising nothing
but SpecError, and where both build, they agree.
"""

from __future__ import annotations

import pytest
import torch

import nlc
from nlc.testing import check_causal, check_matches_reference, check_streaming

LEVEL = """
    level {name} {{
      state {state}
      init {init}
      context {context}
      objective l2
      update {update}
      lr 0.1
      period {period}
    }}"""


def _model(levels: str, out: str, chunk: int = 2, dim: int = 8) -> str:
    return (f"model m(dim = {dim}, chunk = {chunk}) {{\n  block b0 {{\n    let h = rmsnorm(x)\n{levels}\n"
            f"    out = {out}\n  }}\n}}\n")


def _level(name: str, init: str = "learned", state: str = "linear(dim, dim)", update: str = "gd",
           context: str = "(l2norm(linear(h, dim)), linear(h, dim))", period: str = "chunk tokens") -> str:
    return LEVEL.format(name=name, state=state, init=init, context=context, update=update, period=period)


TOKENS = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(3))


# ---- a vector memory with a constant key ----------------------------------------------------


@pytest.mark.parametrize("update", ["gd", "momentum", "dgd", "adam"])
@pytest.mark.parametrize("chunk", [1, 2])
def test_vector_memory_with_a_constant_key_matches_the_reference(update, chunk):
    """M(k) = m * k with k = 1: the compiled gradients were [B, n] reads against [B, C, n] values."""
    spec = _model(_level("v", init="identity", state="vector(dim)", update=update,
                         context="(1, linear(h, dim))"), "v(h)", chunk=chunk)
    check_matches_reference(spec, tokens=TOKENS)
    check_streaming(spec, tokens=TOKENS)
    check_causal(spec, tokens=TOKENS)
