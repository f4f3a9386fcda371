"""Optimizer plan -> Python source of a torch.optim.Optimizer subclass.

Every decision about the generated code is made here; `templates/optimizer.py.j2`
only lays the lines out. The generated step follows `nlc.optim`'s semantics
line by line: per parameter tensor it reads the levels' states from before the
step, evaluates the `let`s, takes the levels' objective gradients, then applies
the update rules in plan order (the parameters last). Names in the generated
code are the spec's names (`m`, `m_new`, `v`, `weights`), so a reader can follow
the spec. Expressions are the plan's nodes (nlc.plan.ops): each is written inline
where it is used, a let's as a named local. Nothing from a spec is pasted unescaped:
names are checked identifiers, numbers are formatted, strings are repr'd.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from nlc import ir
from nlc.codegen.layout import ENV, display_path, spec_hash
from nlc.codegen.safety import audit_source, comment_text
from nlc.plan.ops import SYMBOLS, Const, Hyper, Node, Op, Operand
from nlc.plan.optimizer import OptimizerPlan, OptLevel, plan_optimizer
from nlc.names import NameAllocator, camel
from nlc.printer import format_number
from nlc.objectives import OBJECTIVES
from nlc.rules import RULES
from nlc.unary import UNARY_OPS
from nlc.version import __version__

ATOM, POW, NEG, MUL, ADD = 5, 4, 3, 2, 1
BIN_PREC = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "**": POW}


@dataclass(frozen=True)
class Code:
    """A Python expression: its text, how tightly it binds, and whether it is a tensor or a Python number."""

    text: str
    prec: int = ATOM
    kind: str = "tensor"  # "tensor" | "py"
    negated: "Code | None" = None  # this is -(negated)

    def wrap(self, need: int) -> str:
        return f"({self.text})" if self.prec < need else self.text

    # Arithmetic on Code writes code: a rule's step (nlc.rules), run on Code values, becomes the
    # generated step's text. Numbers become literals; products by a literal 1 are dropped and a
    # negation is pulled out of a product (exact in floating point), so that the text reads as
    # the spec would write it.
    def __add__(self, other) -> "Code":
        return plus(self, as_code(other))

    def __radd__(self, other) -> "Code":
        return plus(as_code(other), self)

    def __sub__(self, other) -> "Code":
        return minus(self, as_code(other))

    def __rsub__(self, other) -> "Code":
        return minus(as_code(other), self)

    def __mul__(self, other) -> "Code":
        return product(self, as_code(other))

    def __rmul__(self, other) -> "Code":
        return product(as_code(other), self)

    def __truediv__(self, other) -> "Code":
        return binop("/", self, as_code(other))

    def __pow__(self, other) -> "Code":
        return binop("**", self, as_code(other))

    def __neg__(self) -> "Code":
        return neg(self)


def binop(op: str, a: Code, b: Code) -> Code:
    prec = BIN_PREC[op]
    if op == "**":
        text = f"{a.wrap(ATOM)} ** {b.wrap(NEG)}"
    else:
        text = f"{a.wrap(prec)} {op} {b.wrap(prec + 1)}"
    return Code(text, prec, "tensor" if "tensor" in (a.kind, b.kind) else "py")


def neg(a: Code) -> Code:
    if a.negated is not None:
        return a.negated
    return Code(f"-{a.wrap(NEG)}", NEG, a.kind, negated=a)


def scale(gate: Code | None, x: Code) -> Code:
    """gate * x, or x when the gate is absent or the literal 1."""
    return x if gate is None or gate.text == "1" else binop("*", gate, x)


def product(a: Code, b: Code) -> Code:
    """a * b, without a literal factor 1, written -(a * x) when b is -x (or a is)."""
    if a.text == "1":
        return b
    if b.text == "1":
        return a
    if b.negated is not None:
        return neg(product(a, b.negated))
    if a.negated is not None:
        return neg(product(a.negated, b))
    return binop("*", a, b)


def as_code(x) -> Code:
    return x if isinstance(x, Code) else number(x)


def q(key: str) -> str:
    """A string literal for a state or group key (spec names and dots only)."""
    return f'"{key}"' if re.fullmatch(r"[A-Za-z0-9_.]+", key) else repr(key)


def plus(base: Code, term: Code) -> Code:
    """base + term, written base - t when term is -t."""
    return binop("-", base, term.negated) if term.negated is not None else binop("+", base, term)


def minus(base: Code, term: Code) -> Code:
    return binop("+", base, term.negated) if term.negated is not None else binop("-", base, term)


def number(v) -> Code:
    if isinstance(v, bool):
        return Code(repr(v), ATOM, "py")
    text = format_number(v) if isinstance(v, int) else repr(float(v))
    return Code(text, ATOM if not text.startswith("-") else NEG, "py")


@dataclass
class OptimizerCode:
    """The pieces of one generated optimizer class."""

    plan: OptimizerPlan
    class_name: str
    signature: list[str]  # the constructor's arguments: one line, or one a line between ( and )
    defaults: list[str]  # the defaults dict: one line, or one entry a line
    init_lines: list[str]
    group_lines: list[str]
    param_lines: list[str]
    doc_lines: list[str]
    state_keys: list[str]
    uses_math: bool
    uses_F: bool


class _Emitter:
    def __init__(self, plan: OptimizerPlan):
        self.plan = plan
        names = NameAllocator()
        self.hyper = {h.name: names.take(h.name) for h in plan.hypers}
        self.nodes = {n.name: n for n in plan.nodes}
        self.let = {n.name: names.take(n.name) for n in plan.lets}
        self.pre = {lv.name: names.take(lv.name) for lv in plan.levels if not lv.root}
        self.names = names
        self.new: dict[str, str] = {}  # level -> local holding its new state (once written)
        self.grads: dict[str, Code] = {}  # level -> its objective gradient
        self.used_hypers: set[str] = set()
        self.from_group = False  # hyper-parameters read as group["name"] (in _init_state)
        self.uses_math = self.uses_F = False
        self.state_keys: list[str] = ["step"]

    # ---- operands and nodes ----
    def code(self, a: Operand) -> Code:
        """Python code for an operand: a number, a hyper-parameter, a let's local, or a node's expression inlined."""
        if isinstance(a, Const):
            return number(a.value)
        if isinstance(a, Hyper):
            if self.from_group:
                return Code(f"group[{q(a.name)}]", ATOM, "py")
            self.used_hypers.add(a.name)
            return Code(self.hyper[a.name], ATOM, "py")
        node = self.nodes[a.name]
        if a.name in self.let:
            return Code(self.let[a.name], ATOM, _kind(node))
        return self.node_code(node)

    def node_code(self, node: Node) -> Code:
        """What `node` computes, its operands inlined (a let's local stands for the let)."""
        args = [self.code(a) for a in node.args]
        match node.op:
            case Op.INPUT:
                return Code(node.name, ATOM, _kind(node))
            case Op.ALIAS:
                return args[0]
            case Op.NEG:
                return neg(args[0])
            case Op.ADD | Op.SUB | Op.MUL | Op.DIV | Op.POW:
                return binop(SYMBOLS[node.op], *args)
            case Op.READ:
                return self.read(node.attrs["level"], args[0] if args else None, node.attrs["new"])
            case Op.NEWTON_SCHULZ:
                return Code(f"rt.orthogonalize({args[0].text}, {args[1].text})")
            case Op.MEAN:
                return Code(f"{args[0].wrap(ATOM)}.mean()")
            case Op.L2NORM:
                return Code(f"rt.l2norm({args[0].text})")
            case Op.UNARY:
                return self.unary(node.attrs["fn"], args[0])
        raise AssertionError(f"cannot emit {node.op}")  # pragma: no cover - verify(plan) admits OPTIMIZER_OPS only

    def unary(self, fn: str, x: Code) -> Code:
        """An elementwise builtin (nlc.unary): its scalar form on a Python number, its tensor form otherwise."""
        if x.kind == "py":
            text = UNARY_OPS[fn].scalar_code
            self.uses_math |= text.startswith("math.")
            return Code(f"{text}({x.text})", ATOM, "py")
        text = UNARY_OPS[fn].tensor_code
        self.uses_F |= text.startswith("F.")
        return Code(f"{text}({x.text})")

    def read(self, name: str, key: Code | None, new: bool) -> Code:
        """A level's state (pre-step, or new), debiased if asked, read with `key`."""
        lv = self.plan.level(name)
        if lv.root:
            base = Code("param")
        elif lv.kind == "mlp":
            weights = self.new[name] if new else self.pre[name]
            return Code(f"rt.mlp_read({weights}, {key.text}, residual={self.code(lv.mlp['residual']).text})")
        else:
            base = Code(self.new[name] if new else self.pre[name])
            if lv.debias:
                retain = self.code(lv.retain)
                base = binop("/", base, Code(f"rt.bias_correction({retain.text}, {self.count(lv, new)})"))
        return base if key is None else binop("*", base, key)

    def count(self, lv: OptLevel, new: bool) -> str:
        """How many per-step updates the state a read sees has had."""
        step = "step" if new else "step - 1"
        if lv.period is None:
            return step
        n = self.code(lv.period).wrap(MUL + 1)
        return f"{n} * ({step} // {n})" if new else f"{n} * (({step}) // {n})"

    def period_end(self, lv: OptLevel) -> str:
        return f"step % {self.code(lv.period).wrap(MUL + 1)} == 0"

    # ---- a level's context and objective gradient ----
    def context(self, lv: OptLevel) -> tuple[Code | None, Code]:
        """(key, value): key None is the constant key 1."""
        if lv.context == "loss":
            return None, neg(Code("grad")) if lv.root else Code("grad")
        if lv.context == "grad":
            return None, self.grads[lv.grad_of]
        return (None if lv.key is None else self.code(lv.key)), self.code(lv.value)

    def objective_grad(self, lv: OptLevel, lines: list[str]) -> None:
        """Phase 1: the gradient of lv's objective at its state from before the step."""
        key, value = self.context(lv)
        name = self.names.take(f"{lv.name}_grad")
        if lv.kind == "mlp":
            arg = "None" if lv.objective_arg is None else self.code(lv.objective_arg).text
            res = self.code(lv.mlp["residual"]).text
            lines.append(f"{name} = rt.mlp_grads({self.pre[lv.name]}, {key.text}, {value.text}, "
                         f"{q(lv.objective)}, {arg}, residual={res})")
            self.grads[lv.name] = Code(name)
            return
        state = Code("param") if lv.root else Code(self.pre[lv.name])
        y = state if key is None else binop("*", state, key)
        objective = OBJECTIVES[lv.objective]
        args = () if lv.objective_arg is None else (self.code(lv.objective_arg),)
        g = objective.grad(y, value, _TorchText(), *args)  # the registry's formula, as text
        g = g if key is None else g * key  # y = state * k
        what = f"d/d{lv.name} " + objective.formula.format(y=lv.name + ('' if key is None else ' * k'))
        if g.prec == ATOM and g.negated is None:
            self.grads[lv.name] = g  # a name already: no line needed
            self.names.taken.discard(name)
            return
        lines.append(f"{name} = {g.text}  # {what}")
        self.grads[lv.name] = Code(name)

    # ---- a level's update ----
    def step_term(self, lv: OptLevel, lr: Code | None) -> Code:
        """-lr * g, with g the objective gradient (for the dot objective: + lr * v * k, without forming g)."""
        if lv.name in self.grads:
            return neg(scale(lr, self.grads[lv.name]))
        key, value = self.context(lv)
        vk = value if key is None else binop("*", value, key)
        if vk.negated is not None:
            return neg(scale(lr, vk.negated))
        return scale(lr, vk)

    def update(self, lv: OptLevel, lines: list[str]) -> None:
        """Phase 2: apply lv's update rule; store its state; bind its new state."""
        name = lv.name
        lines += _pack(lv.parts, 96, f"# level {name}: ", "#   ")
        periodic = lv.period is not None
        lr = None if lv.lr is None else self.code(lv.lr)
        retain = None if lv.retain is None else self.code(lv.retain)
        if lv.root and not periodic:
            prev = Code("param")
        elif periodic:
            prev = Code(self.names.take(f"{name}_running"))
            key = f"{name}.running"
            load = f"rt.load_mlp(state, {q(key)})" if lv.kind == "mlp" else f"state[{q(key)}]"
            lines.append(f"{prev.text} = {load}  # the running state: the rule advances it every step")
        else:
            prev = Code(self.pre[name])
        if lv.kind == "mlp":
            new = self.mlp_gd(lv, prev, lr, retain)
        elif lv.rule is None:
            u = self.code(lv.update)  # its reads see the new states (the plan's READ nodes say so)
            if lv.root and not periodic:
                self.root_in_place(u, lr, retain, lines)
                return
            new = minus(scale(retain, prev), scale(lr, u))
        else:
            new, after = self.rule(lv, prev, lr, retain, lines)
            self.store(lv, prev, new, lines)
            lines += after
            return
        self.store(lv, prev, new, lines)

    def root_in_place(self, u: Code, lr: Code | None, retain: Code | None, lines: list[str]) -> None:
        """p <- retain p - lr u, in place (as torch.optim does)."""
        if u.prec != ATOM or u.negated is not None:
            lines.append(f"update = {u.text}")
            u = Code("update")
        if retain is not None:
            lines.append(f"p.mul_({retain.text})")
        if lr is None:
            lines.append(f"p.sub_({u.text})")
        elif lr.kind == "py":
            lines.append(f"p.add_({u.text}, alpha=-{lr.wrap(NEG + 1)})")
        else:
            lines.append(f"p.sub_({binop('*', lr, u).text})")

    def rule(self, lv: OptLevel, prev: Code, lr: Code | None, retain: Code | None,
             lines: list[str]) -> tuple[Code, list[str]]:
        """lv's rule: its registry entry's step, run on Code, writes the lines (nlc.rules.base).

        Returns the new state and the lines that store the rule's buffers: right away, or, when
        the new state still reads a buffer's old value, after the new state is stored.
        """
        rule = RULES[lv.rule]
        args = {k: self.code(v) for k, v in lv.rule_args.items()}
        buffers = {k: Code(f"state[{q(f'{lv.name}.{k}')}]") for k in rule.aux}
        ops = _CodeOps(self.names, lv.name, lines)
        new, new_aux = rule.step(prev, self.gradient_for_rule(lv), buffers, lr or number(1), retain or number(1),
                                 args, ops, count=Code("step", ATOM, "py"))
        stores = [f"{buffers[k].text} = {v.text}" for k, v in new_aux.items()]
        if any(b.text in new.text for b in buffers.values()):
            return new, stores
        lines += stores
        return new, []

    def gradient_for_rule(self, lv: OptLevel) -> Code:
        """lv's objective gradient: its name, or -(value * key) where the dot objective's was not formed."""
        if lv.name in self.grads:
            return self.grads[lv.name]
        key, value = self.context(lv)
        return neg(value if key is None else binop("*", value, key))

    def mlp_gd(self, lv: OptLevel, prev: Code, lr: Code | None, retain: Code | None) -> Code:
        w, dw = self.names.take("w"), self.names.take("dw")
        body = minus(scale(retain, Code(w)), scale(lr, Code(dw)))
        return Code(f"[{body.text} for {w}, {dw} in zip({prev.text}, {self.grads[lv.name].text})]")

    def store(self, lv: OptLevel, prev: Code, new: Code, lines: list[str]) -> None:
        name = lv.name
        mlp = lv.kind == "mlp"

        def put(key: str, value: str) -> str:
            return f"rt.store_mlp(state, {q(key)}, {value})" if mlp else f"state[{q(key)}] = {value}"

        if lv.period is None:
            if lv.root:
                lines.append(f"p.copy_({new.text})")
                return
            target = self.names.take(f"{name}_new")
            lines.append(f"{target} = {new.text}")
            lines.append(put(name, target))
            self.new[name] = target
            return
        lines.append(f"{prev.text} = {new.text}")
        lines.append(put(f"{name}.running", prev.text))
        if lv.root:
            lines.append(f"if {self.period_end(lv)}:  # a full period: the parameters take the running state")
            lines.append(f"    p.copy_({prev.text})")
            return
        target = self.names.take(f"{name}_new")
        lines.append(f"{target} = {prev.text} if {self.period_end(lv)} else {self.pre[name]}  "
                     "# reads see the state from the start of the period")
        lines.append(put(name, target))
        self.new[name] = target

    # ---- the state before the first step ----
    def init_state(self) -> list[str]:
        self.from_group = True
        lines = ['state["step"] = 0']
        keys_out = self.state_keys = ["step"]
        for lv in self.plan.levels:
            keys = [lv.name] if not lv.root else []
            if lv.period is not None:
                keys.append(f"{lv.name}.running")
            for key in keys:
                keys_out.append(key if lv.kind != "mlp" else f"{key}.W<i> (MLP weights)")
                if lv.root:
                    lines.append(f"state[{q(key)}] = p.detach().clone(memory_format=torch.preserve_format)")
                elif lv.kind == "mlp":
                    hidden = "4" if lv.mlp["hidden"] is None else self.code(lv.mlp["hidden"]).text
                    depth = self.code(lv.mlp["depth"]).text
                    lines.append(f"rt.store_mlp(state, {q(key)}, rt.mlp_init(p, {hidden}, {depth}, {q(lv.init)}))")
                else:
                    fn = "torch.ones_like" if lv.init == "identity" else "torch.zeros_like"
                    lines.append(f"state[{q(key)}] = {fn}(p, memory_format=torch.preserve_format)")
            for a in RULES[lv.rule].aux if lv.rule else ():
                keys_out.append(f"{lv.name}.{a}")
                lines.append(f"state[{q(lv.name + '.' + a)}] = torch.zeros_like(p, memory_format=torch.preserve_format)")
        self.from_group = False
        return lines

    # ---- one parameter's step ----
    def param_lines(self) -> list[str]:
        plan = self.plan
        lines = [
            "grad = p.grad",
            "if grad.is_sparse:",
            f'    raise RuntimeError("{plan.name} does not support sparse gradients")',
            "state = self.state[p]",
            "if not state:",
            "    self._init_state(p, group)",
            'state["step"] += 1',
            "step = state[\"step\"]  # this parameter's step count, from 1",
            "param = p  # its values before this step",
        ]
        for lv in plan.levels:
            if lv.root:
                continue
            if lv.kind == "mlp":
                lines.append(f"{self.pre[lv.name]} = rt.load_mlp(state, {q(lv.name)})  # weights {lv.name}.W0, ...")
            else:
                lines.append(f"{self.pre[lv.name]} = state[{q(lv.name)}]")
        for let in plan.lets:
            lines.append(f"{self.let[let.name]} = {self.node_code(let).text}  # let {let.name} = {let.source}")
        for name in plan.grad_order:
            lv = plan.level(name)
            if lv.needs_grad:
                self.objective_grad(lv, lines)
        for lv in plan.levels:
            self.update(lv, lines)
        return lines


class _TorchText:
    """`ops.torch.fn(x)` in a rule's step: the text `torch.fn(x)`."""

    def __getattr__(self, fn: str):
        return lambda *xs: Code(f"torch.{fn}({', '.join(x.text for x in xs)})")


class _CodeOps:
    """A rule's step operations (nlc.rules.base.Ops) as text of the generated step: the functions
    nlc.optim.runtime.PARAMETERS runs in the reference optimizer."""

    torch = _TorchText()

    def __init__(self, names: NameAllocator, level: str, lines: list[str]):
        self.names, self.level, self.lines = names, level, lines

    def sqrt(self, x: Code) -> Code:
        return Code(f"torch.sqrt({x.text})")

    def orthogonalize(self, x: Code, steps: Code) -> Code:
        return Code(f"rt.orthogonalize({x.text}, {steps.text})")

    def delta_decay(self, m: Code, g: Code, beta: Code) -> Code:
        return Code(f"rt.delta_product({m.text}, {g.text}, {beta.text})")

    def bias_correction(self, beta: Code, n: Code) -> Code:
        return Code(f"rt.bias_correction({beta.text}, {n.text})")

    def key_decay(self, W, retain, lr, key):
        raise AssertionError("the optimizer plan refuses rules that read a layer input (E511)")  # pragma: no cover

    def keep(self, name: str, value: Code, why: str = "") -> Code:
        """A stored value gets a local named after the level and the buffer (`m_momentum`)."""
        local = self.names.take(f"{self.level}_{name}")
        self.lines.append(f"{local} = {value.text}" + (f"  # {why}" if why else ""))
        return Code(local)


def emit_optimizer(plan: OptimizerPlan) -> OptimizerCode:
    """Return the pieces of the generated optimizer class."""
    em = _Emitter(plan)
    init_lines = em.init_state()
    param_lines = em.param_lines()
    group_lines = [f"{em.hyper[h.name]} = group[{q(h.name)}]" for h in plan.hypers if h.name in em.used_hypers]
    signature = ["self", "params", *(f"{h.name}={number(h.default).text}" for h in plan.hypers), "**unknown"]
    defaults = [f"{q(h.name)}: {h.name}" for h in plan.hypers]
    if len(", ".join(signature)) > 80:  # one argument a line
        signature = ["", *(f"    {a}," for a in signature), ""]
    else:
        signature = [", ".join(signature)]
    defaults = ["{" + ", ".join(defaults) + "}"] if len(", ".join(defaults)) < 70 else \
        ["{", *(f"    {d}," for d in defaults), "}"]
    width = max(len(lv.name) for lv in plan.levels)
    doc = []
    for lv in plan.levels:
        doc += _pack(lv.parts, 84, f"{lv.name:<{width}}  ", " " * (width + 2))
    keys = textwrap.wrap("State per parameter (self.state[p]): " + ", ".join(em.state_keys) + ".", 86,
                         break_on_hyphens=False)
    return OptimizerCode(plan, _class_name(plan.name), signature, defaults, init_lines, group_lines, param_lines,
                         doc, keys,
                         em.uses_math, em.uses_F)


def _kind(node: Node) -> str:
    return "py" if node.py else "tensor"


def _class_name(name: str) -> str:
    return camel(name, "Optimizer")


def generate_optimizer(program: ir.Program, params: dict, facts=None) -> str:
    """Return the Python source of the torch.optim.Optimizer for a checked optimizer program.

    `params` are the program's parameter values (`nlc.passes.pipeline.check_ir(...).params`);
    they become the defaults of the constructor's keyword arguments. `facts` are the checker's
    (`Checked.facts`; without them the plan runs the checks it relies on again).
    """
    plan = plan_optimizer(program, params, facts)
    code = emit_optimizer(plan)
    spec_path = comment_text(display_path(program.path))
    text = ENV.get_template("optimizer.py.j2").render(
        version=__version__,
        spec_path=spec_path,
        spec_hash=spec_hash(program),
        params=", ".join(f"{k}={number(v).text}" for k, v in sorted(params.items())),
        name=plan.name,
        code=code,
        hypers=_tuple(h.name for h in plan.hypers),
        learning_rates=_tuple(h.name for h in plan.hypers if h.learning_rate),
        whole_numbers=_tuple(h.name for h in plan.hypers if h.whole),
        spec_name=q(plan.name),
        spec_hash_repr=q(spec_hash(program)),
        spec_path_repr=q(spec_path),
    )
    audit_source(text, plan.name)
    return text


def _pack(parts, width: int, first: str, indent: str) -> list[str]:
    """Lay comma-separated parts out in lines of at most `width` characters, never splitting a part."""
    lines, line = [], first
    for i, part in enumerate(parts):
        text = part + ("," if i < len(parts) - 1 else "")
        if line.strip() and len(line) + 1 + len(text) > width:
            lines.append(line)
            line = indent + text
        else:
            line = line + ("" if line == first else " ") + text
    return lines + [line]


def _tuple(names) -> str:
    items = [q(n) for n in names]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
