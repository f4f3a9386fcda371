"""`nlc bench`: nlc's benchmarks, one command, one results file.

Suites (each a module with `run(config) -> {"title", "columns", "rows", "notes"}`):

    frontend   ms a spec for `nlc.load` (parse + lower + checks; target 20 ms) and `nlc.generate`
               (the whole compile front end), every examples/*.nl
    peer       titans-pytorch's NeuralMemory against nlc's generated Titans memory, tokens/s and
               nlc/peer ratios, forward and forward+backward, eager and compiled (extra: '.[bench]')
    hope_peer  nested-learning's SelfModifyingTitans (in-context forward) against nlc's Hope block,
               forward and forward+backward through the updates, eager and compiled (extra: '.[bench]')
    roofline   achieved GFLOP/s against the fp32 matmul peak measured in the same run; the planned
               flops (nlc.flops) checked against torch's FlopCounterMode
    scaling    titans_lmm and hope from 1k to 64k tokens: streaming time (linear) and peak memory
               (flat, measured in a fresh process), whole-sequence forward+backward time (linear)
    models     reference interpreter vs generated eager vs generated compiled; hope vs titans_lmm
               vs transformer at equal parameter count

Measuring rules: every timing warms up once, then takes the best of several repeats
(`--repeats`); torch's threads are pinned with torch.set_num_threads for the whole run;
CUDA timings synchronise; comparisons are ratios of numbers measured side by side in one
run, never against numbers from another run or machine. Tests run the suites at tiny sizes
and check the shape of the results, never a time.

    nlc bench [SUITE ...] [--quick] [--threads N] [--device cpu|cuda] [--repeats N] [--processes N]
              [--no-compile] [--chunks-per-graph K] [--out DIR]

writes DIR/bench.json ({"environment": ..., "config": ..., "suites": {name: table}}) and DIR/bench.md.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from nlc.bench.config import BenchConfig, BenchError
from nlc.bench.suites import SUITES

__all__ = ["SUITES", "BenchConfig", "BenchError", "run_suites"]

NEEDS_EXAMPLES = ("frontend", "hope_peer", "roofline", "scaling", "models", "compile")
COMPILES = ("peer", "hope_peer", "roofline", "models", "compile")  # the suites with compiled variants


def run_suites(names: list[str], cfg: BenchConfig, out: Path | None = None, echo=print) -> dict:
    """Run suites in order, echo each table as it finishes and (with out) rewrite bench.json/.md after each."""
    import torch

    from nlc.bench import report
    from nlc.bench.build import examples_dir
    from nlc.bench.timing import environment

    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise BenchError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda: this torch sees no CUDA GPU (use --device cpu)")
    if any(n in NEEDS_EXAMPLES for n in names):
        examples_dir()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    results = {"environment": environment(cfg.device), "config": asdict(cfg), "suites": {}}
    for name in names:
        if cfg.processes > 1:
            from nlc.bench.processes import run_in_processes

            result = run_in_processes(name, cfg)
        else:
            result = SUITES[name](cfg)
        if cfg.compile and cfg.chunks_per_graph > 1 and name in COMPILES:
            result["notes"] = [*result.get("notes", []), f"compiled: {cfg.chunks_per_graph} consecutive chunks a "
                               "compiled graph (--chunks-per-graph)"]
        results["suites"][name] = result
        echo("\n\n".join(report.format_table(t) for t in report.tables(result)) + "\n")
        if out is not None:
            report.write(out, results)
    return results
