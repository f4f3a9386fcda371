"""The reference optimizer: `nlc.optim`'s semantics executed literally, to test generated code against.

Slow and plain on purpose. It evaluates the plan's nodes every step, one value per
node (a level read inside an `update` when that update runs, after the updates it
reads: `nlc.optim`'s new states), objective gradients are taken with
torch.autograd (not the closed forms the generator writes), update rules are
their registry entries' eager steps (nlc.rules), and periods keep a visible and a
running state. It shares with the generated code only the plan (which level is
which, the order of a step), the state's initial values and each rule's step (which
the generator writes out as text). Tests compare the
two on the example specs and on random ones (tests/test_optim.py).

    opt = reference_optimizer("examples/m3.nl", model.parameters(), lr=1e-3)
"""

from __future__ import annotations


import torch

from nlc.optim import _program
from nlc.optim import runtime as rt
from nlc.plan.ops import Const, Hyper, Op, Operand
from nlc.plan.optimizer import OptimizerPlan, OptLevel, plan_optimizer, require_optimizer
from nlc.passes.pipeline import check_ir
from nlc.runtime.memory import act
from nlc.objectives import OBJECTIVES
from nlc.rules import RULES
from nlc.runtime.newton_schulz import newton_schulz
from nlc.runtime.unary import apply_unary



def reference_optimizer(spec, params, **hyper) -> "ReferenceOptimizer":
    """The reference optimizer of a spec (a path or a Program) over `params`."""
    program = _program(spec)
    require_optimizer(program)
    checked = check_ir(program, hyper)
    return ReferenceOptimizer(plan_optimizer(checked.program, checked.params, checked.facts), params)


class ReferenceOptimizer(torch.optim.Optimizer):
    def __init__(self, plan: OptimizerPlan, params):
        self.plan = plan
        self.nodes = {n.name: n for n in plan.nodes}
        super().__init__(params, {h.name: h.default for h in plan.hypers})

    # ---- state ----
    def init_state(self, p: torch.Tensor, group: dict) -> dict:
        st = {"step": 0}
        for lv in self.plan.levels:
            if lv.root:
                st["running"] = p.detach().clone()
                continue
            if lv.kind == "mlp":
                hidden = 4 if lv.mlp["hidden"] is None else self._const(lv.mlp["hidden"], group)
                init = rt.mlp_init(p, hidden, self._const(lv.mlp["depth"], group), lv.init)
            else:
                init = torch.full_like(p, 1.0 if lv.init == "identity" else 0.0)
            st[lv.name] = {"visible": init, "running": init, "aux": {}}
        return st

    def _const(self, a: Operand, group: dict):
        return _Step(self, group, None, None).value(a)

    # ---- one step ----
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(self.init_state(p, group))
                st["step"] += 1
                _Step(self, group, p, st).run()
        return loss


class _Step:
    """One step of one parameter."""

    def __init__(self, opt: ReferenceOptimizer, group: dict, p, st):
        self.opt, self.plan, self.group, self.p, self.st = opt, opt.plan, group, p, st
        self.t = st["step"] if st else 0
        self.param = None if p is None else p.detach().clone()
        self.new: dict[str, object] = {}
        self.grads: dict[str, object] = {}
        self.values: dict[str, object] = {}  # node name -> its value this step
        # the states reads see from before this step (updates replace st[...]["visible"] as they go)
        self.pre = {lv.name: st[lv.name]["visible"] for lv in self.plan.levels if st and not lv.root}

    def run(self) -> None:
        for name in self.plan.grad_order:
            lv = self.plan.level(name)
            self.grads[name] = self.objective_gradient(lv)
        for lv in self.plan.levels:
            self.update(lv)

    # ---- operands and nodes ----
    def value(self, a: Operand):
        """An operand's value this step: each node is evaluated once, when first needed."""
        if isinstance(a, Const):
            return a.value
        if isinstance(a, Hyper):
            return self.group[a.name]
        if a.name not in self.values:
            self.values[a.name] = self.evaluate(self.opt.nodes[a.name])
        return self.values[a.name]

    def evaluate(self, node):
        args = [self.value(a) for a in node.args]
        match node.op:
            case Op.INPUT:
                return {"grad": self.p.grad if self.p is not None else None, "param": self.param, "step": self.t}[
                    node.name]
            case Op.ALIAS:
                return args[0]
            case Op.NEG:
                return -args[0]
            case Op.ADD:
                return args[0] + args[1]
            case Op.SUB:
                return args[0] - args[1]
            case Op.MUL:
                return args[0] * args[1]
            case Op.DIV:
                return args[0] / args[1]
            case Op.POW:
                return args[0] ** args[1]
            case Op.READ:  # new: the state after its update this step (the update reading it runs after that)
                return self.read(node.attrs["level"], args[0] if args else None, node.attrs["new"])
            case Op.NEWTON_SCHULZ:
                return _orthogonalize(*args)
            case Op.MEAN:
                return args[0].mean()
            case Op.L2NORM:
                return args[0] / args[0].norm().clamp_min(1e-12)
            case Op.UNARY:
                return apply_unary(node.attrs["fn"], args[0])
        raise AssertionError(f"no such optimizer operation: {node.op}")  # pragma: no cover - verify(plan)

    def read(self, name: str, key, new: bool):
        lv = self.plan.level(name)
        if lv.root:
            state = self.param
        else:
            state = self.new[name] if new else self.pre[name]
        if lv.kind == "mlp":
            return _mlp(state, key, self.value(lv.mlp["residual"]))
        if lv.debias:
            a = self.value(lv.retain)
            n = self.updates_seen(lv, new)
            state = state / (1 - a ** n) if n > 0 else state
        return state if key is None else state * key

    def updates_seen(self, lv: OptLevel, new: bool) -> int:
        n = self.value(lv.period) if lv.period is not None else 1
        t = self.t if new else self.t - 1
        return n * (t // n)

    # ---- objective gradients, with autograd ----
    def context(self, lv: OptLevel):
        if lv.context == "loss":
            return 1.0, -self.p.grad if lv.root else self.p.grad
        if lv.context == "grad":
            return 1.0, self.grads[lv.grad_of]
        return (1.0 if lv.key is None else self.value(lv.key)), self.value(lv.value)

    def objective_gradient(self, lv: OptLevel):
        key, value = self.context(lv)
        state = self.param if lv.root else self.pre[lv.name]
        with torch.enable_grad():
            if lv.kind == "mlp":
                ws = [w.detach().clone().requires_grad_() for w in state]
                y = _mlp(ws, key, self.value(lv.mlp["residual"]))
                leaves = ws
            else:
                s = state.detach().clone().requires_grad_()
                y = s * key
                leaves = [s]
            arg = None if lv.objective_arg is None else self.value(lv.objective_arg)
            loss = _objective(lv.objective, y, value, arg).sum()
            grads = torch.autograd.grad(loss, leaves)
        return list(grads) if lv.kind == "mlp" else grads[0]

    # ---- updates ----
    def update(self, lv: OptLevel) -> None:
        eta = 1.0 if lv.lr is None else self.value(lv.lr)
        a = 1.0 if lv.retain is None else self.value(lv.retain)
        running = self.st["running"] if lv.root else self.st[lv.name]["running"]
        aux = self.st.setdefault("aux", {}) if lv.root else self.st[lv.name]["aux"]
        G = self.grads.get(lv.name)
        if lv.kind == "mlp":
            running = [a * w - eta * g for w, g in zip(running, G)]
        elif lv.rule is None:
            running = a * running - eta * self.value(lv.update)
        else:
            running = self.rule(lv, running, G, eta, a, aux)
        period = 1 if lv.period is None else self.value(lv.period)
        if lv.root:
            self.st["running"] = running
            if self.t % period == 0:
                self.p.copy_(running)
            return
        self.st[lv.name]["running"] = running
        if self.t % period == 0:
            self.st[lv.name]["visible"] = running
        self.new[lv.name] = self.st[lv.name]["visible"]

    def rule(self, lv: OptLevel, S, G, eta, a, aux: dict):
        """The level's rule: its registry entry's eager step on parameter-shaped tensors."""
        rule = RULES[lv.rule]
        args = {k: self.value(v) for k, v in lv.rule_args.items()}
        state = {k: aux.get(k, torch.zeros_like(S)) for k in rule.aux}
        new, new_aux = rule.step(S, G, state, eta, a, args, rt.PARAMETERS, count=self.t)
        aux.update(new_aux)
        return new


def _orthogonalize(x: torch.Tensor, steps) -> torch.Tensor:
    if x.dim() < 2:
        return x
    return newton_schulz(x.reshape(x.shape[0], -1), int(steps)).reshape(x.shape)


def _mlp(weights, key, residual):
    k = key.reshape(-1, 1)
    a = k
    for w in weights[:-1]:
        a = act(a @ w)
    y = a @ weights[-1]
    return (y + k if residual else y).reshape(key.shape)


def _objective(name: str, y, v, arg):
    """The objective's value at each entry (nlc.objectives); the reference takes its gradient with autograd."""
    return OBJECTIVES[name].value(y, v, torch, *(() if arg is None else (arg,)))
