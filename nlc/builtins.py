"""Every builtin of the nlc language, in one registry.

Expression ops (`linear`, `silu`, `attention`, ...), and the spec forms a level
is made of: state kinds, initialisations, context flows, objectives and update
rules. Each entry has a signature (checked by `nlc.passes.shapes`) and a
one-line meaning. Update rules come from their registry, nlc.rules (docs/design.md
"The rule registry"; §1.3 gives the equations).
"""

from __future__ import annotations

from nlc.objectives import OBJECTIVES as _OBJECTIVES
from nlc.rules import RULES, step_level_rules
from nlc.signature import REQUIRED, Arg, ArgType, Builtin  # noqa: F401 (re-exported: B.Arg, B.ArgType, ...)
from nlc.unary import UNARY_OPS as _UNARY


def _b(name: str, doc: str, *args: Arg, **kw) -> tuple[str, Builtin]:
    return name, Builtin(name, tuple(args), doc, **kw)


T, I, N0, F, B, G, L = (ArgType.TENSOR, ArgType.POSINT, ArgType.NONNEG, ArgType.NUMBER,
                        ArgType.BOOL, ArgType.GATE, ArgType.LEVEL)

_UNARY_DOC = "elementwise {}"
UNARY_OPS = tuple(_UNARY)  # nlc.unary: their scalar forms and the code that calls them

OPS: dict[str, Builtin] = dict([
    _b("linear", "x W (+ b): a slow projection to `out` features", Arg("x", T), Arg("out", I),
       Arg("bias", B, False)),
    _b("conv", "causal depthwise 1-D convolution over time, `width` taps", Arg("x", T), Arg("width", I, 4)),
    _b("l2norm", "x / ||x||_2 over features", Arg("x", T)),
    _b("rmsnorm", "RMSNorm with a learned gain", Arg("x", T)),
    _b("attention", "causal softmax attention (a non-parametric memory); `window` > 0 slides, "
       "`segment` > 0 attends within aligned segments, `persistent` learned memory tokens are "
       "prepended to keys and values, `memory` adds a second key/value stream at the same positions "
       "(Titans MAC)", Arg("x", T), Arg("heads", I, 1), Arg("window", N0, 0), Arg("segment", N0, 0),
       Arg("persistent", N0, 0), Arg("memory", T, None)),
    _b("swiglu", "SwiGLU MLP: W3 (silu(W1 x) * W2 x) with `hidden` features", Arg("x", T), Arg("hidden", I)),
    _b("concat", "concatenate features", variadic=True),
    _b("slice", "features start, ..., stop - 1 of x (Python's x[..., start:stop])", Arg("x", T), Arg("start", N0),
       Arg("stop", I)),
    _b("mean", "mean over features: a width-1 value", Arg("x", T)),
    _b("learned", "a learned scalar (a slow parameter) starting at `init`", Arg("init", F)),
    _b("newton_schulz", "orthogonalise a matrix by `steps` quintic Newton-Schulz iterations (Muon)",
       Arg("x", T), Arg("steps", I, 5), scope="optimizer"),
    *(_b(u, _UNARY_DOC.format(u), Arg("x", ArgType.ANY)) for u in UNARY_OPS),
])

STATES: dict[str, Builtin] = dict([
    _b("linear", "a matrix memory M(k) = k W, W of shape [d_in, d_out]", Arg("d_in", I), Arg("d_out", I)),
    _b("mlp", "an MLP memory of `depth` layers, `hidden` features, `residual` x + MLP(x)",
       Arg("dim", I), Arg("hidden", I, None), Arg("depth", I, 2), Arg("residual", B, True)),
    _b("vector", "a vector memory of n features: read as M(k) = m * k, or m alone", Arg("n", I)),
    _b("like", "state shaped like a parameter (`param`) or another level's state", Arg("of", ArgType.ANY)),
    _b("params", "the parameters being optimised (the root level of an optimizer)", scope="optimizer"),
])

INITS: dict[str, Builtin] = dict([
    _b("learned", "a slow parameter that the outer level trains (meta-learned initial state)"),
    _b("zeros", "all zeros"),
    _b("identity", "the identity map (an MLP memory starts as its residual path only)"),
    _b("copy", "the initial state of another level with the same state shape", Arg("of", L)),
    _b("reset", "starts as `copy(of)`, and restarts from `of`'s current state at the end of each of `of`'s "
       "periods (nested CMS, NL eq. 72)", Arg("of", L), scope="model"),
])


def attention_cache_length(window: int, segment: int) -> int | None:
    """The fixed length of `attention`'s key/value cache (nlc.runtime.layers.Attention.capacity), or None
    when its length changes from call to call: with a window it keeps the last window - 1 tokens (fewer
    when segments are shorter), from the first token on. The size estimate (nlc.passes.size) counts it."""
    if not window:
        return None
    return min(window - 1, segment - 1) if segment else window - 1


COPY_INITS = ("copy", "reset")  # inits that start from another level's initial state

READS: dict[str, Builtin] = dict([
    _b("chunk_start", "a read inside a chunk sees the chunk-start state (NL eq. 90; the default)", scope="model"),
    _b("current", "a read at token t sees the state after the chunk's updates up to and including t (Titans, "
       "TTT's mini-batch form); every gradient is still taken at the chunk-start state", scope="model"),
])

# the rules whose per-token states inside a chunk `read current` reads (nlc.runtime.inside; E424)
CURRENT_READ_RULES = tuple(name for name, rule in RULES.items() if rule.chunk is not None and rule.chunk.per_token)

CONTEXTS: dict[str, Builtin] = dict([
    _b("grad", "the gradients of `of`'s objective (a level) or of the task loss (`loss`): "
       "optimizer-as-memory; key 1, value the gradient", Arg("of", ArgType.ANY)),
    _b("loss", "the gradients of the task loss with respect to this level's state (CMS, ordinary training)"),
])

# Derived from the objective registry (nlc.objectives): each objective's signature, value and gradient.
OBJECTIVES: dict[str, Builtin] = {name: o.builtin for name, o in _OBJECTIVES.items()}

# Derived from the rule registry: each rule's signature and meaning live in its module of nlc/rules.
UPDATE_RULES: dict[str, Builtin] = {name: rule.builtin for name, rule in RULES.items()}

# The rules the training loop runs for a model's `period N steps` levels (nlc.train.steplevels, E308).
STEP_LEVEL_RULES = step_level_rules()

# Names every scope provides without a declaration.
MODEL_INPUTS = {"x": "the block's input stream, [B, T, dim]"}
OPTIMIZER_INPUTS = {
    "grad": "the gradient of the parameter being optimised",
    "param": "the parameter being optimised",
    "step": "the optimiser step count, starting at 1",
}
IMPLICIT_MODEL_PARAMS = {"dim": 64, "vocab": 256}  # every model has these unless it declares them

FORM_TABLES = {
    "state": STATES,
    "init": INITS,
    "context": CONTEXTS,
    "objective": OBJECTIVES,
    "update": UPDATE_RULES,
    "read": READS,
}
FORM_WHAT = {
    "state": "state kind",
    "init": "initialisation",
    "context": "context flow",
    "objective": "objective",
    "update": "update rule",
    "read": "read mode",
}
