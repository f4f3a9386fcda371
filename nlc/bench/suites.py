"""The suites by name: each a module nlc.bench.<name> with `run(config) -> table`, imported when first
run (torch loads only for a benchmark). Here, below both `nlc.bench` and its worker processes
(`nlc.bench.processes`), so that neither imports the other."""

from __future__ import annotations

import importlib

from nlc.bench.config import BenchConfig


def _suite(module: str):
    """The `run` of nlc.bench.<module>, imported when first called."""

    def run(cfg: BenchConfig) -> dict:
        return importlib.import_module(f"nlc.bench.{module}").run(cfg)

    run.__name__ = module
    return run


SUITES = {name: _suite(name) for name in ("frontend", "peer", "hope_peer", "roofline", "scaling", "models")}
SUITES["compile"] = _suite("compile_time")  # (a module named compile would read as the builtin)
