"""The public back-end API: build (a model), generate (its source), build_optimizer (docs/design.md §3).

Above the front end (nlc.api) and every back end. The back ends import torch (and the code
generator jinja2) when they load; `import nlc` must not, so that `nlc check` starts fast: they
are imported when a function here is first called.
"""

from __future__ import annotations

from pathlib import Path

from nlc import ir
from nlc.api import load
from nlc.errors import Diagnostic, SpecError
from nlc.passes.pipeline import check_ir


BACKENDS = ("compiled", "reference")


def build(program: ir.Program | str | Path, backend: str = "compiled", kernels: str = "chunked",
          compile: bool = False, chunks_per_graph: int = 1, **params):
    """Return an nn.Module for a model spec: generated code (default) or the reference interpreter.

    kernels="sequential" makes the generated code run every level token by token inside
    each chunk instead of using the closed-form chunk kernels (for testing them).
    compile=True runs each block's chunk step under torch.compile: a few small graphs that
    every chunk reuses (blocks without a chunk loop: their forward), see
    `nlc.runtime.compile.compile_chunks`. The first call of each shape compiles (tens of
    seconds on a CPU); later calls are faster than eager. chunks_per_graph (with compile=True):
    consecutive chunks run as one compiled graph, paying a compiled call's fixed cost once a group
    (faster steps where chunks are small, longer compiles).
    `torch.compile(model)` also works but unrolls the chunk loop into one graph.
    """
    import torch  # noqa: F401 - the back ends need it; the front end does not

    from nlc.plan import plan_model

    if not isinstance(program, ir.Program):
        program = load(program, **params)  # the overrides apply to the spec's defaults too (`dim = 10**12`)
    if not program.is_model:
        raise SpecError([Diagnostic("E501", f"`{program.name}` is an optimizer, not a model", program.name_span,
                                    "build optimizers with `nlc.build_optimizer`")])
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    checked = check_ir(program, params)
    plan = plan_model(checked)
    if chunks_per_graph != 1 and not compile:
        raise ValueError("chunks_per_graph applies with compile=True (it groups compiled chunk steps)")
    if backend == "reference":
        if compile:
            raise ValueError("compile=True applies to the generated back end, not the reference interpreter")
        from nlc.interp import ReferenceModel

        return ReferenceModel(plan)
    from nlc.codegen import build_generated

    if kernels not in ("chunked", "sequential"):
        raise ValueError(f"kernels must be 'chunked' or 'sequential', not {kernels!r}")
    model = build_generated(checked.program, plan, kernels)
    if compile:
        from nlc.runtime.compile import compile_chunks

        compile_chunks(model, chunks_per_graph=chunks_per_graph)
    return model


def generate(program: ir.Program | str | Path, **params) -> str:
    """Return the generated Python source of a spec (deterministic: same spec, same bytes)."""
    from nlc.codegen import generate as _generate

    if not isinstance(program, ir.Program):
        program = load(program, **params)
    return _generate(program, **params)


def build_optimizer(spec: ir.Program | str | Path, params, **hyper):
    """Return a torch.optim.Optimizer compiled from an optimizer spec (semantics: nlc.optim)."""
    from nlc.optim import build_optimizer as _build_optimizer

    return _build_optimizer(spec, params, **hyper)
