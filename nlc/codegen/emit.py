"""Plan -> lines of Python: every decision about the generated code is made here.

The template (`templates/model.py.j2`) only lays these lines out. Names in the
generated code are the spec's names (SSA nodes are named after `let`s and
levels), so a reader can follow the spec line by line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from nlc.errors import Diagnostic, SpecError
from nlc.plan.model import BlockPlan, LevelPlan, Module, SlowLevel
from nlc.plan.ops import STATEFUL, SYMBOLS, Const, Node, Op, Operand, Ref, refs
from nlc.printer import format_number
from nlc.rules import RULES
from nlc.runtime.steplevel import restart_order
from nlc.unary import UNARY_OPS


@dataclass
class BlockCode:
    """The pieces of one generated block class."""

    plan: BlockPlan
    init_lines: list[str] = field(default_factory=list)
    state_lines: list[str] = field(default_factory=list)
    unpack_lines: list[str] = field(default_factory=list)  # forward: each level's state from the block state
    level_entries: list[str] = field(default_factory=list)  # forward: each level's state in the returned state
    pre_lines: list[str] = field(default_factory=list)
    loop_lines: list[str] = field(default_factory=list)  # the chunk loop's body: slices in, step, collect
    run_line: str = ""  # after the loop: the chunk steps over the gathered inputs (no period step)
    step_params: list[str] = field(default_factory=list)  # `chunk_step`'s parameters, its body and its results
    step_lines: list[str] = field(default_factory=list)
    step_returns: list[str] = field(default_factory=list)
    collect_lines: list[str] = field(default_factory=list)
    hoist_lines: list[str] = field(default_factory=list)
    after_lines: list[str] = field(default_factory=list)
    finish_lines: list[str] = field(default_factory=list)
    kernels: str = "chunked"
    bundles: list["Bundle"] = field(default_factory=list)
    shared_returns: list[str] = field(default_factory=list)  # `"name": <var>_items` of each shared level it declares
    period_work: "PeriodWork | None" = None  # slower levels that work once a period (`period_step`)
    period_params: list[str] = field(default_factory=list)  # `period_step`'s parameters, body and results
    period_lines: list[str] = field(default_factory=list)
    period_returns: list[str] = field(default_factory=list)


@dataclass
class Bundle:
    """Closed-form levels that learn alike, stacked member-major along the batch into one state
    `var` (nlc.runtime.bundle): their reads, gradients and rule run once for all of them."""

    var: str
    members: list[LevelPlan]

    def index(self, level: str) -> int | None:
        return next((i for i, lv in enumerate(self.members) if lv.name == level), None)


@dataclass
class PeriodWork:
    """Levels slower than the block's chunk whose whole work runs once a period instead of once a chunk.

    A level of period P > chunk keeps its period-start state for P tokens: every read of it inside
    the period, and its per-token gradients, are taken at that one state (docs/design.md §1.2). Its
    reads whose results only it and the rest of the forward use (not the chunk's other levels), what
    is computed from them alone, and its gradients can therefore wait for the period's end and run
    on the period's P tokens at once: a few tall matmuls instead of P / chunk short ones, and no
    per-chunk buffers (rt_scan.pend). The chunk step hands the values they need from it (`fast`)
    to the loop, which collects them for the period; the period step (`period_step`) gets them
    joined, with the period's slice of what was computed before the loop (`pre`).
    """

    period: int
    levels: list[LevelPlan]
    nodes: list[str]  # the deferred loop nodes, in plan order
    fast: list[str]  # loop nodes of the chunk step that the period's work reads
    pre: list[str]  # tensors computed before the loop that it reads (split by period)
    whole: list[str]  # scalars computed before the loop that it reads (passed as they are)
    read_in_step: list[LevelPlan]  # its levels that the chunk step still reads (their state is a step input)


def py_value(v) -> str:
    """A Python literal for a plan constant (numbers, bools, tuples, dicts)."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, (int, float)):
        return format_number(v) if isinstance(v, int) else repr(float(v))
    if isinstance(v, str):
        return repr(v)
    if v is None:
        return "None"
    if isinstance(v, tuple):
        return "(" + ", ".join(py_value(i) for i in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(py_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{py_value(k)}: {py_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot emit {type(v).__name__}")


def emit_block(block: BlockPlan, kernels: str = "chunked") -> BlockCode:
    """Return the lines of one block class.

    kernels="chunked" (default) uses the closed-form chunk kernels where a rule has one;
    "sequential" runs every level token by token inside each chunk (a slower, independent
    path that property tests compare against).
    """
    code = BlockCode(block)
    code.kernels = kernels
    for m in block.modules:
        code.init_lines.append(f"self.{m.attr} = {_construct(m)}")
    for c in block.copies:  # slow levels that start from another level's initial weights
        source = f"self.{c.source}" if c.source else _construct(c.fixed)
        code.init_lines.append(f"rt_memory.copy_initial(self.{c.target}, {source})")
    _emit_state(code)
    code.bundles = _bundles(block, _groups(block), kernels) if block.levels else []
    code.period_work = _period_work(block, code.bundles, kernels) if block.levels else None
    _emit_level_io(code)
    nodes = {n.name: n for n in block.nodes}
    levels = {lv.name: lv for lv in block.levels}
    in_loop = {n.name for n in block.nodes if n.in_loop}
    for node in block.nodes[1:]:
        if not node.in_loop:
            code.pre_lines.append(_node_line(node, _readable(block), None))
    _emit_loop(code, nodes, levels, in_loop)
    return code


def _construct(m: Module) -> str:
    """The expression that builds a slow layer or memory of the plan."""
    args = [py_value(a) for a in m.args] + [f"{k}={py_value(v)}" for k, v in m.kwargs.items()]
    ns = "rt_memory" if m.cls in ("MemoryInit", "SlowMemory") else "rt_layers"
    return f"{ns}.{m.cls}({', '.join(args)})"


def _emit_state(code: BlockCode) -> None:
    block = code.plan
    for lv in block.levels:
        if lv.shared:  # the model's state (its init_state)
            continue
        src = block.initial_source(lv)  # the root of an `init copy` chain
        if isinstance(src, SlowLevel):  # a `steps` level's current weights
            init = f"self.{src.var}_state.initial(batch)"
        else:
            init = initial_state(src)
        # materialised, not the initial weights expanded over the batch: every state the chunk step
        # sees then has the same strides, so a compiled step does not compile again after the first update
        code.state_lines.append(f"{lv.var} = {{k: v.to(like).contiguous() for k, v in {init}.items()}}")
        entry = f"{{\"W\": {lv.var}, \"aux\": {_aux_init(lv)}}}"
        code.state_lines.append(f"levels[{lv.name!r}] = {_unfolded(entry, lv)}")
    for lv in block.loss_levels:  # stepped by the model between chunks (nlc.runtime.loss_levels)
        code.state_lines.append(f"{lv.var} = {{k: v.to(like) for k, v in {initial_state(lv)}.items()}}")
        code.state_lines.append(f"levels[{lv.name!r}] = {{\"W\": {lv.var}, \"aux\": "
                                f"rt_loss.initial_aux({lv.rule!r}, {lv.var})}}")
    for n in block.nodes:
        if n.op is Op.CONV:
            code.state_lines.append(f"caches[{n.name!r}] = self.{n.module}.init_cache(batch, {n.width}, like)")
        elif n.op is Op.ATTENTION:
            code.state_lines.append(f"caches[{n.name!r}] = self.{n.module}.init_cache(batch, like)")


def initial_state(lv) -> str:
    """The expression of a level's initial state for `batch` sequences: its learned `<var>_init` module's (on the
    object that creates it: the block, or the model for a shared level), or a fixed init's."""
    if lv.init == "learned":
        return f"self.{lv.var}_init(batch)"
    heads = f", heads={lv.heads}" if lv.heads > 1 else ""
    return f"rt_memory.MemoryInit({py_value(lv.weights)}, {lv.kind!r}, {lv.residual}, {lv.init!r}{heads})(batch)"


def _grads_line(var: str, lv: LevelPlan, key: str, value: str | None, products: bool = False,
                toward: str | None = None) -> str:
    """`<var>_g = ...`: the factored per-token gradients of lv's objective at the state `var` (with
    `products`, `<var>_g, <var>_p = ...`: and the key products its rule reuses, _key_products). With
    `toward`, the values are the level's own read at those keys (`_own_read_targets`), taken in the
    gradients' pass (rt_memory.grads_toward_read); `value` is then unused."""
    call = (f"grads_toward_read({lv.kind!r}, {var}, {key}, {toward}" if toward is not None
            else f"grads({lv.kind!r}, {var}, {key}, {value}")
    return (f"{var}_g{_products_out(var, products)} = rt_memory.{call}, "
            f"{py_value(lv.objective)}, residual={lv.residual}{_ask_products(products)})")


def _values_comment(source: str) -> str:
    """`  # values: <source>` after a gradients' line that reads the level's own values (nothing if long)."""
    return f"  # values: {source}" if source and len(source) < 80 else ""


def _ask_products(products: bool) -> str:
    """`, products=True` for rt_memory.grads / read_and_grads to return the key products too (else nothing)."""
    return ", products=True" if products else ""


def _products_out(var: str, products: bool) -> str:
    """The key products' variable, `, <var>_p`, after the gradients' (nothing without them)."""
    return f", {var}_p" if products else ""


def _key_products(lv: LevelPlan) -> bool:
    """Does lv's closed form reuse the products of its weights with their layer inputs that its
    gradients' forward pass computes (`ChunkForm.key_products`: dgd's k W_0), on a matrix memory?"""
    form = RULES[lv.rule].chunk
    return form is not None and form.key_products and lv.kind in ("mlp", "linear")


def _rule_args(form, gates: dict, var: str, products: bool) -> str:
    """The keyword arguments of a closed-form rule's call: its gates, and the key products it reuses."""
    return ", ".join([*(f"{k}={gates[k]}" for k in form.gates), *_reuse_arg(var, products)])


def _reuse_arg(var: str, products: bool) -> list[str]:
    """`products=<var>_p` for a rule that reuses the key products (_products_out), else nothing."""
    return [f"products={var}_p"] if products else []


def _emit_level_io(code: BlockCode) -> None:
    """How forward takes each level's state from the block state and gives it back (a buffer the
    closed form carries travels as `<level>_S`)."""
    block = code.plan
    bundled = {lv.name for b in code.bundles for lv in b.members}
    running = _running(block, _groups(block))
    for lv in block.levels:
        if lv.shared:  # the model's state: read here; the model learns it from every block's pairs (rt_shared)
            code.unpack_lines.append(f'{lv.var} = shared["{lv.name}"]["W"]  # shared: the period-start state')
            code.unpack_lines.append(f"{lv.var}_items = None  # this block's gradients and gates of the period")
            code.shared_returns.append(f'"{lv.name}": {lv.var}_items')
            continue
        weights, buffers = (f'state["levels"]["{lv.name}"]["{part}"]' for part in ("W", "aux"))
        code.unpack_lines.append(f"{lv.var} = {_folded(weights, lv)}")
        code.unpack_lines.append(f"{lv.var}_aux = {_folded(buffers, lv)}")
        carried = _carried(lv)
        if carried:
            code.unpack_lines.append(f'{lv.var}_S = {lv.var}_aux["{carried}"]')
        if lv.name in running:
            code.unpack_lines.append(f"{lv.var}_run = dict({lv.var})  # it learns every chunk; reads see it at its "
                                     "period's end")
        elif lv.period > block.chunk and lv.name not in bundled and code.period_work is None:
            code.unpack_lines.append(f"{lv.var}_pending = None  # a slower level's chunks, until its period ends")
        aux = f'{{"{carried}": {lv.var}_S}}' if carried else f"{lv.var}_aux"
        entry = f'{{"W": {lv.var}, "aux": {aux}}}'
        code.level_entries.append(f'"{lv.name}": {_unfolded(entry, lv)},')
    for b in code.bundles:  # stacked once a forward; split again after the chunk loop
        names = [lv.var for lv in b.members]
        code.unpack_lines.append(f"{b.var} = rt_bundle.stack([{', '.join(names)}])  # levels learning alike, "
                                 "as one")
        code.after_lines.append(f"{', '.join(names)} = rt_bundle.split({b.var}, {len(names)})")
        if _carried(b.members[0]):
            code.unpack_lines.append(f"{b.var}_S = rt_bundle.stack([{', '.join(n + '_S' for n in names)}])")
            code.after_lines.append(f"{', '.join(n + '_S' for n in names)} = rt_bundle.split({b.var}_S, "
                                    f"{len(names)})")
        if b.members[0].period > block.chunk:
            code.unpack_lines.append(f"{b.var}_pending = None")
    for lv in block.loss_levels:  # read here, stepped by the model: passed through as they came
        code.unpack_lines.append(f'{lv.var} = state["levels"]["{lv.name}"]["W"]')
        code.level_entries.append(f'"{lv.name}": state["levels"]["{lv.name}"],')


def _folded(value: str, lv: LevelPlan) -> str:
    """A level's state from the streaming state ([B, heads, ...]) as the forward uses it ([B*heads, ...])."""
    return f"rt_heads.fold({value}, {lv.heads})" if lv.heads > 1 else value


def _unfolded(value: str, lv: LevelPlan) -> str:
    """The inverse of `_folded`: a state as the streaming state keeps it."""
    return f"rt_heads.unfold({value}, {lv.heads})" if lv.heads > 1 else value


def _carried(lv: LevelPlan) -> str | None:
    """The aux buffer of lv's rule that its closed form carries (kept as `<level>_S`), if any."""
    form = RULES[lv.rule].chunk
    return form.carries if form is not None and lv.update_by is None else None


def _aux_init(lv: LevelPlan) -> str:
    """The rule's state buffers at zero, and a counting rule's update count."""
    rule = RULES[lv.rule]
    if lv.update_by is not None:
        return "{}"
    zeros = f"{{k: torch.zeros_like(v) for k, v in {lv.var}.items()}}"
    items = [f'"{k}": {zeros}' for k in rule.aux] + (['"n": 0'] if rule.counts else [])
    return "{" + ", ".join(items) + "}"


def _ref(a: Operand, in_loop: set[str] | None, sliced: set[str]) -> str:
    if isinstance(a, Const):
        return repr(a.value)
    if in_loop is not None and a.name not in in_loop and a.name in sliced:
        return f"{a.name}_c"
    return a.name


def _node_line(node: Node, levels: dict, in_loop: set[str] | None, sliced: set[str] = frozenset()) -> str:
    """One statement computing `node` (on the whole sequence, or on a chunk when in_loop is given)."""
    args = [_ref(a, in_loop, sliced) for a in node.args]
    comment = f"  # {node.source}" if node.source and len(node.source) < 60 else ""
    lhs = node.name
    match node.op:
        case Op.ALIAS:
            rhs = args[0]
        case Op.LINEAR | Op.RMSNORM | Op.SWIGLU:
            rhs = f"self.{node.module}({args[0]})"
        case Op.CONV | Op.ATTENTION:
            call = ", ".join([args[0], f"caches[{node.name!r}]", *args[1:]])
            return f"{lhs}, caches[{node.name!r}] = self.{node.module}({call}){comment}"
        case Op.LEARNED:
            rhs = f"self.{node.module}()"
        case Op.MEAN:
            rhs = f"{args[0]}.mean(-1, keepdim=True)"
        case Op.CONCAT:
            rhs = f"torch.cat([{', '.join(args)}], dim=-1)"
        case Op.SLICE:
            rhs = f"{args[0]}[..., {node.attrs['start']}:{node.attrs['stop']}]"
        case Op.NEG:
            rhs = f"-{args[0]}"
        case Op.ADD | Op.SUB | Op.MUL | Op.DIV | Op.POW:
            rhs = f"{args[0]} {SYMBOLS[node.op]} {args[1]}"
        case Op.L2NORM:
            rhs = f"rt_layers.l2norm({args[0]})"
        case Op.SPLIT_HEADS:
            rhs = f"rt_heads.split({args[0]}, {node.attrs['heads']})"
        case Op.MERGE_HEADS:
            rhs = f"rt_heads.merge({args[0]}, {node.attrs['heads']})"
        case Op.UNARY:
            rhs = f"{UNARY_OPS[node.attrs['fn']].tensor_code}({args[0]})"
        case Op.READ:
            key = args[0] if args else "None"
            if node.attrs["in_context"] or node.attrs.get("loss"):
                lv = levels[node.attrs["level"]]
                rhs = f"rt_memory.read({lv.kind!r}, {lv.var}, {key}, residual={lv.residual})"
            else:
                rhs = f"self.{node.attrs['var']}_state({key})"
        case _:  # pragma: no cover - nlc.plan.verify admits no other op in a model
            raise SpecError([Diagnostic("E502", f"the compiled back end cannot emit `{node.op.value}` yet")])
    return f"{lhs} = {rhs}{comment}"


def _emit_loop(code: BlockCode, nodes: dict, levels: dict, in_loop: set[str]) -> None:
    """The chunk loop: a `chunk_step` method (reads, in-loop nodes, learning) and the loop calling it.

    `chunk_step` takes the level states at the chunk start and the chunk's slices of
    everything computed before the loop, and returns what the rest of the forward needs
    and the new states. Its shapes are the same for every full chunk, so
    `torch.compile` of it gives a few small graphs that every chunk reuses
    (`nlc.runtime.compile.compile_chunks`), instead of the whole unrolled loop.
    """
    block = code.plan
    if not levels:
        code.finish_lines.append(f"out = {_ref(block.out, None, set())}")
        return
    readable = _readable(block)
    loop = {n.name for n in block.nodes if n.phase == "loop"}
    post = [n for n in block.nodes if n.phase == "post"]
    # every pre-computed tensor the loop uses is sliced to the chunk (at the call)
    work = code.period_work
    deferred = set(work.nodes) if work else set()  # (they run in `period_step`)
    later = {lv.name for lv in work.levels} if work else set()
    used = set()
    for n in block.nodes:
        if n.phase == "loop" and n.name not in deferred:
            used |= {a for a in n.refs if a not in loop}
    groups = _groups(block)
    bundled = {lv.name: b for b in code.bundles for lv in b.members}
    hoisted = [grp[0] for grp in groups if code.kernels == "chunked" and _is_hoisted(grp, block.chunk, loop, nodes)]
    for group in groups:
        for lv in group:
            if lv.name in later:
                continue
            ops = [lv.context[1], lv.context[2]] if lv in hoisted else lv.learning_operands()  # hoisted gates: before
            used |= {a for a in refs(ops) if a not in loop}
    order = list(nodes)
    sliced = sorted((a for a in used if nodes[a].width is not None), key=order.index)
    whole = sorted((a for a in used if nodes[a].width is None), key=order.index)  # scalars: passed as they are
    shared = _shared_reads(block, [g for g in groups if g[0].name not in bundled], loop, code.kernels)
    waves: dict[str, list[str]] = {}  # a bundle's batched read -> the reads it answers, in member order
    own = _own_read_targets(block)
    own_reads = {read.name for read in own.values()}
    # a level's (or bundle's) var -> (the keys of its own read, read with its gradients; the read's source)
    toward: dict[str, tuple[str, str]] = {}
    current_done: set[str] = set()  # `read current` levels whose gradients and coefficients are computed
    loop_nodes = [n for n in block.nodes if n.phase == "loop"]
    emitted: set[str] = set()
    for node in loop_nodes:
        if node.name in emitted or node.name in deferred:
            continue
        if _bundled_read(node, bundled):
            wave = _wave(node, loop_nodes, loop, emitted, bundled)
            bundle = bundled[node.attrs["level"]]
            if len(wave) == len(bundle.members) and all(n.name in own_reads for n in wave):
                toward[bundle.var] = (_wave_key(wave, loop, set(sliced)), ", ".join(n.source for n in wave if n.source))
            else:
                _emit_wave(code, wave, bundle, loop, set(sliced), waves)
            emitted |= {n.name for n in wave}
            continue
        emitted.add(node.name)
        if node.name in own_reads and node.attrs["level"] not in {*bundled, *later}:  # read with its gradients
            toward[levels[node.attrs["level"]].var] = (_ref(node.args[0], loop, set(sliced)), node.source or "")
            continue
        line = _node_line(node, readable, loop, set(sliced))
        if node.op is Op.READ and node.attrs.get("current"):
            _emit_current_read(code, node, levels[node.attrs["level"]], loop, set(sliced), current_done)
        elif node.name in shared:
            lv = levels[node.attrs["level"]]
            key, value = (_ref(a, loop, set(sliced)) for a in lv.context[1:])
            products = _key_products(lv)  # (the level's closed form runs every chunk: _shared_reads)
            code.step_lines += [
                "if full:  # the read and the gradients' forward pass share one pass through the memory",
                f"    {node.name}, {lv.var}_g{_products_out(lv.var, products)} = rt_memory.read_and_grads("
                f"{lv.kind!r}, {lv.var}, {_ref(node.args[0], loop, set(sliced))}, {key}, {value}, "
                f"{py_value(lv.objective)}, residual={lv.residual}{_ask_products(products)})",
                "else:", "    " + line]
        else:
            code.step_lines.append(line)
    # loop values needed after the loop are collected chunk by chunk, then joined
    needed = {a for n in post for a in n.refs if a in loop}
    if isinstance(block.out, Ref) and block.out.name in loop:
        needed.add(block.out.name)
    needed = sorted(needed, key=order.index)
    needed_later = [a for a in needed if a in deferred]  # returned by `period_step`, a period at a time
    needed = [a for a in needed if a not in deferred]
    for group in groups:
        b = bundled.get(group[0].name)
        if group[0].name in later:
            continue
        if b is None:
            _emit_learn(code, group, block.chunk, loop, set(sliced), nodes,
                        {nodes[r].attrs["level"] for r in shared} | current_done, toward=toward)
        elif b.members[0] is group[0]:  # a bundle learns once, where its first member would
            _emit_learn(code, group, block.chunk, loop, set(sliced), nodes, bundle=b, waves=waves, toward=toward)
    _emit_restarts(code, block, groups)
    hoisted_vars = [bundled[lv.name].var if lv.name in bundled else lv.var for lv in hoisted
                    if lv.name not in bundled or bundled[lv.name].members[0] is lv]
    # the step's parameters: states, caches, chunk slices, hoisted coefficients, flags
    states = _step_states(block, groups, code.kernels, bundled, later)
    read_states = [lv.var for lv in work.read_in_step] if work else []  # read in the chunk, stepped a period
    uses_caches = any(n.phase == "loop" and n.op in (Op.CONV, Op.ATTENTION) for n in block.nodes)
    periods = sorted({lv.period for lv in block.levels if lv.period > block.chunk and lv.name not in later})
    fast = [a for a in work.fast if a not in needed] if work else []  # (a needed one is returned already)
    # carried from each chunk's step to the next: the states and caches; every other parameter is the
    # chunk's own input (the slower levels' read states too: they change only between periods)
    carried = [*states, *(["caches"] if uses_caches else [])]
    code.step_params = [*carried, *read_states, *(f"{a}_c" for a in sliced),
                        *whole, *(f"{var}_coef_c" for var in hoisted_vars), "full",
                        *(f"period{p}_{what}" for p in periods for what in ("at", "ends"))]
    code.step_returns = [*needed, *fast, *carried]
    if uses_caches:
        code.step_lines.insert(0, "caches = dict(caches)")
    inputs = [*read_states, *(f"{a}_chunks[s // {block.chunk}]" for a in sliced),
              *whole, *(f"{var}_coef[s // {block.chunk}] if full else None" for var in hoisted_vars), "full",
              *(x for p in periods for x in (f"s % {p}", f"e % {p} == 0"))]
    # split once, not sliced at every chunk: the backward of a slice writes its gradient into zeros the size
    # of the whole sequence, once a chunk (time quadratic in the length); a split's backward is one cat
    for a in sliced:
        code.collect_lines.append(f"{a}_chunks = {a}.split({block.chunk}, dim=1)")
    # every chunk's inputs are gathered, then the steps run in order over them (nlc.runtime.chunks: under
    # compile, several chunks a compiled call): after the loop, or at each period's end before the period step
    code.collect_lines.append("calls = []  # the chunks' inputs, in order")
    code.loop_lines.append(f"full = e - s == {block.chunk}  # only a full chunk advances the state")
    code.loop_lines.append(f"calls.append({_tuple(inputs)})")
    if work:
        _emit_period(code, work, nodes, readable, needed, fast, carried, needed_later, own)
    else:
        code.run_line = (f"{_tuple(f'{a}_parts' for a in needed)}, {_tuple(carried)} = "
                         f"rt_chunks.run(step, {_tuple(carried)}, calls, outputs={len(needed)})")
    code.after_lines[:0] = [f"{a} = torch.cat({a}_parts, dim=1)" for a in [*needed, *needed_later]]
    for node in post:
        code.after_lines.append(_node_line(node, readable, None))
    code.after_lines.append(f"out = {_ref(block.out, None, set())}")


def _tuple(names) -> str:
    """A Python tuple display of names: `(a,)`, `(a, b)`, `()`."""
    names = list(names)
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _readable(block: BlockPlan) -> dict:
    """The levels a read takes its state from a local of: in-context and loss levels, by name."""
    return {lv.name: lv for lv in [*block.levels, *block.loss_levels]}


def _own_read_targets(block: BlockPlan) -> dict[str, Node]:
    """Levels whose values are their own read at the chunk-start state, a read used for nothing else
    (self-generated values: Hope's v^ = M(v), NL arXiv:2512.24695 eqs. 83-85, 95): {level: that read}.
    Their gradients take the read in their own pass through the memory, [v; k] side by side
    (rt_memory.grads_toward_read): each weight is read once, by matmuls twice as tall, and the read
    is not emitted on its own. A level read elsewhere, by heads, `read current`, or shared keeps the
    read and the gradients apart."""
    uses = Counter([r for n in block.nodes for r in n.refs]
                   + refs([op for lv in block.levels for op in lv.learning_operands()])
                   + refs([block.out]))
    nodes = {n.name: n for n in block.nodes}
    out = {}
    for lv in block.levels:
        value = lv.context[2] if lv.context[0] == "kv" else None
        read = nodes.get(value.name) if isinstance(value, Ref) else None
        if (read is None or lv.kind not in ("mlp", "linear") or lv.heads != 1 or lv.shared or lv.read_current
                or not _reads_of(read, {lv.name}) or read.attrs.get("current") or read.phase != "loop"
                or not read.args or not isinstance(read.args[0], Ref) or uses.get(read.name) != 1):
            continue
        out[lv.name] = read
    return out


def _shared_reads(block: BlockPlan, groups: list[list[LevelPlan]], loop: set[str], kernels: str) -> set[str]:
    """Reads that can share their pass through a memory with the level's gradients: the first read
    of a closed-form matrix level that learns every chunk from keys and values computed before the
    loop (so both are known when the read runs)."""
    out = set()
    for group in groups:
        lv = group[0]
        if lv.read_current or lv.shared:  # its reads take the gradients first (_emit_current_read); the model
            continue  # learns a shared level
        if not (kernels == "chunked" and _closed_form(group) and lv.period == block.chunk
                and lv.kind in ("mlp", "linear") and all(isinstance(a, Ref) and a.name not in loop for a in lv.context[1:])):
            continue
        read = next((n for n in block.nodes if n.phase == "loop" and _reads_of(n, {lv.name}) and n.args
                     and isinstance(n.args[0], Ref)), None)
        if read is not None:
            out.add(read.name)
    return out


def _period_work(block: BlockPlan, bundles: list[Bundle], kernels: str) -> PeriodWork | None:
    """The block's slower levels as one PeriodWork, when they can wait for their period's end: all of one
    period P (a multiple of the chunk), each a closed-form level learning alone (not bundled, coupled,
    restarted, shared, multi-head or `read current`), in a block without `context loss` levels. Otherwise
    (and for the sequential kernels) None: the slower levels collect their chunks (rt_scan.pend)."""
    slower = [lv for lv in block.levels if lv.period > block.chunk]
    if kernels != "chunked" or not slower or block.loss_levels or len({lv.period for lv in slower}) != 1:
        return None
    period = slower[0].period
    bundled = {lv.name for b in bundles for lv in b.members}
    groups = {lv.name: grp for grp in _groups(block) for lv in grp}
    restarting = {n for lv in block.levels if lv.reset_from for n in (lv.name, lv.reset_from)}
    if period % block.chunk or any(
            lv.name in bundled or groups[lv.name] != [lv] or not _closed_form([lv]) or lv.read_current or lv.shared
            or lv.name in restarting or lv.heads != 1 for lv in slower):
        return None
    names = {lv.name for lv in slower}
    nodes = {n.name: n for n in block.nodes}
    loop = [n for n in block.nodes if n.phase == "loop"]
    # values that only exist once per sequence (a read of a state without a key: [B, n], no time axis)
    # cannot be joined along time: a period's work that needs one stays per chunk
    timeless = {n.name for n in block.nodes if n.op is Op.READ and not n.args}
    for n in block.nodes:
        if n.refs and all(r in timeless for r in n.refs):
            timeless.add(n.name)
    deferred: set[str] = set()
    for n in loop:  # its keyed reads, and what is computed from them without another level's state or a cache
        if n.op is Op.READ:
            if n.args and _reads_of(n, names):
                deferred.add(n.name)
        elif n.op not in STATEFUL and any(r in deferred for r in n.refs):
            deferred.add(n.name)
    # what the chunk step needs (another level learns from it, a chunk node reads it) stays in the chunk step
    learning = {r for lv in block.levels if lv.name not in names for r in refs(lv.learning_operands())}
    consumers = {n.name: [m.name for m in loop if n.name in m.refs] for n in loop}
    changed = True
    while changed:
        stays = {d for d in deferred if d in learning or any(c not in deferred for c in consumers[d])}
        deferred -= stays
        changed = bool(stays)
    needs = [r for n in loop if n.name in deferred for r in nodes[n.name].refs]
    needs += [r for lv in slower for r in refs(lv.learning_operands())]
    order = list(nodes)
    needs = sorted({r for r in needs if r not in deferred}, key=order.index)
    fast = [r for r in needs if nodes[r].phase == "loop"]
    if any(r in timeless for r in [*fast, *deferred]):
        return None
    read_in_step = [lv for lv in slower if any(_reads_of(n, {lv.name}) and n.name not in deferred for n in loop)]
    return PeriodWork(period, slower, [n.name for n in loop if n.name in deferred], fast,
                      [r for r in needs if nodes[r].phase != "loop" and nodes[r].width is not None],
                      [r for r in needs if nodes[r].phase != "loop" and nodes[r].width is None], read_in_step)


def _step_states(block: BlockPlan, groups: list[list[LevelPlan]], kernels: str,
                 bundled: dict[str, Bundle], later: set[str] = frozenset()) -> list[str]:
    """The state variables `chunk_step` reads and returns, level by level (a bundle's where its first
    member's would be; not those of the levels in `later`, which `period_step` steps)."""
    sequential = _sequential(groups, kernels)
    running = _running(block, groups)
    out = []
    for lv in block.levels:
        if lv.name in later:
            continue
        if lv.shared:  # read-only here, and its pairs so far
            out += [lv.var, f"{lv.var}_items"]
            continue
        if lv.name in bundled:
            b = bundled[lv.name]
            if b.members[0] is lv:
                out += [b.var, *([f"{b.var}_S"] if _carried(lv) else []),
                        *([f"{b.var}_pending"] if lv.period > block.chunk else [])]
            continue
        out.append(lv.var)
        if _carried(lv):
            out.append(f"{lv.var}_S")
        if lv.name in sequential:
            out.append(f"{lv.var}_aux")
        if lv.name in running:
            out.append(f"{lv.var}_run")
        elif lv.period > block.chunk:
            out.append(f"{lv.var}_pending")
    return out


def _sequential(groups: list[list[LevelPlan]], kernels: str) -> set[str]:
    """Levels that learn token by token in the chunk (rt_scan.sequential_chunk), keeping their rule's buffers
    as `<level>_aux`: coupled groups, rules without a closed form, and every level of the sequential kernels."""
    return {lv.name for grp in groups if not (kernels == "chunked" and _closed_form(grp)) for lv in grp}


def _running(block: BlockPlan, groups: list[list[LevelPlan]]) -> set[str]:
    """Levels slower than the chunk in a coupled group of different periods (`update L` with L faster): they
    learn every chunk with the group, their running state carried from chunk to chunk (`<level>_run`), and
    reads see it at the end of their period."""
    return {lv.name for grp in groups if len({m.period for m in grp}) > 1 for lv in grp if lv.period > block.chunk}


def _groups(block: BlockPlan) -> list[list[LevelPlan]]:
    """Levels learn alone when their rule has a closed form; coupled levels learn together."""
    by = {lv.name: lv for lv in block.levels}
    coupled = set()
    for lv in block.levels:
        if lv.update_by or lv.context[0] == "grad":
            coupled |= {lv.name, lv.update_by or lv.context[1]}
        elif RULES[lv.rule].chunk is None:
            coupled.add(lv.name)
    groups = [[lv] for lv in block.levels if lv.name not in coupled]
    # connected components of the coupling, kept in plan order

    g = nx.Graph()
    g.add_nodes_from(coupled)
    for lv in block.levels:
        if lv.name in coupled:
            for other in (lv.update_by, lv.context[1] if lv.context[0] == "grad" else None):
                if other:
                    g.add_edge(lv.name, other)
    order = [lv.name for lv in block.levels]
    for comp in nx.connected_components(g):
        groups.append([by[n] for n in order if n in comp])
    return sorted(groups, key=lambda grp: order.index(grp[0].name))


def _emit_period(code: BlockCode, work: PeriodWork, nodes: dict, readable: dict, step_needed: list[str],
                 step_fast: list[str], carried: list[str], needed: list[str], own: dict) -> None:
    """`period_step` (the deferred nodes on a period's tokens, then the slower levels' gradients and rule)
    and the loop lines that, at every period's end, run the period's chunk steps over their gathered
    inputs and then the period step on their outputs. step_needed: the chunk step's outputs the rest
    of the forward needs, step_fast: those only the period step needs; needed: the period step's.
    own: `_own_read_targets`; those reads are taken with their level's gradients."""
    P = work.period
    fast = set(work.fast)
    lines = code.period_lines
    own = {name: read for name, read in own.items() if read.name in work.nodes}
    taken = {read.name for read in own.values()}  # (read in their level's gradients' pass)
    for name in work.nodes:
        if name not in taken:
            lines.append(_node_line(nodes[name], readable, fast | set(work.nodes), set(work.pre)))
    states = []
    for lv in work.levels:
        form = RULES[lv.rule].chunk
        state = [lv.var, *([f"{lv.var}_S"] if form.carries else [])]
        states += state
        key, value = (_ref(a, fast, set(work.pre)) for a in lv.context[1:])
        gates = {k: _ref(v, fast, set(work.pre)) for k, v in _gate_operands(lv).items()}
        lines.append(f"# learn: {lv.name} ({lv.rule}, every {P} tokens), the period's tokens at once")
        lines.append("if full:  # a full period: the level advances")
        products = _key_products(lv)
        own_keys = _ref(own[lv.name].args[0], fast, set(work.pre)) if lv.name in own else None
        lines.append("    " + _grads_line(lv.var, lv, key, value, products, toward=own_keys)
                     + (_values_comment(own[lv.name].source or "") if own_keys else ""))
        args = _rule_args(form, gates, lv.var, products)
        lines.append(f"    {', '.join(state)} = rt_scan.chunk({lv.rule!r}, {', '.join(state)}, {lv.var}_g, {args})")
    code.period_params = [*states, *work.fast, *(f"{a}_c" for a in work.pre), *work.whole, "full"]
    code.period_returns = [*needed, *states]
    for a in work.pre:
        code.collect_lines.append(f"{a}_periods = {a}.split({P}, dim=1)")
    for a in [*step_needed, *needed]:
        code.collect_lines.append(f"{a}_parts = []")
    outputs = [*step_needed, *step_fast]  # each a list: the period's chunks of it
    args = [*states, *(f"torch.cat({a}_period, dim=1)" for a in work.fast), *(f"{a}_periods[s // {P}]" for a in work.pre),
            *work.whole, f"e - s + s % {P} == {P}"]
    code.loop_lines += [
        f"if e % {P} == 0 or e == T:  # a period's end (or the sequence's): its chunks, then the slower levels' work",
        f"    {_tuple(f'{a}_period' for a in outputs)}, {_tuple(carried)} = "
        f"rt_chunks.run(step, {_tuple(carried)}, calls, outputs={len(outputs)})",
        "    calls = []",
        *(f"    {a}_parts += {a}_period" for a in step_needed),
        f"    {', '.join(code.period_returns)}{',' if len(code.period_returns) == 1 else ''} = period({', '.join(args)})",
        *(f"    {a}_parts.append({a})" for a in needed)]


def _emit_learn(code: BlockCode, group: list[LevelPlan], chunk: int, in_loop, sliced, nodes: dict,
                shared: set[str] = frozenset(), bundle: Bundle | None = None, waves: dict | None = None,
                toward: dict | None = None) -> None:
    """The learning of one group of levels (levels in `shared` got their gradients with their read),
    or of a bundle: its members' keys and gates tiled over the members, their values stacked. `toward`:
    the levels (vars) whose values are their own read, at these keys (`_own_read_targets`)."""
    if group[0].shared:
        _emit_items(code, group[0], in_loop, sliced)
        return
    lines = code.step_lines
    mixed = len({lv.period for lv in group}) > 1  # runs every chunk; its slower levels carry `<level>_run`
    period = chunk if mixed else group[0].period
    kv = [lv for lv in group if lv.context[0] == "kv"]
    members = bundle.members if bundle else group
    desc = ", ".join(f"{lv.name} ({'update by ' + lv.update_by if lv.update_by else lv.rule}, "
                     f"every {lv.period} tokens)" for lv in members)
    lines.append(f"# learn: {desc}" + (", as one bundle" if bundle else ""))
    grad_lines = []
    gates = {lv.name: {k: _ref(v, in_loop, sliced) for k, v in _gate_operands(lv).items()} for lv in group}
    # the closed form, run as each chunk ends (not pending), reuses the gradients' key products
    products = code.kernels == "chunked" and _closed_form(group) and period <= chunk and _key_products(group[0])
    for lv in kv:
        if lv.name in shared:
            continue
        key, value = (_ref(a, in_loop, sliced) for a in lv.context[1:])
        own_keys, source = (toward or {}).get(_var(lv, bundle), (None, ""))
        if bundle:
            key = f"rt_bundle.tile({key}, {len(members)})"
            value = None if own_keys else _stacked_values(bundle, in_loop, sliced, waves)
        grad_lines.append(_grads_line(_var(lv, bundle), lv, key, value, products, toward=own_keys)
                          + _values_comment(source))
    if bundle:
        gates = {lv.name: {k: f"rt_bundle.tile({v}, {len(members)})" for k, v in gates[lv.name].items()}
                 for lv in group}
    if period > chunk:  # a slower level collects its chunks until its period is complete
        lines.extend(grad_lines)
        for lv in group:
            var = _var(lv, bundle)
            g = f"{var}_g" if lv in kv else "None"
            lines.append(f"{var}_pending = rt_scan.pend({var}_pending, {g}, {py_value_dict(gates[lv.name])}, "
                         f"period{period}_at, {period})")
        lines.append(f"if full and period{period}_ends:  # a full period: its chunks are all in")
        for lv in group:
            var = _var(lv, bundle)
            lines.append(f"    {var}_g, {var}_gates = {var}_pending  # (the next period overwrites the buffers)")
            gates[lv.name] = {k: f"{var}_gates[{k!r}]" for k in gates[lv.name]}
    else:
        lines.append("if full:  # the state advances")
        lines.extend("    " + line for line in grad_lines)
    indent = "    "
    if code.kernels == "chunked" and _closed_form(group):
        lv = group[0]
        var = _var(lv, bundle)
        gt = gates[lv.name]
        form = RULES[lv.rule].chunk
        state = f"{var}, {var}_S" if form.carries else var  # what the kernel takes and returns
        if _is_hoisted(group, chunk, in_loop, nodes):
            # the gates are known for the whole sequence: their chunk coefficients are computed once
            ops = _gate_operands(lv)
            whole = {k: _ref(ops[k], None, set()) for k in form.gates}
            if bundle:
                whole = {k: f"rt_bundle.tile({v}, {len(members)})" for k, v in whole.items()}
            args = ", ".join(f"{k}={v}" for k, v in whole.items())
            code.hoist_lines.append(f"{var}_coef = rt_scan.chunk_coefficients({lv.rule!r}, {chunk}, {args})")
            args = ", ".join([f"{var}_coef_c", *_reuse_arg(var, products)])
            lines.append(f"{indent}{state} = rt_scan.chunk_apply({lv.rule!r}, {state}, {var}_g, {args})")
            return
        args = _rule_args(form, gt, var, products)
        lines.append(f"{indent}{state} = rt_scan.chunk({lv.rule!r}, {state}, {var}_g, {args})")
        return
    lines.append(f"{indent}learned = rt_scan.sequential_chunk([")
    for lv in group:
        spec = {"name": lv.name, "rule": lv.rule, "objective": lv.objective,
                "context": lv.context[0] if lv.context[0] != "grad" else lv.context[1], "update_by": lv.update_by}
        fixed = ", ".join(f"{k!r}: {py_value(v) if v is not None else 'None'}" for k, v in spec.items())
        gate_items = ", ".join(f"{k!r}: {v}" for k, v in gates[lv.name].items())
        lines.append(f"{indent}    {{{fixed}, {gate_items}}},")
    slower = {lv.name for lv in group if mixed and lv.period > chunk}  # (_running)
    states = ", ".join(f"{lv.name!r}: {{\"W\": {lv.var}, \"aux\": {lv.var}_aux"
                       + (f", \"running\": {lv.var}_run" if lv.name in slower else "") + "}" for lv in group)
    grads = ", ".join(f"{lv.name!r}: {lv.var}_g" for lv in kv)
    lines.append(f"{indent}], {{{states}}}, {{{grads}}})")
    for lv in group:
        target = f"{lv.var}_run" if lv.name in slower else lv.var
        lines.append(f"{indent}{target}, {lv.var}_aux = learned[{lv.name!r}][\"W\"], learned[{lv.name!r}][\"aux\"]")
        if lv.name in slower:
            lines.append(f"{indent}if period{lv.period}_ends:  # reads see {lv.name} from its period's end")
            lines.append(f"{indent}    {lv.var} = {lv.var}_run")
        carried = _carried(lv)
        if carried:  # the block returns the carried buffer as `{var}_S`: keep it current
            lines.append(f'{indent}{lv.var}_S = {lv.var}_aux["{carried}"]')


def _emit_items(code: BlockCode, lv: LevelPlan, in_loop, sliced) -> None:
    """A shared level (docs/design.md §1.8): the block does not step it; each full chunk adds its gradients at
    the period-start state and its gates to the block's items of the period, which the model's
    `learn_shared` steps the level with, with every other writer's (nlc.runtime.shared)."""
    key, value = (_ref(a, in_loop, sliced) for a in lv.context[1:])
    gates = {k: _ref(v, in_loop, sliced) for k, v in _gate_operands(lv).items()}
    code.step_lines += [
        f"# learn: {lv.name} ({lv.rule}, every {lv.period} tokens) is shared: the model steps it with every "
        "block's pairs",
        "if full:",
        f"    {_grads_line(lv.var, lv, key, value)}",
        f"    {lv.var}_items = rt_shared.collect({lv.var}_items, {lv.var}_g, {py_value_dict(gates)})"]


def _emit_current_read(code: BlockCode, node: Node, lv: LevelPlan, loop: set[str], sliced: set[str],
                       done: set[str]) -> None:
    """A read of a `read current` level (nlc.runtime.inside): at its first read in the chunk, the level's
    gradients at the chunk-start state (for every chunk, a partial one too: its reads see its updates)
    and its per-token coefficients; then the read of W_t at every token t. Its learning reuses the
    gradients. The sequential kernels read the per-token states one by one instead."""
    lines = code.step_lines
    key, value = (_ref(a, loop, sliced) for a in lv.context[1:])
    gates = {k: _ref(v, loop, sliced) for k, v in _gate_operands(lv).items()}
    S = f"{lv.var}_S" if _carried(lv) else "None"
    q = _ref(node.args[0], loop, sliced)
    args = ", ".join(f"{k}={gates[k]}" for k in RULES[lv.rule].chunk.gates)
    if lv.name not in done:
        done.add(lv.name)
        lines.append(f"# {lv.name} reads its state after the chunk's updates up to each token (read current)")
        lines.append(_grads_line(lv.var, lv, key, value))
        if code.kernels == "chunked":
            lines.append(f"{lv.var}_inside = rt_inside.token_coefficients({lv.rule!r}, {q}, {args})")
    comment = f"  # {node.source}" if node.source and len(node.source) < 60 else ""
    if code.kernels == "chunked":
        lines.append(f"{node.name} = rt_inside.read({lv.kind!r}, {lv.var}, {S}, {lv.var}_g, {lv.var}_inside, {q}, "
                     f"residual={lv.residual}){comment}")
    else:
        lines.append(f"{node.name} = rt_inside.read_sequential({lv.kind!r}, {lv.rule!r}, {lv.var}, {S}, {lv.var}_g, "
                     f"{q}, residual={lv.residual}, {args}){comment}")


def _emit_restarts(code: BlockCode, block: BlockPlan, groups: list[list[LevelPlan]]) -> None:
    """`init reset(L)` (NL eq. 72): after every level has learned, at the end of L's period (a longer multiple
    of the level's, so nothing of its own is pending), the level starts again from L's state, its rule's
    buffers from zero. Neither is bundled (`_bundles`)."""
    by = {lv.name: lv for lv in block.levels}
    sequential = _sequential(groups, code.kernels)
    for lv in restart_order(block.levels, lambda lv: lv.name, lambda lv: lv.reset_from):
        src = by[lv.reset_from]
        code.step_lines.append(f"if full and period{src.period}_ends:  # {lv.name} restarts from {src.name} "
                               "(init reset)")
        code.step_lines.append(f"    {lv.var} = dict({src.var})")
        carried = _carried(lv)
        if lv.name in sequential:
            code.step_lines.append(f"    {lv.var}_aux = {_aux_init(lv)}")
            if carried:
                code.step_lines.append(f'    {lv.var}_S = {lv.var}_aux["{carried}"]')
        elif carried:
            code.step_lines.append(f"    {lv.var}_S = {{k: torch.zeros_like(v) for k, v in {lv.var}_S.items()}}")


def _var(lv: LevelPlan, bundle: Bundle | None) -> str:
    """The state variable a level learns in: its own, or its bundle's."""
    return bundle.var if bundle else lv.var


# ---- bundles: levels that learn alike, stacked into one state (nlc.runtime.bundle) ----


def _bundles(block: BlockPlan, groups: list[list[LevelPlan]], kernels: str) -> list[Bundle]:
    """Closed-form matrix levels with the same memory, rule, period, gates, objective and key, in
    plan order: each set of two or more becomes a bundle (their values may differ). The
    sequential kernels (the independent path tests compare against) bundle nothing."""
    if kernels != "chunked":
        return []
    restarting = {n for lv in block.levels if lv.reset_from for n in (lv.name, lv.reset_from)}  # (_emit_restarts)
    restarting |= {lv.name for lv in block.levels if lv.read_current or lv.shared}  # (_emit_current_read, _emit_items)
    alike: dict[tuple, list[LevelPlan]] = {}
    for group in groups:
        lv = group[0]
        if not _closed_form(group) or lv.kind not in ("mlp", "linear") or not isinstance(lv.context[1], Ref) \
                or lv.name in restarting:
            continue
        signature = (lv.kind, tuple(lv.weights.items()), lv.heads, lv.residual, lv.rule, lv.period, lv.objective, lv.lr,
                     lv.retain, tuple(sorted(lv.rule_args.items())), lv.context[1])
        alike.setdefault(signature, []).append(lv)
    return [Bundle(f"{members[0].var}_bundle", members) for members in alike.values() if len(members) > 1]


def _reads_of(node: Node, levels) -> bool:
    """Is `node` a read of the state of one of `levels` (names), an in-context level?"""
    return node.op is Op.READ and node.attrs["in_context"] and node.attrs["level"] in levels


def _bundled_read(node: Node, bundled: dict[str, Bundle]) -> bool:
    return _reads_of(node, bundled)


def _wave(first: Node, loop_nodes: list[Node], loop: set[str], emitted: set[str],
          bundled: dict[str, Bundle]) -> list[Node]:
    """`first` and every later read of its bundle's other members that can run now (what it reads is
    computed already): one read of each member at most, in member order."""
    bundle = bundled[first.attrs["level"]]
    wave = {first.attrs["level"]: first}
    if first.args and isinstance(first.args[0], Ref):
        for node in loop_nodes[loop_nodes.index(first) + 1:]:
            if (node.name not in emitted and _bundled_read(node, bundled) and bundled[node.attrs["level"]] is bundle
                    and node.attrs["level"] not in wave and node.args and isinstance(node.args[0], Ref)
                    and all(r not in loop or r in emitted for r in node.refs)):
                wave[node.attrs["level"]] = node
    return sorted(wave.values(), key=lambda n: bundle.index(n.attrs["level"]))


def _emit_wave(code: BlockCode, wave: list[Node], bundle: Bundle, loop: set[str], sliced: set[str],
               waves: dict[str, list[str]]) -> None:
    """One read of a bundle for the reads in `wave`: the members' states (all of the bundle's, or
    the rows of those read), their keys stacked the same way, the answer split back."""
    lv = bundle.members[0]
    rows = tuple(bundle.index(n.attrs["level"]) for n in wave)
    state = bundle.var if rows == tuple(range(len(bundle.members))) else \
        f"rt_bundle.take({bundle.var}, {py_value(rows)}, {len(bundle.members)})"
    sources = ", ".join(n.source for n in wave if n.source)
    comment = f"  # {sources}" if sources and len(sources) < 80 else ""
    key = _wave_key(wave, loop, sliced)
    if len(wave) == 1:
        code.step_lines.append(f"{wave[0].name} = rt_memory.read({lv.kind!r}, {state}, {key}, "
                               f"residual={lv.residual}){comment}")
        return
    var = f"{bundle.var}_{len(waves) + 1}_wave"
    waves[var] = [n.name for n in wave] if len(wave) == len(bundle.members) else []
    code.step_lines.append(f"{var} = rt_memory.read({lv.kind!r}, {state}, {key}, residual={lv.residual}){comment}")
    code.step_lines.append(f"{', '.join(n.name for n in wave)} = {var}.chunk({len(wave)})")


def _wave_key(wave: list[Node], loop: set[str], sliced: set[str]) -> str:
    """The keys of a wave's reads stacked member-major (one key tiled when they all read the same)."""
    keys = [_ref(n.args[0], loop, sliced) if n.args else "None" for n in wave]
    if len(wave) == 1:
        return keys[0]
    return f"rt_bundle.tile({keys[0]}, {len(wave)})" if len(set(keys)) == 1 else f"torch.cat([{', '.join(keys)}])"


def _stacked_values(bundle: Bundle, in_loop, sliced, waves: dict[str, list[str]]) -> str:
    """The members' values stacked member-major: a read of the whole bundle when they are its answers."""
    values = [_ref(lv.context[2], in_loop, sliced) for lv in bundle.members]
    for var, names in waves.items():
        if names == values:
            return var
    return f"torch.cat([{', '.join(values)}])"


def _closed_form(group: list[LevelPlan]) -> bool:
    lv = group[0]
    return len(group) == 1 and RULES[lv.rule].chunk is not None and not lv.update_by and lv.context[0] == "kv"


def _is_hoisted(group: list[LevelPlan], chunk: int, in_loop: set[str], nodes: dict) -> bool:
    """Are the level's gate coefficients computed before the loop (closed form, gates read no level)?"""
    lv = group[0]
    if not _closed_form(group) or lv.period != chunk or lv.read_current or lv.shared:  # (its reads take the gates
        # per chunk; the model steps a shared level)
        return False
    ops = _gate_operands(lv)
    gates = [ops[k] for k in RULES[lv.rule].chunk.gates]
    tensors = [g for g in refs(gates) if nodes[g].width is not None]
    return bool(tensors) and all(g not in in_loop for g in refs(gates))


def _gate_operands(lv: LevelPlan) -> dict[str, Operand]:
    """lr, retain and the rule's arguments: the gates a closed form may take, by name."""
    return {"lr": lv.lr, "retain": lv.retain, **lv.rule_args}


def py_value_dict(d: dict) -> str:
    return "{" + ", ".join(f"{k!r}: {v}" for k, v in d.items()) + "}"
