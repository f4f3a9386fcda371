"""What a rule is: the `Rule` record every rule module fills in, and the `Ops` a step is written against.

A rule's eager step is one function, `step(W, g, aux, lr, retain, args, ops, count, key)`,
written with arithmetic operators and `ops` only, so that every back end runs the same
formula:

- the reference interpreter (nlc.interp) and the generated chunk fallback
  (nlc.runtime.scan.sequential_chunk) run it token by token on batched memory states
  ([B, d_in, d_out] matrices, [B, n] vectors) with `nlc.rules.ops.MEMORY`;
- the reference optimizer (nlc.optim.reference) and the trainer's step levels
  (nlc.train.steplevels) run it on parameter-shaped tensors with `nlc.optim.runtime.PARAMETERS`;
- the optimizer code generator (nlc.codegen.optimizer) runs it on symbolic values
  (`Code`), which turns the same formula into the generated step's lines.

Arguments: W the state (one weight), g its gradient, aux the rule's state buffers for this
weight (a dict keyed by `Rule.aux`), lr (eta) and retain (a) the gates, args the rule's
arguments by name, count the number of this update (from 1; `Rule.counts` rules only), key
the layer input (`Rule.needs_key` rules only). It returns the new state and the new aux
dict; it never changes its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from nlc.signature import Arg, ArgType, Builtin


class Ops(Protocol):
    """The operations a step may use besides + - * / and ** (one implementation per kind of state)."""

    torch: Any  # elementwise torch functions: ops.torch.sign(x), ...

    def sqrt(self, x): ...

    def orthogonalize(self, x, steps): ...  # Newton-Schulz of each matrix; vectors pass through

    def delta_decay(self, m, g, beta): ...  # m (beta I - g^T g) on the weight's input side (NL eq. 48)

    def key_decay(self, W, retain, lr, key): ...  # W (retain I - lr k k^T) on the input side (NL eq. 88)

    def bias_correction(self, beta, n): ...  # 1 - beta^n

    def keep(self, name: str, value, why: str = ""): ...  # a value the step stores (generated code names it)


Step = Callable[..., tuple[Any, dict]]


@dataclass(frozen=True)
class ChunkForm:
    """A rule's closed form over a chunk (all gradients at the chunk-start state, docs/design.md §1.2).

    The kernels live in `<package>.chunk` (torch code, imported by the runtime only, so that the
    front end never imports torch), the naive token-by-token loop they are tested against in
    `<package>.naive`, as flash-linear-attention keeps naive.py beside chunk.py. chunk.py defines
    `coefficients(**gates, like)` (the gates only: generated code computes it for every chunk
    before the loop), `apply(W, [carried,] grads, coefficients)` and `chunk(W, [carried,] grads,
    **gates)`, their composition; naive.py defines `reference` with `chunk`'s signature.
    `gates` names the gate keywords; `carries` is the aux buffer the kernels take and return
    besides the state (generated code keeps it as `<level>_S`). With `key_products`, `apply` and
    `chunk` take `products=`: each weight's layer inputs times the chunk-start weight, which the
    gradients' forward pass computed (`nlc.runtime.memory.grads(..., products=True)`), instead of
    computing them again (optional: None computes them). With `per_token`, chunk.py also
    defines `token_coefficients(**gates, like)`: the coefficients of every token's state inside the
    chunk, W_t = P_t W_0 [+ c_t S_0] - sum_{s<=t} M[t,s] g_s, which `read current` reads
    (nlc.runtime.inside; its docstring gives them).
    """

    package: str
    gates: tuple[str, ...] = ("lr", "retain")
    carries: str | None = None
    per_token: bool = False
    key_products: bool = False


@dataclass(frozen=True)
class Rule:
    """One update rule: everything nlc knows about it, in one place (its module in nlc/rules)."""

    name: str
    doc: str  # one line: the formula, with the paper equation it implements
    args: tuple[Arg, ...]
    step: Step
    aux: tuple[str, ...] = ()  # its state buffers besides the state, each shaped like it
    counts: bool = False  # the step reads `count` (bias correction): in-context levels keep aux["n"]
    needs_key: bool = False  # the step reads the layer input `key` (a model memory's; no optimizer has one)
    linear_in_grad: bool = False  # g enters only as lr * g: an optimizer need not form the dot objective's g
    chunk: ChunkForm | None = None
    flops: int = 1  # weighted sums of factored gradients per chunk update (nlc.flops)
    step_level: bool = False  # the training loop runs it for `period N steps` levels (nlc.train.steplevels)
    matrix_only: tuple[str, str] | None = None  # on a vector memory it is another rule: (what it does, hint)
    unit_keys: bool = False  # stable only with l2-normalised keys (random specs normalise them)
    bounded_grads: bool = False  # stable only while |g|^2 stays small: random specs keep it off MLP memories
                                 # and clip its objective (nlc.testing.strategies)
    optimizer_refusal: tuple[str, str] | None = None  # why an optimizer cannot run it, and the hint (E511)
    outer_gradient: bool = True  # the outer level learns through its update (sign's derivative is 0: lion's not)
    samples: tuple[str, ...] = ("",)  # argument lists random specs draw from: "", "(beta = 0.5)", ...

    @property
    def buffers(self) -> int:
        """State copies besides the state (nlc.passes.size)."""
        return len(self.aux)

    @property
    def builtin(self) -> Builtin:
        """Its entry in the language's builtin table (nlc.builtins.UPDATE_RULES)."""
        return Builtin(self.name, self.args, self.doc)

    def arg_values(self, given: Mapping[str, Any], convert: Callable[[Arg, Any], Any] = lambda a, v: v) -> dict:
        """Its arguments by name: `given` ones (converted), the others at their defaults."""
        return {a.name: convert(a, given[a.name]) if a.name in given else a.default for a in self.args}


def number_arg(arg: Arg, value):
    """An argument as the step reads it: a whole number for counts, a float for numbers, gates as they are."""
    if arg.type is ArgType.POSINT:
        return int(value)
    if arg.type is ArgType.NUMBER:
        return float(value)
    return value
