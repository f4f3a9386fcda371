"""What a benchmark run measures: the sizes of every suite (two profiles) and the run's settings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import nlc


class BenchError(Exception):
    """A problem with the request (unknown suite, no CUDA, no examples/): a message, exit code 2."""


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"
    threads: int | None = None  # torch threads; None leaves torch's setting
    repeats: int = 3  # timed calls after a warm-up; the best is reported
    processes: int = 1  # >1: each suite runs in this many fresh processes, reported as the median
    compile: bool = True  # add nlc.build(compile=True) columns/rows where a suite has them
    chunks_per_graph: int = 1  # compiled variants: consecutive chunks a compiled graph (nlc.build)
    batch: int = 2  # sequences a batch (peer, roofline, models)
    chunk: int = 16
    layers: int = 2
    # frontend: every examples/*.nl; loading is cheap, so more repeats
    frontend_repeats: int = 20
    # peer: titans-pytorch NeuralMemory against nlc's generated memory
    peer_dims: tuple[int, ...] = (64, 128, 256)
    peer_seqs: tuple[int, ...] = (256, 1024, 4096)
    # hope_peer: nested-learning's SelfModifyingTitans against nlc's Hope block, at the peer's chunk sizes
    hope_peer_configs: tuple[tuple[int, int], ...] = ((64, 256), (128, 1024))  # (dim, seq)
    hope_chunk: int = 8  # M_k, M_v, M_eta, M_alpha
    hope_memory_chunk: int = 64  # M_memory
    # roofline: achieved GFLOP/s against the measured matmul peak
    roofline_models: tuple[str, ...] = ("titans_lmm", "hope", "transformer")
    roofline_dims: tuple[int, ...] = (128, 256)
    roofline_seq: int = 1024
    # scaling: time and memory against sequence length
    scaling_models: tuple[str, ...] = ("titans_lmm", "hope")
    scaling_dim: int = 64
    lengths: tuple[int, ...] = tuple(1024 * 2**i for i in range(7))  # 1k .. 64k
    piece: int = 1024  # streaming piece
    train_cap: int = 8192  # longest whole-sequence forward+backward
    # models: reference vs generated; hope vs titans_lmm vs transformer at equal parameter count
    models: tuple[str, ...] = ("titans_lmm", "hope")
    matched: tuple[str, ...] = ("hope", "titans_lmm", "transformer")  # the first sets the parameter count
    models_dim: int = 64
    models_seq: int = 256
    ref_seq: int = 32  # the reference interpreter is slow: a shorter sequence
    # compile: compile time, graphs and speed-up of torch.compile, one example of each block kind a row
    compile_models: tuple[str, ...] = ("titans_lmm", "hope", "titans_mac", "titans_mag", "titans_mal",
                                       "transformer", "mixed_memories", "multi_head_titans", "shared_memory",
                                       "cms_titans")  # (hope_tokens: refused, its loss levels are second order)
    compile_seq: int = 256


DEFAULT = BenchConfig()
QUICK = replace(DEFAULT, frontend_repeats=5, peer_dims=(64,), peer_seqs=(256, 1024), hope_peer_configs=((64, 256),), roofline_dims=(64,),
                roofline_seq=256, lengths=(1024, 2048, 4096), train_cap=2048, models_seq=128, ref_seq=16,
                compile_models=("titans_lmm", "titans_mac"), compile_seq=128)


def profile(quick: bool = False, **overrides) -> BenchConfig:
    """The default or quick profile with some settings replaced (None leaves a setting as it is)."""
    return replace(QUICK if quick else DEFAULT, **{k: v for k, v in overrides.items() if v is not None})


def config_json(cfg: BenchConfig) -> str:
    """A config as JSON, for a worker process (`config_from_json` reads it back)."""
    return json.dumps(asdict(cfg))


def config_from_json(text: str) -> BenchConfig:
    """The BenchConfig of `config_json`: JSON lists back to the tuples the fields hold."""
    def tuples(value):
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    data = json.loads(text)
    return BenchConfig(**{f.name: tuples(data[f.name]) for f in fields(BenchConfig) if f.name in data})


def default_out() -> Path:
    """benchmarks/results when run from inside the repository, else ./bench-results."""
    repo = Path(nlc.__file__).resolve().parent.parent
    cwd = Path.cwd().resolve()
    if (repo / "benchmarks").is_dir() and cwd.is_relative_to(repo):
        return repo / "benchmarks" / "results"
    return Path("bench-results")
