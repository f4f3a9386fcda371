"""The models the suites time: example specs from the repository, eager or compiled, seeded."""

from __future__ import annotations

from pathlib import Path

import torch

import nlc
from nlc.bench.config import BenchConfig, BenchError


def examples_dir() -> Path:
    """The repository's examples/ (not installed with the package)."""
    path = Path(nlc.__file__).resolve().parent.parent / "examples"
    if not path.is_dir():
        raise BenchError(f"no examples folder at {path}: this suite needs the nlc repository's examples/ "
                         "(run nlc bench from a git checkout installed with `pip install -e .`)")
    return path


def example(name: str) -> Path:
    return examples_dir() / f"{name}.nl"


def modes(cfg: BenchConfig) -> list[tuple[str, int]]:
    """(label, compiled) of the variants a suite times: eager (0), and compiled when compile is on
    (its chunks a compiled graph, `build`'s `compiled`)."""
    return [("eager", 0)] + ([("compiled", cfg.chunks_per_graph)] if cfg.compile else [])


def build(spec: str | Path, device: str = "cpu", compiled: int = 0, backend: str = "compiled", **params):
    """The model of a spec seeded with 0 on `device`; compiled: 0 eager, K > 0 its chunk steps compiled
    K chunks a graph (nlc.build(compile=True, chunks_per_graph=K); `modes` gives BenchConfig's K)."""
    torch.manual_seed(0)
    options = {"compile": True, "chunks_per_graph": compiled} if compiled else {}
    return nlc.build(nlc.load(spec), backend=backend, **options, **params).to(device)
