"""Instantiate a checked model program into a concrete plan both back ends share.

The plan is the IR with parameters substituted, `repeat`s unrolled and every
expression flattened into SSA nodes in dependency order. It fixes what both the
reference interpreter (`nlc.interp`) and the code generator (`nlc.codegen`) must
agree on: the slow layers and their names and creation order (so state_dicts
are interchangeable), the levels and their per-token inputs, and which nodes
depend on in-context reads (computed chunk by chunk) and which do not
(computed for the whole sequence at once). Shapes, periods and constants are the
checker's (`Checked.facts`, docs/design.md §2.4): nothing is bound or folded again here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import lcm
from typing import Mapping

import networkx as nx

from nlc import builtins as B
from nlc import ir
from nlc.errors import Diagnostic, SpecError
from nlc.names import NameAllocator, camel
from nlc.plan.ops import OF_SYMBOL, ONE, Const, Node, Op, Operand, Ref
from nlc.plan.verify import verify
from nlc.passes.facts import ProgramFacts, ScopeFacts, StateShape
from nlc.passes.pipeline import Checked
from nlc.passes.steplevels import step_rule_args
from nlc.rules import DEFAULT
from nlc.printer import print_expr
from nlc.runtime.steplevel import StepLevelSpec

@dataclass
class Module:
    """A slow layer of a block: `attr = runtime.layers.<cls>(*args, **kwargs)`."""

    attr: str
    cls: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class LevelPlan:
    """An in-context level (period in tokens) with everything concrete."""

    name: str
    var: str  # its Python name in generated code
    kind: str  # linear | mlp | vector | like
    weights: dict[str, tuple[int, ...]]  # state tensor name -> shape (without batch)
    d_in: int
    d_out: int
    depth: int = 1
    residual: bool = False
    init: str = "learned"  # learned | zeros | identity | copy
    copy_of: str | None = None  # the root of an `init copy` chain: a level that does not copy (see copy_root)
    like: str | None = None
    context: tuple = ()  # ("kv", key, value) | ("grad", level) | ("by",): moved by `update_by`'s state alone
    objective: tuple = ("l2",)  # ("l2",) ("dot",) ("huber", delta) ("lp", p)
    rule: str = DEFAULT
    rule_args: dict[str, Operand] = field(default_factory=dict)
    update_by: str | None = None
    lr: Operand = ONE
    retain: Operand = ONE
    period: int = 1
    online: bool = False
    line: int = 0
    heads: int = 1  # its state is [B*heads, ...]; `weights` are one head's, d_in and d_out the whole memory's
    reset_from: str | None = None  # `init reset(L)`: restarts from L's state at the end of each of L's periods
    read_current: bool = False  # `read current`: a read at t sees the chunk's updates up to t (nlc.runtime.inside)
    shared: bool = False  # its state is the model's (ModelPlan.shared): the block reads it and hands its pairs on

    def learning_operands(self) -> list[Operand]:
        """The per-token values it learns from: gates, rule arguments, keys and values."""
        ops = [self.lr, self.retain, *self.rule_args.values()]
        if self.context[0] == "kv":
            ops += [self.context[1], self.context[2]]
        return ops


@dataclass
class OutsideLevel:
    """A level whose state the block's chunk loop does not move: its shape and initial state."""

    heads = 1  # (not a field) never split into heads (E423), read like a LevelPlan's

    name: str
    var: str
    kind: str
    weights: dict[str, tuple[int, ...]]
    d_in: int
    d_out: int
    depth: int
    residual: bool
    init: str


@dataclass
class SlowLevel(OutsideLevel):
    """A level outside the forward's learning: period in steps (CMS) or never (frozen)."""

    period: int  # steps; 0 for never
    rule: str  # gd | momentum (nlc check refuses the rest: E308)
    lr: float
    online: bool
    retain: float = 1.0
    beta: float | None = None  # momentum's beta; None for gd
    reset_from: str | None = None  # `init reset(L)`: L's var; it restarts from L's weights every L period
    reset_every: int = 0  # L's period (steps)


@dataclass
class LossLevel(OutsideLevel):
    """A `context loss` level counted in tokens (docs/design.md §1.4): its blocks read its state, which
    stays fixed inside each chunk of `period` tokens; at a chunk's end the model steps it by `rule` from
    the gradient of its mean next-token loss over the chunk's predictions whose answer is in the chunk.
    (`init` is learned, zeros or identity.)"""

    period: int  # tokens
    rule: str  # a step-level rule: gd | momentum (nlc check: E308)
    lr: float
    retain: float
    rule_args: dict[str, float]
    first_order: bool  # the outer level does not differentiate through the step's gradient
    online: bool
    line: int = 0


@dataclass
class InitialCopy:
    """A `steps`/`never` level that starts from another level's initial state (`init copy`).

    Its weights are set once, when the model is built (both back ends, after every module exists),
    from the module holding the source's weights (`source`: a SlowMemory or a learned MemoryInit)
    or, for a source whose initial state is a constant (`zeros`, `identity`), from that state (`fixed`).
    """

    target: str  # the SlowMemory attribute
    source: str | None = None
    fixed: Module | None = None


@dataclass
class SharedLevel:
    """A `shared` level (docs/design.md §1.8): one state of the model that the blocks `writers` (indices, in
    model order) read and write. Each writer's LevelPlan holds its own context and gates; what the state
    is (shape, init, objective, rule, period) is the same in all of them (nlc check, E425)."""

    heads = 1  # (not a field) never split into heads (E425), made like a LevelPlan's

    name: str
    var: str  # its Python name: the model's `<var>_init` holds a learned initial state
    kind: str
    weights: dict[str, tuple[int, ...]]
    residual: bool
    init: str  # learned | zeros | identity
    rule: str
    period: int  # tokens
    online: bool
    writers: list[int]

    def learns_in(self, plan: "ModelPlan") -> list[LevelPlan]:
        """Each writer's declaration, in model order."""
        return [next(lv for lv in plan.blocks[i].levels if lv.name == self.name) for i in self.writers]


@dataclass
class BlockPlan:
    """One block instance (a `repeat` makes several with the same class)."""

    name: str
    index: int
    class_name: str
    modules: list[Module]
    nodes: list[Node]
    levels: list[LevelPlan]
    slow_levels: list[SlowLevel]
    out: Operand
    copies: list[InitialCopy] = field(default_factory=list)  # slow levels that start from another's state
    loss_levels: list[LossLevel] = field(default_factory=list)  # `context loss` levels counted in tokens

    def initial_source(self, lv: LevelPlan) -> LevelPlan | SlowLevel:
        """The level whose initial state an in-context level starts from: itself, or the root of its copy chain."""
        if lv.copy_of is None:
            return lv
        return next(o for o in [*self.levels, *self.slow_levels] if o.name == lv.copy_of)

    @property
    def chunk(self) -> int:
        """The block's base chunk: the smallest in-context period (1 if it has none)."""
        return min((lv.period for lv in self.levels), default=1)

    @property
    def max_period(self) -> int:
        return max((lv.period for lv in self.levels), default=1)


@dataclass
class ModelPlan:
    name: str
    dim: int
    vocab: int
    blocks: list[BlockPlan]
    params: dict[str, object]
    spec_path: str
    shared: list[SharedLevel] = field(default_factory=list)

    def step_levels(self) -> dict[str, StepLevelSpec]:
        """Levels trained across optimiser steps (CMS): parameter-name prefix -> StepLevelSpec.

        The training loop steps these parameters every `period` steps with the gradients
        accumulated since their last update; period 0 means frozen (`never`).
        """
        out = {}
        for b in self.blocks:
            for lv in b.slow_levels:
                out[f"blocks.{b.index}.{lv.var}_state"] = StepLevelSpec(
                    level=lv.name, period=lv.period, lr=lv.lr, rule=lv.rule, retain=lv.retain, beta=lv.beta,
                    online=lv.online, reset_from=None if lv.reset_from is None else
                    f"blocks.{b.index}.{lv.reset_from}_state", reset_every=lv.reset_every)
        return out

    def online_levels(self) -> list[str]:
        """In-context levels marked `online` (as `blocks.I.NAME`; a shared one once, as `shared.NAME`): they keep
        learning after training."""
        return [f"blocks.{b.index}.{lv.name}" for b in self.blocks for lv in [*b.levels, *b.loss_levels]
                if lv.online and not getattr(lv, "shared", False)] + [f"shared.{s.name}" for s in self.shared if s.online]

    @property
    def loss_levels(self) -> list[tuple[int, LossLevel]]:
        """The `context loss` levels counted in tokens, with the index of their block."""
        return [(b.index, lv) for b in self.blocks for lv in b.loss_levels]

    @property
    def loss_chunk(self) -> int | None:
        """The chunk the model runs chunk-major at when it has loss levels: their smallest period."""
        return min((lv.period for _, lv in self.loss_levels), default=None)

    @property
    def shared_chunk(self) -> int | None:
        """The chunk the model runs chunk-major at when it has shared levels: their period (nlc check: one, E318)."""
        return self.shared[0].period if self.shared else None

    @property
    def alignment(self) -> int:
        """Streaming pieces must be multiples of this many tokens."""
        return lcm(1, *(b.max_period for b in self.blocks), *(lv.period for _, lv in self.loss_levels))


def plan_model(checked: Checked) -> ModelPlan:
    """Return the plan of a checked model program: its parameters, shapes, periods and constants are the checker's."""
    program, params, facts = checked.program, checked.params, checked.facts
    if not program.is_model:
        raise SpecError([Diagnostic("E501", f"`{program.name}` is an optimizer, not a model", program.name_span,
                                    "build optimizers with `nlc.build_optimizer`")])
    blocks: list[BlockPlan] = []
    classes: dict[int, str] = {}

    def visit(stmts):
        for s in stmts:
            if isinstance(s, ir.Repeat):
                n = int(facts.const(s.count))
                for _ in range(n):
                    visit(s.body)
            elif isinstance(s, ir.Block):
                cls = classes.setdefault(id(s), _class_name(s.name, set(classes.values())))
                blocks.append(_BlockPlanner(s, params, facts, len(blocks), cls).plan())

    visit(program.body)
    plan = ModelPlan(program.name, int(params["dim"]), int(params["vocab"]), blocks, dict(params), program.path,
                     _shared_levels(blocks))
    verify(plan)
    return plan


def _shared_levels(blocks: list[BlockPlan]) -> list[SharedLevel]:
    """The model's shared levels, in the order of their first declaration, with the blocks that write them."""
    out: dict[str, SharedLevel] = {}
    for b in blocks:
        for lv in b.levels:
            if lv.shared:
                if lv.name not in out:
                    out[lv.name] = SharedLevel(lv.name, lv.var, lv.kind, lv.weights, lv.residual, lv.init, lv.rule,
                                               lv.period, lv.online, [])
                out[lv.name].writers.append(b.index)
    return list(out.values())


def _class_name(name: str, taken: set[str]) -> str:
    """`memory_layer` -> `MemoryLayerBlock` (`MemoryLayer2Block` when two blocks share the name)."""
    candidate, i = camel(name, "Block"), 2
    while candidate in taken:
        candidate, i = camel(f"{name}{i}", "Block"), i + 1
    return candidate


class _BlockPlanner:
    def __init__(self, block: ir.Block, params: Mapping[str, object], facts: ProgramFacts, index: int, cls: str):
        self.block = block
        self.params = params
        self.facts = facts
        self.scope: ScopeFacts = facts.scope(block)  # the shapes and periods of this block's levels
        self.index = index
        self.cls = cls
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self.modules: list[Module] = []
        self.lets = {s.name: s for s in block.body if isinstance(s, ir.Let)}
        self.levels = {s.name: s for s in block.body if isinstance(s, ir.Level)}
        self.loss = {n for n, lv in self.levels.items() if ir.learns_loss_in_tokens(lv)}
        self.in_context = {n for n, lv in self.levels.items() if lv.period.unit is ir.PeriodUnit.TOKENS} - self.loss
        self.current = {n for n in self.in_context if ir.reads_current(self.levels[n])}
        self.names = NameAllocator()
        self.var = {n: self.names.take(n) for n in [*self.lets, *self.levels]}  # spec name -> Python name
        self.constant_lets: dict[str, Const] = {}  # `let keep = 1`: folded, no node; a use is the number
        self.splits: dict[tuple[str, int], Ref] = {}  # (node, heads) -> that node split into heads, made once

    # ---- naming ----
    def fresh(self, base: str) -> str:
        return self.names.fresh(base)

    def const(self, e: ir.Expr) -> float | int | bool:
        """The value the checker folded a constant expression (a width, a count, a number gate) to."""
        return self.facts.const(e)

    # ---- the plan ----
    def plan(self) -> BlockPlan:
        self.add(Node("x", Op.INPUT, width=int(self.params["dim"])))
        for name in self._let_order():
            value = self.expr(self.lets[name].value, self.var[name], root=self.var[name])
            if isinstance(value, Const):
                self.constant_lets[name] = value
        levels, slow, loss = [], [], []
        for name in self._level_order():
            lv = self.levels[name]
            if name in self.loss:
                loss.append(self.loss_level(lv))
            elif name in self.in_context:
                levels.append(self.level(lv))
            else:
                slow.append(self.slow_level(lv))
        out = self.expr(self.block.out.value, "out", root=self.fresh("out"))
        self._reads_after_learning(levels)
        self._mark_loop()
        self._mark_phases(levels)
        nodes = [self.nodes[n] for n in self.order]
        copies = [self.initial_copy(s) for s in slow if s.init in B.COPY_INITS]
        return BlockPlan(self.block.name, self.index, self.cls, self.modules, nodes, levels, slow, out, copies, loss)

    def initial_copy(self, lv: SlowLevel) -> InitialCopy:
        """Where a `steps`/`never` level with `init copy` takes its initial weights from."""
        root = self.levels[copy_root(self.levels, lv.name)]
        var = self.var[root.name]
        if root.name not in self.in_context:
            return InitialCopy(f"{lv.var}_state", source=f"{var}_state")
        if root.init.fn == "learned":
            return InitialCopy(f"{lv.var}_state", source=f"{var}_init")
        shape = self.state_shape(root.name)
        return InitialCopy(f"{lv.var}_state", fixed=Module("", "MemoryInit", (self.weights(root.name), shape.kind,
                                                                              shape.residual, root.init.fn)))

    def _let_order(self) -> list[str]:
        g = nx.DiGraph()
        g.add_nodes_from(self.lets)
        for name, let in self.lets.items():
            for n in ir.walk(let.value):
                if isinstance(n, ir.Ref) and n.kind is ir.RefKind.LET:
                    g.add_edge(n.name, name)
        return list(nx.lexicographical_topological_sort(g, key=lambda n: self.lets[n].span.start))

    def _level_order(self) -> list[str]:
        """Levels in source order, except that a level producing another's update comes first."""
        g = nx.DiGraph()
        g.add_nodes_from(self.levels)
        for name, lv in self.levels.items():
            if isinstance(lv.update, ir.Ref) and lv.update.kind is ir.RefKind.LEVEL:
                g.add_edge(lv.update.name, name)
        return list(nx.lexicographical_topological_sort(g, key=lambda n: self.levels[n].span.start))

    def add(self, node: Node) -> str:
        self.nodes[node.name] = node
        self.order.append(node.name)
        return node.name

    # ---- expressions -> SSA ----
    def expr(self, e: ir.Expr, base: str, root: str | None = None) -> Operand:
        """Flatten e into nodes; return its operand. `root` names the top node (a let's name)."""
        if isinstance(e, (ir.Num, ir.Bool)):
            return Const(float(e.value))
        if isinstance(e, ir.Ref):
            if e.kind is ir.RefKind.PARAM:
                return Const(float(self.params[e.name]))
            if e.kind is ir.RefKind.INPUT:
                return self._alias(root, "x", e) if root else Ref("x")
            if e.kind is ir.RefKind.LET:
                if e.name in self.constant_lets:
                    return self.constant_lets[e.name]
                return self._alias(root, self.var[e.name], e) if root else Ref(self.var[e.name])
            if e.kind is ir.RefKind.LEVEL:
                attrs = {"level": e.name, "var": self.var[e.name], "in_context": e.name in self.in_context,
                         "loss": e.name in self.loss, "current": e.name in self.current}
                return self._node(root or self.fresh(f"{base}_{e.name}"), Op.READ, (), attrs,
                                  self._level_width(e.name), e)
        folded = self._try_fold(e)
        if folded is not None:
            return folded
        name = root or self.fresh(f"{base}_{_op_word(e)}")
        if isinstance(e, ir.Neg):
            a = self.expr(e.operand, base)
            return self._node(name, Op.NEG, (a,), {}, self._width(a), e)
        if isinstance(e, ir.BinOp):
            a, b = self.expr(e.lhs, base), self.expr(e.rhs, base)
            op = OF_SYMBOL[e.op]
            return self._node(name, op, (a, b), {}, _combine(self._width(a), self._width(b)), e)
        assert isinstance(e, ir.Call)
        if e.kind is ir.CallKind.READ:
            args = tuple(self.expr(a, base) for a in e.args)
            attrs = {"level": e.fn, "var": self.var[e.fn], "in_context": e.fn in self.in_context,
                     "loss": e.fn in self.loss, "current": e.fn in self.current}
            heads = self.state_shape(e.fn).heads
            if heads > 1:  # each head reads its slice of the key; the answers are put side by side
                part = self._node(self.fresh(f"{base}_{e.fn}_heads"), Op.READ, (self.split(args[0], heads),), attrs,
                                  self._level_width(e.fn) // heads, e)
                return self._node(name, Op.MERGE_HEADS, (part,), {"heads": heads}, self._level_width(e.fn), e)
            return self._node(name, Op.READ, args, attrs, self._level_width(e.fn, args), e)
        return self.op(e, base, name)

    def split(self, a: Operand, heads: int) -> Operand:
        """`a` as a multi-head level sees it: [B*heads, T, w/heads] (docs/design.md §1.7). Numbers and
        scalars are the same for every head; a node is split once however many levels use it."""
        if heads == 1 or not isinstance(a, Ref) or self._width(a) is None:
            return a
        if (a.name, heads) not in self.splits:
            width = self._width(a)
            node = self.nodes[a.name]
            self.splits[a.name, heads] = Ref(self.add(Node(
                self.fresh(f"{a.name}_heads"), Op.SPLIT_HEADS, (a,), {"heads": heads},
                1 if width == 1 else width // heads, None, f"{node.source or a.name} in {heads} heads", node.line)))
        return self.splits[a.name, heads]

    def _try_fold(self, e: ir.Expr) -> Const | None:
        if any(isinstance(n, ir.Ref) and n.kind is not ir.RefKind.PARAM or
               isinstance(n, ir.Call) and (n.kind is not ir.CallKind.OP or n.fn not in B.UNARY_OPS)
               for n in ir.walk(e)):
            return None
        return Const(float(self.const(e)))  # parameters and elementwise builtins of them (nlc.unary), folded by the checker

    def _alias(self, root: str, target: str, e: ir.Expr) -> Ref:
        return self._node(root, Op.ALIAS, (Ref(target),), {}, self.nodes[target].width, e)

    def _node(self, name: str, op: Op, args, attrs, width, e: ir.Expr, module: str | None = None) -> Ref:
        span = getattr(e, "span", None)
        return Ref(self.add(Node(name, op, tuple(args), dict(attrs), width, module, print_expr(e),
                                 span.line if span is not None else 0)))

    def _width(self, a: Operand) -> int | None:
        return self.nodes[a.name].width if isinstance(a, Ref) else None

    def _level_width(self, level: str, args=()) -> int:
        """The width of a read of `level` (its state's output width)."""
        return self.state_shape(level).d_out

    def op(self, e: ir.Call, base: str, name: str) -> Ref:
        sig = B.OPS[e.fn]
        if sig.variadic:
            args = [self.expr(a, base) for a in e.args]
            width = sum(self._width(a) or 1 for a in args)
            return self._node(name, Op.CONCAT, args, {}, width, e)
        given = dict(zip([a.name for a in sig.args], e.args))
        given.update({k.name: k.value for k in e.kwargs})
        bound = {}
        for a in sig.args:
            if a.name not in given:
                bound[a.name] = a.default
            elif a.type in (B.ArgType.TENSOR, B.ArgType.ANY):
                bound[a.name] = self.expr(given[a.name], base)  # a value: an operand
            else:
                bound[a.name] = self.const(given[a.name])  # a width, a count, a flag: the layer's argument
        x = bound.get("x")
        width = self._width(x) if isinstance(x, Ref) else None
        if e.fn == "linear":
            out, bias = int(bound["out"]), bool(bound["bias"])
            self.modules.append(Module(name, "Linear", (width, out), {"bias": bias}))
            return self._node(name, Op.LINEAR, (x,), {}, out, e, module=name)
        if e.fn == "conv":
            self.modules.append(Module(name, "CausalConv", (width, int(bound["width"]))))
            return self._node(name, Op.CONV, (x,), {}, width, e, module=name)
        if e.fn == "rmsnorm":
            self.modules.append(Module(name, "RMSNorm", (width,)))
            return self._node(name, Op.RMSNORM, (x,), {}, width, e, module=name)
        if e.fn == "swiglu":
            self.modules.append(Module(name, "SwiGLU", (width, int(bound["hidden"]))))
            return self._node(name, Op.SWIGLU, (x,), {}, width, e, module=name)
        if e.fn == "attention":
            memory = bound.get("memory")
            kw = {k: int(bound[k]) for k in ("heads", "window", "segment", "persistent")}
            self.modules.append(Module(name, "Attention", (width,), {**kw, "memory": memory is not None}))
            args = (x,) if memory is None else (x, memory)
            return self._node(name, Op.ATTENTION, args, {}, width, e, module=name)
        if e.fn == "learned":
            self.modules.append(Module(name, "LearnedScalar", (float(bound["init"]),)))
            return self._node(name, Op.LEARNED, (), {}, None, e, module=name)
        if e.fn == "mean":
            return self._node(name, Op.MEAN, (x,), {}, 1, e)
        if e.fn == "slice":
            start, stop = int(bound["start"]), int(bound["stop"])
            return self._node(name, Op.SLICE, (x,), {"start": start, "stop": stop}, stop - start, e)
        if e.fn == "l2norm":
            return self._node(name, Op.L2NORM, (x,), {}, width, e)
        if e.fn in B.UNARY_OPS:
            return self._node(name, Op.UNARY, (x,), {"fn": e.fn}, width, e)
        raise SpecError([Diagnostic("E502", f"`{e.fn}` cannot be compiled in a model yet", e.fn_span)])

    # ---- levels ----
    def state_shape(self, name: str) -> StateShape:
        """The state shape the checker gave level `name`."""
        return self.scope.shapes[name]

    def weights(self, name: str) -> dict[str, tuple[int, ...]]:
        """The shapes of one sequence's state of level `name` (of one head's, if it has heads)."""
        shape = self.state_shape(name)
        if shape.kind == "like":
            return self.weights(shape.like_of)
        if shape.kind == "vector":
            return {"m": (shape.d_in,)}
        h = shape.heads
        if shape.kind == "linear":
            return {"W": (shape.d_in // h, shape.d_out // h)}
        dims = [shape.d_in // h] + [shape.hidden // h] * (shape.depth - 1) + [shape.d_out // h]
        return {f"W{i}": (dims[i], dims[i + 1]) for i in range(shape.depth)}

    def level(self, lv: ir.Level) -> LevelPlan:
        shape = self.state_shape(lv.name)
        base = self.var[lv.name]
        ctx = lv.context
        heads = shape.heads
        if isinstance(ctx, ir.Tuple):
            context = ("kv", self.split(self.expr(ctx.items[0], f"{base}_key"), heads),
                       self.split(self.expr(ctx.items[1], f"{base}_value"), heads))
        elif ctx is None:  # `update L` where L does not learn its gradients: it learns nothing itself
            context = ("by",)
        else:
            context = ("grad", ctx.args[0].name)
        obj = lv.objective
        objective = (obj.fn,) + tuple(float(v) for v in _bind(obj, B.OBJECTIVES[obj.fn], self.const).values())
        init = lv.init.fn
        copy_of = copy_root(self.levels, lv.name) if init in B.COPY_INITS else None
        rule, rule_args, update_by = DEFAULT, {}, None
        if isinstance(lv.update, ir.Ref):
            update_by = lv.update.name
        else:
            rule = lv.update.fn
            sig = B.UPDATE_RULES[rule]
            given = {a.name: v for a, v in zip(sig.args, lv.update.args)}
            given.update({k.name: k.value for k in lv.update.kwargs})
            for a in sig.args:
                if a.name in given:
                    rule_args[a.name] = self.split(self.expr(given[a.name], f"{base}_{a.name}"), heads)
                else:
                    rule_args[a.name] = Const(float(a.default))
        lr = ONE if lv.lr is None else self.split(self.expr(lv.lr, f"{base}_lr"), heads)
        retain = ONE if lv.retain is None else self.split(self.expr(lv.retain, f"{base}_retain"), heads)
        if init == "learned" and not lv.shared:  # a shared level's initial state is the model's
            self.modules.append(Module(f"{base}_init", "MemoryInit", (self.weights(lv.name), shape.kind,
                                                                      shape.residual), _heads_kwarg(heads)))
        return LevelPlan(lv.name, base, shape.kind, self.weights(lv.name), shape.d_in, shape.d_out, shape.depth,
                         shape.residual, init, copy_of, shape.like_of, context, objective, rule, rule_args, update_by,
                         lr, retain, self.scope.periods[lv.name].count, lv.online, lv.span.line, heads,
                         ir.restarts_from(lv), lv.name in self.current, lv.shared)

    def slow_level(self, lv: ir.Level) -> SlowLevel:
        shape = self.state_shape(lv.name)
        frequency = self.scope.periods[lv.name]
        never, period = frequency.never, frequency.count  # count 0 for never
        lr, retain, rule, args = 1.0, 1.0, DEFAULT, {}
        if not never:  # nlc check (nlc.passes.steplevels) made sure these are numbers and the rule a step-level one
            lr = 1.0 if lv.lr is None else float(self.const(lv.lr))
            retain = 1.0 if lv.retain is None else float(self.const(lv.retain))
            rule = lv.update.fn
            args = {k: float(self.const(e)) for k, e in step_rule_args(lv.update).items()}
        self.modules.append(Module(f"{self.var[lv.name]}_state", "SlowMemory",
                                   (self.weights(lv.name), shape.kind, shape.residual, lv.init.fn, not never)))
        reset = ir.restarts_from(lv)  # nlc check: a steps level (E317)
        return SlowLevel(lv.name, self.var[lv.name], shape.kind, self.weights(lv.name), shape.d_in, shape.d_out,
                         shape.depth, shape.residual, lv.init.fn, period, rule, lr, lv.online, retain, args.get("beta"),
                         None if reset is None else self.var[reset],
                         0 if reset is None else self.scope.periods[reset].count)

    def loss_level(self, lv: ir.Level) -> LossLevel:
        """A `context loss` level in tokens: number gates and a step-level rule (nlc check: E308, E504)."""
        shape = self.state_shape(lv.name)
        var = self.var[lv.name]
        lr = 1.0 if lv.lr is None else float(self.const(lv.lr))
        retain = 1.0 if lv.retain is None else float(self.const(lv.retain))
        args = {k: float(self.const(e)) for k, e in step_rule_args(lv.update).items()}
        if lv.init.fn == "learned":
            self.modules.append(Module(f"{var}_init", "MemoryInit", (self.weights(lv.name), shape.kind,
                                                                     shape.residual)))
        return LossLevel(lv.name, var, shape.kind, self.weights(lv.name), shape.d_in, shape.d_out, shape.depth,
                         shape.residual, lv.init.fn, self.scope.periods[lv.name].count, lv.update.fn, lr, retain,
                         args, lv.first_order, lv.online, lv.span.line)

    def _reads_after_learning(self, levels: list[LevelPlan]) -> None:
        """A read of a `read current` level sees its update at this token: every value the level learns
        from comes before every read of it (nlc check rejected a cycle: E310). The order is otherwise kept."""
        current = [lv for lv in levels if lv.read_current]
        if not current:
            return
        g = nx.DiGraph()
        g.add_nodes_from(self.order)
        g.add_edges_from((a, n) for n in self.order for a in self.nodes[n].refs)
        for lv in current:
            reads = [n for n in self.order if self.nodes[n].op is Op.READ and self.nodes[n].attrs["level"] == lv.name]
            g.add_edges_from((a.name, r) for a in lv.learning_operands() if isinstance(a, Ref) for r in reads)
        index = {n: i for i, n in enumerate(self.order)}
        self.order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))

    def _mark_loop(self) -> None:
        """Mark nodes that depend on an in-context read (they run chunk by chunk)."""
        for name in self.order:
            node = self.nodes[name]
            reads_level = node.op is Op.READ and node.attrs["level"] in self.in_context
            node.in_loop = reads_level or any(self.nodes[a].in_loop for a in node.refs)


    def _mark_phases(self, levels: list[LevelPlan]) -> None:
        """Split read-dependent nodes: those the levels learn from run in the chunk loop, the rest after it."""
        stack = [a.name for lv in levels for a in lv.learning_operands() if isinstance(a, Ref)]
        stack += [n.name for n in self.nodes.values() if n.op is Op.READ and n.attrs["level"] in self.in_context]
        feeds: set[str] = set()  # what the levels learn from, every read, and everything those need
        while stack:
            name = stack.pop()
            if name not in feeds:
                feeds.add(name)
                stack.extend(self.nodes[name].refs)
        for node in self.nodes.values():
            node.phase = "pre" if not node.in_loop else "loop" if node.name in feeds else "post"


def copy_root(levels: Mapping[str, ir.Level], name: str) -> str:
    """The level whose initial state `name` starts from: follow `init copy(...)` to a level that does not copy.

    `init copy(b)` where b has `init copy(a)` starts from a's initial state (cycles are E311); `init reset(b)`
    starts as `copy(b)` does.
    """
    seen = {name}
    lv = levels[name]
    while isinstance(lv.init, ir.Call) and lv.init.fn in B.COPY_INITS:
        name = lv.init.args[0].name
        if name in seen:  # pragma: no cover - a cycle is E311 at check time
            raise AssertionError(f"init copy cycle through `{name}`")
        seen.add(name)
        lv = levels[name]
    return name


def _heads_kwarg(heads: int) -> dict:
    """MemoryInit's keyword for a multi-head state (none for one head: its parameters keep their shapes)."""
    return {"heads": heads} if heads > 1 else {}


def _bind(call: ir.Call, sig: B.Builtin, const) -> dict:
    out = {}
    given = dict(zip([a.name for a in sig.args], call.args))
    given.update({k.name: k.value for k in call.kwargs})
    for a in sig.args:
        out[a.name] = const(given[a.name]) if a.name in given else (None if a.required else a.default)
    return out


def _combine(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _op_word(e: ir.Expr) -> str:
    if isinstance(e, ir.Call):
        return e.fn
    if isinstance(e, ir.BinOp):
        return {"+": "sum", "-": "diff", "*": "prod", "/": "ratio", "**": "pow"}[e.op]
    return "neg"
