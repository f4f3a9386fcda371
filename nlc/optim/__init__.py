"""Deep optimizers: optimizer specs compiled to torch.optim.Optimizer subclasses.

    opt = nlc.optim.build_optimizer("examples/adam.nl", model.parameters(), lr=1e-3)

An optimizer spec, `optimizer NAME(hyper = default, ...) { lets and levels }`,
is compiled by `nlc.codegen.optimizer` to readable Python source for a
torch.optim.Optimizer subclass and executed. The spec's parameters are the
hyper-parameters: keyword arguments of the constructor (defaults: the spec's
values) and keys of every parameter group (a group may override any of them).
Equation numbers: NL = Nested Learning (Behrouz et al., arXiv:2512.24695).

Semantics of one step
=====================

Everything is per parameter tensor p of a parameter group that has a gradient
g = p.grad; tensors are parameter-shaped and arithmetic is elementwise.

Inputs. `grad` is g; `param` is p before this step; `step` is t, this parameter's
step count (1 at its first step; a parameter without a gradient is skipped and
its count does not advance). Hyper-parameters are Python numbers from p's group.

Levels. Exactly one level has `state params`: the root, whose state is p itself.
Every other level is a memory whose state lives in optimizer.state[p]:
  - `state like(param)` (or `like(L)` of such a level): a tensor S shaped like p,
    read entry by entry: `L` is S and `L(k)` is S * k (the value-less momentum
    memory of NL eqs. 10-13 is the key-1 case). `init zeros` (the default): S = 0;
    `init identity`: S = 1.
  - `state mlp(1, hidden, depth, residual)`: one small MLP R -> R (gelu; the same
    MLP as nlc.runtime.memory) applied to every entry: `L(k)` is MLP(k) entry by
    entry (DMGD, NL eq. 50). `init identity` starts it as the identity map (last
    layer zero, the residual path; hidden layers drawn from a fixed seed).

Context: a key k and a value v each step.
  - `grad(loss)`: k = 1 and v = g for a memory (momentum learns the gradient,
    NL eqs. 11-13). The root learns the task loss itself: its value is u = -g,
    the local surprise signal -grad L of NL eq. 56, so that its dot objective
    -<p, u> = <p, g> is the loss linearised at p (NL eq. 9: `objective dot` with
    `update gd` is gradient descent) and its l2 objective is NL eq. 56.
  - `grad(L)`: k = 1 and v = G_L, the gradient of level L's objective (below).
  - `(k, v)`: expressions over `grad`, `param`, `step`, hyper-parameters, lets and
    reads of levels.

Objective l(M(k), v), summed over the entries: `l2` 1/2 ||M(k) - v||^2, `dot`
-<M(k), v>, `huber(delta)`, `lp(p)`. Its gradient G with respect to the level's
state is taken at the state that reads see (the start of the level's period):
G = l'(S k, v) k entry by entry (dot: G = -v k; l2: G = (S k - v) k); for an MLP
memory, the gradient of the sum over the entries with respect to each weight.

Update rules, with eta = `lr` (default 1) and a = `retain` (default 1) evaluated
every step (numbers, hyper-parameters, expressions over `step`, or tensors for
elementwise rates):
  gd                    S <- a S - eta G
                        (dot objective, key 1: S <- a S + eta v; an EMA of v when eta = 1 - a)
  momentum(beta)        Z <- beta Z - eta G;  S <- a S + Z             (Titans eqs. 9-14)
  muon(beta, steps)     Z <- beta Z - eta G;  S <- a S + NS(Z)          (Muon; NS below)
  dgd                   refused (E511): eq. 57 needs the layer inputs; see examples/decayed_gd.nl
                        (NL eqs. 56-57: the delta rule's decay on top of the objective's gradient;
                        on the root with `objective dot`, G = g and this is eq. 57 with key 1:
                        p <- (a - eta') p - eta' g)
  delta_momentum(beta)  Z <- Z (beta I - G^T G) - eta G;  S <- a S + Z  (NL section 4.4, eqs. 48-49,
                        P = I; a weight is the matrix [shape[0], rest] and the product is taken on
                        the right so that it type-checks; vectors entry by entry: (beta - G^2) Z)
  adam(b1, b2, eps)     m <- b1 m + (1 - b1) G;  v <- b2 v + (1 - b2) G^2;
                        S <- a S - eta (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
                        (Adam; NL eqs. 101-105)
  `update L`            S <- a S - eta L'   with L' the new state of level L (a deep optimizer)
  `update EXPR`         S <- a S - eta EXPR over the levels' new states, e.g. m / (sqrt(v) + eps)
Z, m and v are kept in the state (keys `L.momentum`, `L.exp_avg`, `L.exp_avg_sq`).
For the root, S is p: p <- a p - eta u, so `retain 1 - lr * weight_decay` is
decoupled weight decay (AdamW). An MLP memory learns with `gd` only.

Reads. A level named in an `update` (`m`, `m(k)`) means its new state, after its
own update in this step; everywhere else (`let`s, contexts, gates, rule
arguments) a level means its state from before this step. `debias` divides a
read by 1 - a^n, with n the number of per-step updates that state has had (n = t
for the new state of a level updated every step: Adam's bias correction; 1 when
n = 0); its `retain` must be the same number every step.

Periods (docs/design.md §1.2 "Frequency is exact"). A level with `period N steps` keeps the
state that reads see fixed for N steps. At every step of a period its gradient is
taken at the period-start state and its rule advances a running state (key
`L.running`); when the period completes (t % N == 0) the running state becomes
the state reads see. So its state after a period is the per-step rule run over
that period's gradients in order; M3's slow momentum (NL Algorithm 1) is the gd
case: M2 <- M2 + beta3 * (sum of the period's gradients). N = 1 is the ordinary
case. A periodic root changes p every N steps (the running values in `L.running`).

Order within a step: read the states from before the step; evaluate the `let`s;
take the objective gradients (a `grad(L)` context after L); apply the updates, a
level whose new state another level's update reads first, the root last.

Newton-Schulz. `newton_schulz(x, steps)` and the `muon` rule orthogonalise a
tensor of two or more dims as the matrix [shape[0], rest] with Muon's quintic
iteration (coefficients 3.4445, -4.7750, 2.0315); vectors and scalars (biases,
gains) have no orthogonal form and pass through unchanged, so for them
examples/muon.nl is plain momentum SGD and examples/m3.nl is M3 without the
orthogonalisation (`nlc.optim.runtime.orthogonalize`). Embeddings are matrices
and are orthogonalised like any other; to keep them on another optimizer, give
them to a second optimizer.

The generated step never reads a tensor on the host (no `.item()`, no branching on
tensor values); it is device-agnostic and runs eagerly one tensor at a time (no
foreach path). State per parameter: tensors and the integer `step`, so
`state_dict()` / `load_state_dict()` round-trip exactly.

Errors: E510 a model spec where an optimizer is expected; E511 something the
optimizer back end cannot compile (model-only builtins such as `linear` or
`learned`, `init learned`, states other than like(param) / mlp(1, ...) / params,
`period never`, ...); E512 a parameter name that cannot be a keyword argument
(E511 and E512 are reported by `nlc check` too: nlc.passes.optimizer);
unknown hyper-parameter names are E208 (did-you-mean) here and a ValueError in
the constructor or a parameter group; a negative learning rate is a ValueError.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nlc import ir
from nlc.api import load
from nlc.codegen import load_source
from nlc.codegen.optimizer import generate_optimizer
from nlc.plan.optimizer import OptimizerPlan, plan_optimizer, require_optimizer
from nlc.passes.pipeline import check_ir

__all__ = ["OptimizerPlan", "build_optimizer", "optimizer_class", "plan_optimizer", "require_optimizer"]

_CLASSES: dict[str, type] = {}  # generated source -> class (generation is deterministic)


def build_optimizer(spec, params, **hyper):
    """Return a torch.optim.Optimizer for an optimizer spec (a path or a Program) over `params`.

    `params` is what torch.optim takes: an iterable of tensors or of parameter-group
    dicts (each may override any hyper-parameter). `hyper` overrides the spec's
    parameter defaults (unknown names are SpecError E208; a model spec is E510).
    """
    cls = optimizer_class(spec, **hyper)
    return cls(params)


def optimizer_class(spec, **hyper) -> type:
    """Return the generated torch.optim.Optimizer subclass of an optimizer spec (defaults: spec + hyper)."""
    program = _program(spec)
    require_optimizer(program)  # E510 before the parameters are checked
    checked = check_ir(program, hyper)
    source = generate_optimizer(checked.program, checked.params, checked.facts)
    cls = _CLASSES.get(source)
    if cls is None:
        module = load_source(source, f"optim_{program.name}")
        sys.modules.setdefault(module.__name__, module)  # torch.compile imports the class's module by name
        cls = module.Optimizer
        cls.nlc_source = source
        _CLASSES[source] = cls
    return cls


def _program(spec) -> ir.Program:
    if isinstance(spec, ir.Program):
        return spec
    if isinstance(spec, (str, Path)):
        return load(spec)
    raise TypeError(f"expected an optimizer spec (a path or an nlc Program), not {type(spec).__name__}")
