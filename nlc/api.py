"""The public front-end API: load, loads, check (DESIGN.md section 4)."""

from __future__ import annotations

from pathlib import Path

from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.lower import lower
from nlc.parser import parse
from nlc.passes.pipeline import Checked, check_ir
from nlc.source import Source

YAML_SUFFIXES = (".yaml", ".yml")


def loads(text: str, path: str = "<string>", format: str | None = None, **params) -> ir.Program:
    """Return the checked IR of spec text (nlc, or YAML when format="yaml" or path ends .yaml)."""
    return _checked(text, path, format, params).program


def load(path: str | Path, **params) -> ir.Program:
    """Return the checked IR of a spec file (.nl, or .yaml/.yml)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Diagnostic("E601", f"no such spec file: {path}", hint="check the path")]) from None
    except IsADirectoryError:
        raise SpecError([Diagnostic("E601", f"{path} is a folder, not a spec file")]) from None
    except OSError as e:  # permissions, a name too long, a device error...
        raise SpecError([Diagnostic("E601", f"cannot read {path}: {e.strerror or e}")]) from None
    except UnicodeDecodeError as e:
        raise SpecError([Diagnostic("E602", f"{path} is not UTF-8 text (byte {e.start})",
                                    hint="specs are UTF-8 text files")]) from None
    return loads(text, str(path), **params)


def check(program: ir.Program | str | Path, **params) -> list[Diagnostic]:
    """Check a program (with parameter overrides); raise SpecError on errors, return warnings.

    Besides parameters, every function here that checks takes the size limits `max_params`,
    `max_state`, `max_depth` and `max_blocks` (nlc.passes.size.SizeLimits: E420, E421).
    """
    if not isinstance(program, ir.Program):
        program = load(program, **params)
    return check_ir(program, params).warnings


def check_with_params(program: ir.Program, **params) -> Checked:
    """Return the checked program with its parameter values (for the back ends)."""
    return check_ir(program, params)


def _checked(text: str, path: str, format: str | None, params) -> Checked:
    is_yaml = format == "yaml" or (format is None and path.endswith(YAML_SUFFIXES))
    if "\x00" in text:
        raise SpecError([Diagnostic("E602", f"{path} contains NUL bytes: it is not a text spec")])
    source = Source(text, path)
    if is_yaml:
        from nlc.yaml_spec import parse_yaml

        tree = parse_yaml(source)
    else:
        tree = parse(source)
    rep = Reporter()
    program = lower(tree, rep)
    rep.raise_if_errors()
    return check_ir(program, params)


BACKENDS = ("compiled", "reference")


def build(program: ir.Program | str | Path, backend: str = "compiled", kernels: str = "chunked",
          compile: bool = False, **params):
    """Return an nn.Module for a model spec: generated code (default) or the reference interpreter.

    kernels="sequential" makes the generated code run every level token by token inside
    each chunk instead of using the closed-form chunk kernels (for testing them).
    compile=True runs each block's chunk step under torch.compile: a few small graphs that
    every chunk reuses (blocks without a chunk loop: their forward), see
    `nlc.runtime.compile.compile_chunks`. The first call of each shape compiles (tens of
    seconds on a CPU); later calls are faster than eager.
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
    plan = plan_model(checked.program, checked.params)
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

        compile_chunks(model)
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
