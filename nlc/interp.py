"""The reference interpreter: what a model spec *means*, token by token.

Slow and literal on purpose. For each token it evaluates every node of every
block; reads of an in-context level see the state from the start of the
current chunk (docs/design.md §1.2 "Frequency is exact"; a `read current` level learns at the
token before its reads, which see its state after the update); each level's per-token gradient
is taken with torch.autograd at that chunk-start state; the update rule is then
applied to the running state by its rule's eager step (below); at the end of each chunk
the running state becomes the state that reads see. Generated code
(`nlc.codegen`) must reproduce this to float tolerance.

A model with `context loss` levels counted in tokens (docs/design.md §1.4) runs token-major:
each token passes through every block and the head; at the end of a level's period, the mean
next-token cross-entropy of the period's predictions whose answer lies in the period, taken
per sequence, gives the level's gradient at the state its reads saw, and the level steps.
So does a model with `shared` levels (docs/design.md §1.8): the model holds their state; at each
token every block that declares one reads its period-start state and writes its own pair to the
running state, in model order; after the last block the token counts, and at the period's end
reads start to see the running state.

Each level's update rule is its registry entry's eager step (nlc.rules; the formulas and the
paper equations they implement are in each rule's module and in docs/design.md §1.3), run on the
batched memory states with nlc.rules.ops.MEMORY. A level updated by another level L instead
takes W = a W - eta L, L's state after its own update this token.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from nlc.plan.model import BlockPlan, LevelPlan, LossLevel, ModelPlan, SlowLevel
from nlc.plan.ops import Const, Node, Op
from nlc.rules import RULES, number_arg
from nlc.rules.ops import copy_aux, initial_aux, memory_step
from nlc.runtime import heads, layers, memory
from nlc.runtime.loss_levels import track
from nlc.runtime.state import carried_state, check_stream
from nlc.runtime.steplevel import restart_order
from nlc.runtime.unary import TENSOR_UNARY

BINARY = {Op.ADD: torch.add, Op.SUB: torch.sub, Op.MUL: torch.mul, Op.DIV: torch.div, Op.POW: torch.pow}


def build_modules(owner: nn.Module, block: BlockPlan) -> None:
    """Create the block's slow layers on `owner`, in plan order (shared with generated code)."""
    for m in block.modules:
        setattr(owner, m.attr, _module(m))
    for c in block.copies:  # slow levels that start from another level's initial weights
        memory.copy_initial(getattr(owner, c.target), getattr(owner, c.source) if c.source else _module(c.fixed))


def _module(m) -> nn.Module:
    cls = getattr(layers, m.cls, None) or getattr(memory, m.cls)
    return cls(*m.args, **m.kwargs)


def initial_weights(owner: nn.Module, lv, batch: int, like: torch.Tensor) -> dict:
    """A level's initial state for `batch` sequences: its learned `<var>_init` module's on `owner` (the block, or
    the model for a shared level), or a fixed init's."""
    if lv.init == "learned":
        return {k: v.to(like.dtype) for k, v in getattr(owner, f"{lv.var}_init")(batch).items()}
    return {k: v.to(like) for k, v in memory.MemoryInit(lv.weights, lv.kind, lv.residual, lv.init, lv.heads)(batch).items()}


class ReferenceBlock(nn.Module):
    def __init__(self, plan: BlockPlan):
        super().__init__()
        self.plan = plan
        build_modules(self, plan)
        self.by_level = {lv.name: lv for lv in [*plan.levels, *plan.loss_levels]}

    # ---- state ----
    def init_state(self, batch: int, like: torch.Tensor) -> dict:
        levels = {}
        for lv in [*self.plan.levels, *self.plan.loss_levels]:
            if getattr(lv, "shared", False):  # the model's (ReferenceModel.init_state)
                continue
            init = self._initial(lv, batch, like)
            levels[lv.name] = {"frozen": init, "running": dict(init), "aux": initial_aux(RULES[lv.rule], init),
                              "count": 0}
        levels = self.heads_apart(levels)
        caches = {}
        for n in self.plan.nodes:
            if n.op is Op.CONV:
                caches[n.name] = getattr(self, n.module).init_cache(batch, n.width, like)
            elif n.op is Op.ATTENTION:
                caches[n.name] = getattr(self, n.module).init_cache(batch, like)
        return {"levels": levels, "caches": caches, "t": 0}

    def _initial(self, lv: LevelPlan | LossLevel, batch: int, like: torch.Tensor) -> dict:
        if isinstance(lv, LevelPlan):
            lv = self.plan.initial_source(lv)  # the root of an `init copy` chain
        if isinstance(lv, SlowLevel):  # a `steps` level's current weights
            return {k: v.to(like.dtype) for k, v in getattr(self, f"{lv.var}_state").initial(batch).items()}
        return initial_weights(self, lv, batch, like)

    def heads_in_batch(self, levels: dict) -> dict:
        """Multi-head levels' states from the streaming state's [B, h, ...] to the rows [B*h, ...] that
        `token` computes on (nlc.runtime.heads)."""
        return {k: heads.fold(v, self.by_level[k].heads) if self.by_level[k].heads > 1 else v
                for k, v in levels.items()}

    def heads_apart(self, levels: dict) -> dict:
        """The inverse of `heads_in_batch`."""
        return {k: heads.unfold(v, self.by_level[k].heads) if self.by_level[k].heads > 1 else v
                for k, v in levels.items()}

    # ---- one token ----
    def forward(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        outs = []
        state = dict(state, levels=self.heads_in_batch(state["levels"]))
        for t in range(x.shape[1]):
            y, state = self.token(x[:, t : t + 1], state)
            outs.append(y)
        return torch.cat(outs, dim=1), dict(state, levels=self.heads_apart(state["levels"]))

    def token(self, x_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Process one token [B, 1, D]: evaluate every node, then let every level learn."""
        levels = {k: dict(v) for k, v in state["levels"].items()}
        caches = dict(state["caches"])
        values: dict[str, object] = {"x": x_t}
        learned: set[str] = set()  # `read current` levels: they learn this token before they are read
        for node in self.plan.nodes[1:]:
            if node.op is Op.READ and node.attrs.get("current") and node.attrs["level"] not in learned:
                lv = self.by_level[node.attrs["level"]]  # its operands come first (the plan's order)
                grad = self.gradient(lv, levels[lv.name]["frozen"], values, {})
                levels[lv.name] = self.apply(lv, levels[lv.name], grad, values, levels)
                learned.add(lv.name)
            values[node.name] = self.eval_node(node, values, levels, caches)
        grads = self.gradients({k: v for k, v in levels.items() if k not in learned}, values)
        for lv in self.plan.levels:  # plan order: a level that produces another's update goes first
            if lv.name not in learned:
                levels[lv.name] = self.apply(lv, levels[lv.name], grads[lv.name], values, levels)
        # `init reset(L)`: at the end of L's period, after every level has learned (a source's own restart first)
        for lv in restart_order(self.plan.levels, lambda lv: lv.name, lambda lv: lv.reset_from):
            src = self.by_level[lv.reset_from]
            if levels[src.name]["count"] % src.period == 0:
                levels[lv.name] = self.restart(lv, levels[lv.name], levels[src.name])
        return _get(values, self.plan.out), {"levels": levels, "caches": caches, "t": state["t"] + 1}

    def eval_node(self, node: Node, values: dict, levels: dict, caches: dict):
        args = [_get(values, a) for a in node.args]
        match node.op:
            case Op.ALIAS:
                return args[0]
            case Op.LINEAR | Op.RMSNORM | Op.SWIGLU:
                return getattr(self, node.module)(args[0])
            case Op.CONV | Op.ATTENTION:
                y, caches[node.name] = getattr(self, node.module)(args[0], caches[node.name], *args[1:])
                return y
            case Op.LEARNED:
                return getattr(self, node.module)()
            case Op.MEAN:
                return args[0].mean(-1, keepdim=True)
            case Op.CONCAT:
                return torch.cat(args, dim=-1)
            case Op.SLICE:
                return args[0][..., node.attrs["start"]:node.attrs["stop"]]
            case Op.NEG:
                return -args[0]
            case Op.ADD | Op.SUB | Op.MUL | Op.DIV | Op.POW:
                return _binary(node.op, *args)
            case Op.L2NORM:
                return layers.l2norm(args[0])
            case Op.SPLIT_HEADS:
                return heads.split(args[0], node.attrs["heads"])
            case Op.MERGE_HEADS:
                return heads.merge(args[0], node.attrs["heads"])
            case Op.UNARY:
                return TENSOR_UNARY[node.attrs["fn"]](args[0])
            case Op.READ:
                name = node.attrs["level"]
                key = args[0] if args else None
                if name in levels:
                    lv = self.by_level[name]  # `read current`: the state after this token's update
                    seen = levels[name]["running" if node.attrs.get("current") else "frozen"]
                    return memory.read(lv.kind, seen, key, lv.residual)
                return getattr(self, f"{node.attrs['var']}_state")(key)
        raise NotImplementedError(node.op)  # pragma: no cover - nlc.plan.verify admits no other op

    def gradients(self, levels: dict, values: dict) -> dict[str, tuple[dict, dict]]:
        """Every level's (of `levels`) per-token gradient at its chunk-start state, and the keys its rule uses."""
        out: dict[str, tuple[dict, dict]] = {}
        pending = [lv for lv in self.plan.levels if lv.name in levels]
        while pending:  # grad(other) levels wait for the other's gradient
            lv = next(lv for lv in pending if lv.context[0] != "grad" or lv.context[1] in out)
            pending.remove(lv)
            out[lv.name] = self.gradient(lv, levels[lv.name]["frozen"], values, out)
        return out

    @torch.enable_grad()  # inner gradients exist even when the caller runs under torch.no_grad()
    def gradient(self, lv: LevelPlan, frozen: dict, values: dict, done: dict) -> tuple[dict, dict]:
        # a fresh node for the state, so the gradient is taken through this loss only: keys and values
        # that were themselves computed from the state are data here (they still carry outer gradients)
        if lv.context[0] == "by":  # moved by its updater's state: no gradient of its own
            return {w: None for w in frozen}, {w: None for w in frozen}
        frozen = {k: v.clone() if v.requires_grad else v.detach().requires_grad_() for k, v in frozen.items()}
        if lv.context[0] == "kv":
            k, v = _tok(_get(values, lv.context[1])), _tok(_get(values, lv.context[2]))
            y, inputs, _ = memory.read_with_cache(lv.kind, frozen, k, lv.residual)
            loss = memory.objective_value(lv.objective, y, v).sum()
            keys = _layer_keys(frozen, inputs)
        else:  # grad(other): key 1, value the other level's gradient, weight by weight
            target = done[lv.context[1]][0]
            loss = sum(memory.objective_value(lv.objective, frozen[w], target[w]).sum() for w in frozen)
            keys = {w: None for w in frozen}
        names = list(frozen)
        g = dict(zip(names, torch.autograd.grad(loss, [frozen[n] for n in names], create_graph=True)))
        return g, keys

    def apply(self, lv: LevelPlan, st: dict, grad: tuple[dict, dict], values: dict, levels: dict) -> dict:
        """Apply the rule to the running state; at the end of a chunk, reads start to see it."""
        g, keys = grad
        eta, a = _gate(values, lv.lr), _gate(values, lv.retain)
        running, aux = dict(st["running"]), copy_aux(st["aux"])
        for w in running:
            running[w] = self.rule(lv, w, running[w], g[w], keys[w], eta, a, values, aux, levels)
        if RULES[lv.rule].counts and lv.update_by is None:
            aux["n"] = aux["n"] + 1
        if lv.shared:  # other blocks write this token too: the model counts it after the last (end_shared_token)
            return dict(st, running=running, aux=aux)
        count = st["count"] + 1
        frozen_next = dict(running) if count % lv.period == 0 else st["frozen"]
        return {"frozen": frozen_next, "running": running, "aux": aux, "count": count}

    def restart(self, lv: LevelPlan, st: dict, src: dict) -> dict:
        """lv starts again from its reset source's state (NL eq. 72): reads see it from the next token on,
        and its rule's buffers start again from zero."""
        W = src["frozen"]
        return {"frozen": dict(W), "running": dict(W), "aux": initial_aux(RULES[lv.rule], W), "count": st["count"]}

    def rule(self, lv: LevelPlan, w: str, W, g, key, eta, a, values, aux, levels):
        """Apply lv's update rule to the running weight W: its registry entry's eager step."""
        eta, a = _expand(eta, W), _expand(a, W)
        if lv.update_by is not None:
            return a * W - eta * levels[lv.update_by]["running"][w]
        rule = RULES[lv.rule]
        args = {arg.name: number_arg(arg, _expand(_gate(values, lv.rule_args[arg.name]), W)) for arg in rule.args}
        return memory_step(rule, w, W, g, aux, eta, a, args, key)


class ReferenceModel(nn.Module):
    """A model spec run by the reference interpreter: tokens [B, T] -> logits [B, T, vocab]."""

    learn_from_loss = True  # False (`nlc eval --frozen`): `context loss` levels in tokens keep their state

    def __init__(self, plan: ModelPlan):
        super().__init__()
        self.plan = plan
        self.embed = nn.Embedding(plan.vocab, plan.dim)
        self.blocks = nn.ModuleList(ReferenceBlock(b) for b in plan.blocks)
        self.norm = layers.RMSNorm(plan.dim)
        self.head = layers.Linear(plan.dim, plan.vocab)
        self.alignment = plan.alignment
        self.step_levels = plan.step_levels()
        self.online_levels = plan.online_levels()
        for sh in plan.shared:  # a shared level's learned initial state is the model's, as in generated code
            if sh.init == "learned":
                setattr(self, f"{sh.var}_init", memory.MemoryInit(sh.weights, sh.kind, sh.residual))
        self._writes = [[lv.name for lv in b.levels if lv.shared] for b in plan.blocks]  # each block's shared levels

    def init_state(self, batch: int) -> dict:
        like = self.embed.weight
        state = {"blocks": [b.init_state(batch, like) for b in self.blocks], "t": 0}
        if self.plan.shared:
            state["shared"] = {sh.name: self._shared_initial(sh, batch, like) for sh in self.plan.shared}
        return state

    def _shared_initial(self, sh, batch: int, like: torch.Tensor) -> dict:
        init = initial_weights(self, sh, batch, like)
        return {"frozen": init, "running": dict(init), "aux": initial_aux(RULES[sh.rule], init), "count": 0}

    def forward(self, tokens: torch.Tensor, state: dict | None = None, detach_state: bool = True):
        check_stream(self, tokens, state)
        streaming = state is not None
        if state is None:
            state = self.init_state(tokens.shape[0])
        if self.plan.loss_levels or self.plan.shared:
            logits, new_state = self._token_major(tokens, state)
            if streaming:
                return logits, carried_state(new_state, detach_state)
            return logits
        x = self.embed(tokens)
        new_blocks = []
        for block, st in zip(self.blocks, state["blocks"]):
            y, st = block(x, st)
            x = x + y
            new_blocks.append(st)
        logits = self.head(self.norm(x))
        if streaming:
            return logits, carried_state({"blocks": new_blocks, "t": state["t"] + tokens.shape[1]}, detach_state)
        return logits

    def _token_major(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Every token through every block and the head; loss levels step at the ends of their periods,
        shared levels take every block's write of the token."""
        grad_was_on = torch.is_grad_enabled()
        blocks = [dict(st, levels=b.heads_in_batch(st["levels"])) for b, st in zip(self.blocks, state["blocks"])]
        shared = dict(state.get("shared", {}))
        outs, t0 = [], state["t"]
        # a loss level's gradient needs the graph from its state to the logits
        with torch.enable_grad() if self.plan.loss_levels else contextlib.nullcontext():
            for t in range(tokens.shape[1]):
                self._start_periods(blocks, t0 + t)
                x = self.embed(tokens[:, t : t + 1])
                for i, block in enumerate(self.blocks):
                    y, blocks[i], shared = self._block_token(block, self._writes[i], x, blocks[i], shared)
                    x = x + y
                self._end_shared_token(shared)
                outs.append(self.head(self.norm(x)))
                if self.learn_from_loss:
                    self._learn(blocks, outs, tokens, t, t0)
        logits = torch.cat(outs, dim=1)
        blocks = [dict(st, levels=b.heads_apart(st["levels"])) for b, st in zip(self.blocks, blocks)]
        new_state = {"blocks": blocks, "t": t0 + tokens.shape[1]}
        if self.plan.shared:
            new_state["shared"] = shared
        return (logits if grad_was_on else logits.detach()), new_state

    @staticmethod
    def _block_token(block: ReferenceBlock, mine: list[str], x: torch.Tensor, st: dict, shared: dict) -> tuple:
        """One token through one block, with the shared levels it declares (`mine`) lent to it and taken back."""
        if not mine:
            y, st = block.token(x, st)
            return y, st, shared
        y, st = block.token(x, dict(st, levels={**st["levels"], **{n: shared[n] for n in mine}}))
        shared = {**shared, **{n: st["levels"][n] for n in mine}}
        return y, dict(st, levels={k: v for k, v in st["levels"].items() if k not in mine}), shared

    def _end_shared_token(self, shared: dict) -> None:
        """After every block has written a token: it counts once, and at the period's end reads see the running state."""
        for sh in self.plan.shared:
            st = shared[sh.name]
            count = st["count"] + 1
            frozen = dict(st["running"]) if count % sh.period == 0 else st["frozen"]
            shared[sh.name] = dict(st, frozen=frozen, count=count)

    def _start_periods(self, blocks: list, position: int) -> None:
        """At a level's period start, its state enters the graph (its gradient is taken there)."""
        for i, lv in self.plan.loss_levels:
            if position % lv.period == 0:
                blocks[i]["levels"][lv.name] = dict(blocks[i]["levels"][lv.name],
                                                    frozen=track(blocks[i]["levels"][lv.name]["frozen"]))

    def _learn(self, blocks: list, outs: list, tokens: torch.Tensor, t: int, t0: int) -> None:
        """After token t: every loss level whose period ends here steps (all gradients before any step)."""
        ending = [(i, lv) for i, lv in self.plan.loss_levels if (t0 + t + 1) % lv.period == 0
                  and t + 1 >= lv.period]  # (a streamed piece starts at a period start: alignment)
        grads = {}
        for i, lv in ending:
            start = t + 1 - lv.period
            losses = [F.cross_entropy(outs[s][:, 0], tokens[:, s + 1], reduction="sum") for s in range(start, t)]
            loss = sum(losses) / (lv.period - 1)
            W = blocks[i]["levels"][lv.name]["frozen"]
            g = torch.autograd.grad(loss, list(W.values()), create_graph=not lv.first_order, retain_graph=True,
                                    allow_unused=True)  # the outer backward and slower levels reuse the graph
            grads[i, lv.name] = {k: torch.zeros_like(W[k]) if gk is None else gk.detach() if lv.first_order else gk
                                 for k, gk in zip(W, g)}
        for i, lv in ending:
            st = dict(blocks[i]["levels"][lv.name])
            aux = copy_aux(st["aux"])
            rule = RULES[lv.rule]
            new = {k: memory_step(rule, k, W, grads[i, lv.name][k], aux, lv.lr, lv.retain, lv.rule_args, None)
                   for k, W in st["frozen"].items()}
            if rule.counts:
                aux["n"] = aux["n"] + 1
            st.update(frozen=new, running=dict(new), aux=aux, count=st["count"] + 1)
            blocks[i]["levels"][lv.name] = st


# ---- helpers ----


def _get(values: dict, operand):
    return operand.value if isinstance(operand, Const) else values[operand.name]


def _tok(t):
    return t.squeeze(1) if isinstance(t, torch.Tensor) and t.dim() == 3 else t


def _binary(op: Op, a, b):
    """a op b where at most one side is a float constant (constants were folded by the plan)."""
    return BINARY[op](a, b) if isinstance(a, torch.Tensor) else BINARY[op](torch.as_tensor(a, dtype=b.dtype), b)


def _gate(values: dict, operand):
    """A gate's value for this token: a float, a 0-dim tensor, or [B]."""
    v = _get(values, operand)
    if isinstance(v, torch.Tensor) and v.dim() == 3:
        return v.reshape(v.shape[0])
    return v


def _expand(g, like: torch.Tensor):
    if isinstance(g, torch.Tensor) and g.dim() == 1:
        return g.view(-1, *([1] * (like.dim() - 1)))
    return g


def _layer_keys(frozen: dict, inputs: list) -> dict:
    """The key dgd projects out, per weight: the input of that weight's layer."""
    if "m" in frozen or "W" in frozen:
        return {next(iter(frozen)): inputs[0]}
    return {f"W{i}": a for i, a in enumerate(inputs)}

