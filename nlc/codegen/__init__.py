"""IR -> Python source (jinja2 templates), and executing it as a module.

`generate(program)` returns deterministic, readable source that imports only
torch and `nlc.runtime`; `build_generated` executes it with its text registered
in linecache, so tracebacks show the generated lines. Decisions are made in
`nlc.codegen.emit`; the templates only lay text out.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import sys
import types
from dataclasses import MISSING, fields
from pathlib import Path

from nlc import ir
from nlc.codegen.emit import emit_block, initial_state, py_value
from nlc.codegen.layout import ENV, display_path, spec_hash
from nlc.codegen.optimizer import generate_optimizer
from nlc.codegen.safety import audit_source, comment_text
from nlc.files import atomic_write_text
from nlc.names import camel
from nlc.passes.pipeline import check_ir
from nlc.plan.model import ModelPlan, plan_model
from nlc.runtime.steplevel import StepLevelSpec
from nlc.version import __version__

__all__ = ["build_generated", "generate", "generate_model", "load_source", "spec_hash"]


def generate_model(program: ir.Program, plan: ModelPlan, kernels: str = "chunked") -> str:
    """Return the Python source of a model plan (kernels: "chunked" or "sequential", see emit_block)."""
    classes = {}
    for block in plan.blocks:
        classes.setdefault(block.class_name, emit_block(block, kernels))
    params = ", ".join(f"{k}={v}" for k, v in sorted(plan.params.items()))
    text = ENV.get_template("model.py.j2").render(
        version=__version__,
        spec_path=comment_text(display_path(plan.spec_path)),
        spec_hash=spec_hash(program),
        params=params,
        name=plan.name,
        kind="model",
        vocab=plan.vocab,
        dim=plan.dim,
        alignment=plan.alignment,
        step_levels=[(py_value(k), _step_level_source(v)) for k, v in plan.step_levels().items()],
        online_levels=[py_value(n) for n in plan.online_levels()],
        blocks=list(classes.values()),
        bundles=any(code.bundles for code in classes.values()),
        chunk_loops=any(code.step_params for code in classes.values()),
        multi_head=any(lv.heads > 1 for code in classes.values() for lv in code.plan.levels),
        current_reads=any(lv.read_current for code in classes.values() for lv in code.plan.levels),
        instances=[b.class_name for b in plan.blocks],
        model_class=_model_class(plan.name),
        loss_chunk=plan.loss_chunk,
        second_order=any(not lv.first_order for _, lv in plan.loss_levels),
        loss_start_lines=_loss_start_lines(plan),
        loss_learn_lines=_loss_learn_lines(plan),
        shared_chunk=plan.shared_chunk,
        shared_blocks=py_value(tuple(sorted({i for sh in plan.shared for i in sh.writers}))),
        shared_init_lines=_shared_init_lines(plan),
        shared_state_lines=_shared_state_lines(plan),
        shared_learn_lines=_shared_learn_lines(plan, kernels),
    )
    audit_source(text, plan.name)
    return text


def _loss_start_lines(plan: ModelPlan) -> list[str]:
    """`start_periods`: each loss level's state enters the graph at its period start."""
    lines = []
    for i, lv in plan.loss_levels:
        level = f"blocks[{i}][\"levels\"][{lv.name!r}]"
        lines += [f"if position % {lv.period} == 0:  # {lv.name}",
                  f"    {level} = dict({level}, W=rt_loss.track({level}[\"W\"]))"]
    return lines


def _loss_learn_lines(plan: ModelPlan) -> list[str]:
    """`learn`: at a loss level's period end, its loss over the period's chunks, then its step."""
    lines = []
    for i, lv in plan.loss_levels:
        level = f"blocks[{i}][\"levels\"][{lv.name!r}]"
        chunks = lv.period // plan.loss_chunk
        args = ", ".join(f"{k!r}: {py_value(v)}" for k, v in lv.rule_args.items())
        lines += [f"if position % {lv.period} == 0 and e >= {lv.period}:  # {lv.name}: {lv.rule}, every "
                  f"{lv.period} tokens",
                  f"    loss = rt_loss.period_loss(torch.cat(parts[-{chunks}:], dim=1), tokens[:, e - {lv.period}:e])",
                  f"    {level} = rt_loss.step({level}, loss, {lv.rule!r}, lr={py_value(lv.lr)}, "
                  f"retain={py_value(lv.retain)}, args={{{args}}}, first_order={lv.first_order})"]
    return lines


def _shared_init_lines(plan: ModelPlan) -> list[str]:
    """A shared level's learned initial state is the model's (one for all its writers)."""
    return [f"self.{sh.var}_init = rt_memory.MemoryInit({py_value(sh.weights)}, {sh.kind!r}, {sh.residual})"
            for sh in plan.shared if sh.init == "learned"]


def _shared_state_lines(plan: ModelPlan) -> list[str]:
    """`init_state`: each shared level's initial state and its rule's buffers."""
    lines = []
    for sh in plan.shared:
        lines += [f"{sh.var} = {{k: v.to(like).contiguous() for k, v in {initial_state(sh)}.items()}}",
                  f"shared[{sh.name!r}] = {{\"W\": {sh.var}, \"aux\": rt_shared.initial_aux({sh.rule!r}, {sh.var})}}"]
    return lines


def _shared_learn_lines(plan: ModelPlan, kernels: str) -> list[str]:
    """`learn_shared`: each shared level's step over its writers' items, in model order."""
    lines = []
    for sh in plan.shared:
        items = ", ".join(f"items[{i}][{sh.name!r}]" for i in sh.writers)
        objective = py_value(sh.learns_in(plan)[0].objective)
        lines.append(f"shared[{sh.name!r}] = rt_shared.learn({sh.rule!r}, shared[{sh.name!r}], [{items}], "
                     f"{objective}, kernels={kernels!r})")
    return lines


def _step_level_source(spec: StepLevelSpec) -> str:
    """`StepLevelSpec(level=..., period=..., ...)`: every field by name, so a reader sees what the trainer runs
    (an optional field only where it is not its default)."""
    shown = [f for f in fields(spec) if f.default is MISSING or getattr(spec, f.name) != f.default]
    return "StepLevelSpec(" + ", ".join(f"{f.name}={py_value(getattr(spec, f.name))}" for f in shown) + ")"


def _model_class(name: str) -> str:
    return camel(name, "Model")


def generate(program: ir.Program, **params) -> str:
    """Return the generated Python source of a spec: a model module or an optimizer class."""
    checked = check_ir(program, params)
    if not checked.program.is_model:
        return generate_optimizer(checked.program, checked.params, checked.facts)
    return generate_model(checked.program, plan_model(checked))


def _cache_dir() -> Path:
    return Path(os.environ.get("NLC_CACHE_DIR", Path.home() / ".cache" / "nlc")) / "generated"


def load_source(source: str, name: str) -> types.ModuleType:
    """Execute generated source as a module whose tracebacks show the generated lines.

    The source is written (content-addressed, atomically) under ~/.cache/nlc/generated
    (or $NLC_CACHE_DIR) so that every tool (tracebacks, pdb, profilers) can read it,
    and registered in linecache as well, in case the cache cannot be written.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}_{digest}.py"
    try:
        if not path.exists():
            atomic_write_text(path, source)
        filename = str(path)
    except OSError:
        filename = f"<nlc-generated {name} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"nlc_generated_{name}_{digest}")
    module.__file__ = filename
    sys.modules[module.__name__] = module  # torch.compile and pickle find classes by their module's name
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def build_generated(program: ir.Program, plan: ModelPlan, kernels: str = "chunked"):
    """Return an instance of the generated model for a plan."""
    source = generate_model(program, plan, kernels)
    module = load_source(source, plan.name)
    model = module.Model()
    model.nlc_source = source
    return model
