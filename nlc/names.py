"""Python names for spec names: the generator's namespace and the user's never meet.

Any identifier the grammar accepts may name a block, a `let` or a level, including
Python keywords, builtins, `nn.Module` attributes (`forward`, `to`, `training`,
`state_dict`, ...), dunder names and the generator's own helper names. Generated
code (and the reference interpreter, which uses the same plan) keeps the spec's
name wherever it is safe and otherwise mangles it, always the same way:

- a name that starts with two underscores gets a `v` in front (Python would
  otherwise mangle `self.__x` inside a class, and dunder names are the
  interpreter's);
- a name that is reserved (below), or that ends like a name the generator derives
  from another one (`q_c`, the chunk slice of `q`; `memory_init`, the learned
  initial state of level `memory`), gets trailing `_` until it is neither;
- a `NameAllocator` keeps the mapping one-to-one (`to` and `to_` in one block do
  not meet).

Reserved are Python's keywords and builtins, the names the generated modules
import or use as locals, every attribute of `torch.nn.Module` (a slow layer
becomes an attribute of its block), the attributes the generated and reference
block classes define, and the names the safety audit forbids
(`nlc.codegen.safety`). Class names are CamelCase with a suffix that no import or
local has: `MemoryLayerBlock`, `TitansLmmModel`, `AdamOptimizer`.
"""

from __future__ import annotations

import builtins
import functools
import keyword

# The generated modules' imports and locals (model and optimizer code).
GENERATOR_NAMES = frozenset({
    "torch", "F", "nn", "math", "rt", "rt_layers", "rt_memory", "rt_scan", "rt_bundle", "rt_heads", "rt_loss", "rt_inside",
    "rt_shared", "shared", "items", "parts", "t0",
    "check_alignment", "check_stream", "StepLevelSpec",
    "carried_state", "detach_state",
    "self", "x", "s", "e", "T", "out", "outs", "caches", "state", "levels", "learned", "like", "batch", "tokens",
    "step", "period", "full", "streaming", "logits", "new_states", "block", "block_state", "y", "Model",
    "closure", "loss", "group", "p", "grad", "param", "update", "Optimizer",
})
# Suffixes of names the generator derives from a spec name (`q_c`: the chunk slice of q; `mem_S`: its momentum...).
GENERATOR_SUFFIXES = ("_c", "_g", "_S", "_aux", "_pending", "_gates", "_coef", "_parts", "_init", "_state", "_ends", "_at", "_bundle",
                      "_wave", "_run", "_inside", "_items", "_period", "_periods")
# Attributes of the generated block classes and of the interpreter's ReferenceBlock beyond nn.Module's
# (tests/test_hostile_codegen.py checks that this list is complete).
BLOCK_ATTRIBUTES = frozenset({
    "chunk", "compiled_step", "chunk_step", "init_state", "forward",
    "period_step", "compiled_period",  # blocks whose slower levels work once a period (nlc.codegen.emit.PeriodWork)
    "plan", "by_level", "token", "eval_node", "gradients", "gradient", "apply", "rule",
    "embed", "blocks", "norm", "head", "alignment", "step_levels", "online_levels", "nlc_source",
    "learn_from_loss", "loss_chunk", "second_order", "start_periods", "learn",  # `context loss` levels in tokens
    "heads_in_batch", "heads_apart", "restart",  # the interpreter's multi-head and `init reset` levels
    "shared_chunk", "shared_blocks", "learn_shared",  # models with shared levels
})
# Names that run code or reach the interpreter (the safety audit rejects generated code that uses them).
FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "__import__", "open", "input", "breakpoint", "globals", "locals", "vars",
    "getattr", "setattr", "delattr", "memoryview", "help", "exit", "quit", "os", "sys", "subprocess",
    "importlib", "builtins", "__builtins__", "pickle", "marshal", "ctypes",
})


@functools.cache
def reserved() -> frozenset[str]:
    """Every name a spec name must not become (computed once; importing torch is left to the back ends)."""
    from torch import nn

    module_attributes = frozenset(dir(nn.Module)) | frozenset(vars(nn.Module()))
    return (frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) | GENERATOR_NAMES
            | BLOCK_ATTRIBUTES | FORBIDDEN_NAMES | module_attributes)


def py_name(name: str) -> str:
    """A Python name for a spec name that no import, local, attribute or derived name of nlc's uses."""
    while True:
        if name.startswith("__"):
            name = "v" + name
        elif name in reserved() or name.endswith(GENERATOR_SUFFIXES):
            name += "_"
        else:
            return name


def camel(name: str, suffix: str) -> str:
    """`memory_layer`, "Block" -> `MemoryLayerBlock` (a class name; the suffix keeps it apart from imports)."""
    base = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)
    if base[:1].isdigit():
        base = "N" + base
    return base + suffix


class NameAllocator:
    """One-to-one Python names: each spec name gets its own, then helpers get fresh ones."""

    def __init__(self):
        self.taken: set[str] = set(reserved())

    def take(self, name: str) -> str:
        """A Python-safe name for `name`, different from every name given out before."""
        name = py_name(name)
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def fresh(self, base: str) -> str:
        """A new name built from `base` (`base`, `base_2`, `base_3`, ...)."""
        base = py_name(base)
        name, i = base, 2
        while name in self.taken or name.endswith(GENERATOR_SUFFIXES):
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name
