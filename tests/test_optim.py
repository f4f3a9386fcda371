"""Optimizer specs compiled to torch.optim.Optimizer (issue 5; semantics in nlc/optim/__init__.py).

Equivalence with torch.optim (SGD, Adam, AdamW) step for step in float64; closed-form
checks against hand-written loops (delta momentum, M3's Algorithm 1, Muon, DGD,
DMGD); real-optimizer behaviour (state_dict round trip, parameter groups, no host
syncs, CUDA); errors. torch.compile is in test_optim_compile.py (marked `compile`).
"""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import nlc
from nlc.codegen.optimizer import generate_optimizer
from nlc.optim import build_optimizer, optimizer_class
from nlc.optim import runtime as rt
from nlc.passes.pipeline import check_ir
from nlc.runtime.newton_schulz import newton_schulz

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OPTIMIZERS = ["sgd_momentum", "adam", "adamw", "delta_momentum", "decayed_gd", "dmgd", "muon", "m3"]
STEPS = 50
TOL = 1e-6

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.randn(32, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def spec(name: str) -> Path:
    return EXAMPLES / f"{name}.nl"


def mlp(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def loss_of(model, dtype=torch.float64) -> torch.Tensor:
    return ((model(X.to(dtype)) - Y.to(dtype)) ** 2).mean()


def train(make, steps: int = STEPS, model=None):
    """Train a fresh small MLP with the optimizer `make(params)`; return (flat parameters, losses)."""
    model = mlp() if model is None else model
    opt = make(model.parameters()) if callable(make) else make
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.cat([p.detach().flatten() for p in model.parameters()]), losses


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---- torch.optim equivalence ----------------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(lr=0.2, momentum=0.5, dampening=0.5, nesterov=False),
])
def test_sgd_momentum_matches_torch(kw):
    ours = dict(kw, nesterov=int(kw.get("nesterov", False)))
    a, _ = train(lambda ps: torch.optim.SGD(ps, **kw))
    b, _ = train(lambda ps: build_optimizer(spec("sgd_momentum"), ps, **ours))
    assert max_diff(a, b) < TOL


@pytest.mark.parametrize("kw", [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    dict(lr=0.005, betas=(0.95, 0.9), eps=1e-3),
])
@pytest.mark.parametrize("name, torch_cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw_match_torch(name, torch_cls, kw):
    ours = dict(kw)
    ours["beta1"], ours["beta2"] = ours.pop("betas", (0.9, 0.999))
    if torch_cls is torch.optim.AdamW:
        kw = dict(kw, weight_decay=kw.get("weight_decay", 0.01))  # AdamW's default decay, as adamw.nl's
    a, _ = train(lambda ps: torch_cls(ps, **kw))
    b, _ = train(lambda ps: build_optimizer(spec(name), ps, **ours))
    assert max_diff(a, b) < TOL


def groups(model, lrs):
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    return [dict(params=list(layer.parameters()), **extra) for layer, extra in zip(layers, lrs)]


def test_parameter_groups_with_their_own_hyperparameters():
    torch_groups = [dict(lr=0.05), dict(lr=0.001, betas=(0.5, 0.9))]
    nlc_groups = [dict(lr=0.05), dict(lr=0.001, beta1=0.5, beta2=0.9)]
    m1, m2 = mlp(), mlp()
    a, _ = train(torch.optim.Adam(groups(m1, torch_groups), lr=0.01), model=m1)
    opt = build_optimizer(spec("adam"), groups(m2, nlc_groups), lr=0.01)
    b, _ = train(opt, model=m2)
    assert max_diff(a, b) < TOL
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.001]
    assert opt.param_groups[0]["beta1"] == 0.9 and opt.param_groups[1]["beta1"] == 0.5
    # a group added later gets the defaults, and they are checked
    extra = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({"params": [extra], "eps": 1e-6})
    assert opt.param_groups[-1]["lr"] == 0.01 and opt.param_groups[-1]["eps"] == 1e-6


ADAM_RULE = """\
optimizer adam_rule(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-08) {
  level weights {
    state params
    context grad(loss)
    objective dot
    update adam(beta1 = beta1, beta2 = beta2, eps = eps)
    lr lr
  }
}
"""


def test_adam_update_rule_on_the_parameters_matches_torch():
    a, _ = train(lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95)))
    b, _ = train(lambda ps: build_optimizer(nlc.loads(ADAM_RULE), ps, lr=0.01, beta1=0.8, beta2=0.95))
    assert max_diff(a, b) < TOL


# ---- closed forms: hand-written loops ---------------------------------------------------------


def quadratic(*shapes, seed=3, scale=1.0):
    """Parameters and a loss 1/2 sum ||A_i W_i - B_i||^2 whose gradients depend on the parameters."""
    gen = torch.Generator().manual_seed(seed)
    ps, data = [], []
    for s in shapes:
        ps.append(torch.nn.Parameter(scale * torch.randn(s, generator=gen, dtype=torch.float64)))
        rows = s[0]
        data.append((torch.randn(rows, rows, generator=gen, dtype=torch.float64) / rows ** 0.5,
                     scale * torch.randn(s, generator=gen, dtype=torch.float64)))

    def loss():
        return sum(0.5 * ((A @ W.reshape(W.shape[0], -1) - B.reshape(W.shape[0], -1)) ** 2).sum()
                   for W, (A, B) in zip(ps, data))

    def grads(values):
        vs = [v.clone().requires_grad_() for v in values]
        total = sum(0.5 * ((A @ W.reshape(W.shape[0], -1) - B.reshape(W.shape[0], -1)) ** 2).sum()
                    for W, (A, B) in zip(vs, data))
        return torch.autograd.grad(total, vs)

    return ps, loss, grads


def run_spec(opt, ps, loss, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    return [p.detach().clone() for p in ps]


def test_delta_momentum_closed_form():
    """m <- m (beta I - g^T g) - lr g; W <- (1 - lr wd) W + m (NL eqs. 48-49), vectors entry by entry."""
    lr, beta, wd = 0.05, 0.9, 0.01
    ps, loss, grads = quadratic((5, 3), (3, 5), (4,), scale=0.2)  # |g| < 1: beta I - g^T g stays stable
    start = [p.detach().clone() for p in ps]
    got = run_spec(build_optimizer(spec("delta_momentum"), ps, lr=lr, beta=beta, weight_decay=wd), ps, loss, 12)
    W, m = [s.clone() for s in start], [torch.zeros_like(s) for s in start]
    for _ in range(12):
        gs = grads(W)
        for i, g in enumerate(gs):
            if g.dim() == 2:
                m[i] = m[i] @ (beta * torch.eye(g.shape[1], dtype=g.dtype) - g.T @ g) - lr * g
            else:
                m[i] = (beta - g * g) * m[i] - lr * g
            W[i] = (1 - lr * wd) * W[i] + m[i]
    for a, b in zip(got, W):
        assert torch.isfinite(a).all() and max_diff(a, b) < 1e-10


def test_m3_matches_algorithm_1():
    """NL Algorithm 1, written out: the slow momentum takes the previous chunk's gradients every f steps."""
    hp = dict(lr=0.01, beta1=0.9, beta2=0.999, beta3=0.5, alpha=0.7, eps=1e-8, f=3, ns_steps=5)
    ps, loss, grads = quadratic((4, 6), (6, 4), (5,))
    start = [p.detach().clone() for p in ps]
    steps = 3 * hp["f"] + 1  # three slow steps, and one step into the fourth chunk
    got = run_spec(build_optimizer(spec("m3"), ps, **hp), ps, loss, steps)
    W = [s.clone() for s in start]
    M1, M2, V = ([torch.zeros_like(s) for s in start] for _ in range(3))
    pending = []
    for t in range(1, steps + 1):
        if t > 1 and (t - 1) % hp["f"] == 0:  # line 3: the start of a new chunk k
            M2 = [m + hp["beta3"] * sum(gs[i] for gs in pending) for i, m in enumerate(M2)]
            pending = []
        O2 = [newton_schulz(m, 5) if m.dim() == 2 else m for m in M2]  # line 4
        gs = grads(W)  # line 6
        pending.append(gs)
        for i, g in enumerate(gs):
            M1[i] = M1[i] + hp["beta1"] * g  # line 7
            V[i] = V[i] + hp["beta2"] * g * g  # line 8
            O1 = newton_schulz(M1[i], 5) if g.dim() == 2 else M1[i]  # line 9
            W[i] = W[i] - hp["lr"] * (O1 + hp["alpha"] * O2[i]) / (V[i].sqrt() + hp["eps"])  # line 10
    for a, b in zip(got, W):
        assert max_diff(a, b) < 1e-10


def test_muon_is_momentum_then_newton_schulz_with_a_fallback_for_vectors():
    lr, mu, wd = 0.02, 0.95, 0.1
    ps, loss, grads = quadratic((4, 6), (3, 2, 2, 2), (5,))  # a matrix, a conv kernel, a bias
    start = [p.detach().clone() for p in ps]
    got = run_spec(build_optimizer(spec("muon"), ps, lr=lr, momentum=mu, weight_decay=wd), ps, loss, 8)
    W, m = [s.clone() for s in start], [torch.zeros_like(s) for s in start]
    for _ in range(8):
        for i, g in enumerate(grads(W)):
            m[i] = mu * m[i] + g
            if g.dim() >= 2:  # matrices (a kernel as [out, in * kh * kw]) are orthogonalised
                u = newton_schulz(m[i].reshape(g.shape[0], -1), 5).reshape(g.shape)
            else:  # the documented fallback: vectors move by plain momentum
                u = m[i]
            W[i] = (1 - lr * wd) * W[i] - lr * u
    for a, b in zip(got, W):
        assert max_diff(a, b) < 1e-10
    # the orthogonalised update of a matrix has singular values near 1 (Muon's quintic iteration: ~0.7-1.2)
    s = torch.linalg.svdvals(rt.orthogonalize(torch.randn(6, 10, dtype=torch.float64)))
    assert s.min() > 0.5 and s.max() < 1.3


def test_decayed_gd_is_a_uniform_decay_and_reduces_the_loss():
    lr = 0.3
    ps, loss, grads = quadratic((4, 3))
    start = ps[0].detach().clone()
    got = run_spec(build_optimizer(spec("decayed_gd"), ps, lr=lr), ps, loss, 1)[0]
    eta = lr / (1 + lr)
    assert max_diff(got, (1 - eta) * start - eta * grads([start])[0]) < 1e-12
    _, losses = train(lambda p: build_optimizer(spec("decayed_gd"), p, lr=0.1), steps=60)
    assert losses[-1] < 0.8 * losses[0]


def test_dgd_in_an_optimizer_is_refused_it_would_lack_the_layer_inputs():
    text = ("optimizer o(lr = 0.01) {\n  level weights {\n    state params\n    init zeros\n"
            "    context grad(loss)\n    objective dot\n    update dgd\n    lr lr\n    period 1 steps\n  }\n}\n")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text)
    assert e.value.codes == ["E511"] and "x_t" in str(e.value) and "decayed_gd" in str(e.value)


def test_dmgd_with_a_frozen_identity_memory_is_momentum_sgd():
    a, _ = train(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9))
    b, _ = train(lambda ps: build_optimizer(spec("dmgd"), ps, lr=0.05, momentum=0.9, inner_lr=0))
    assert max_diff(a, b) < TOL


def test_dmgd_learns_its_memory_and_reduces_the_loss():
    model = mlp()
    opt = build_optimizer(spec("dmgd"), model.parameters(), lr=0.05, inner_lr=0.01)
    _, losses = train(opt, steps=60, model=model)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0]
    w = opt.state[model[0].weight]
    assert w["deep.W1"].abs().max() > 0  # the MLP memory moved away from the identity


def test_mlp_memory_reads_like_the_model_runtime():
    from nlc.runtime import memory

    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(1, 5, generator=gen, dtype=torch.float64),
               torch.randn(5, 1, generator=gen, dtype=torch.float64)]
    k = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    state = {f"W{i}": w.unsqueeze(0) for i, w in enumerate(weights)}  # batch of one memory
    want = memory.read("mlp", state, k.reshape(1, -1, 1), residual=True).reshape(k.shape)
    assert max_diff(rt.mlp_read(weights, k, residual=True), want) < 1e-12
    # and its gradients are those of autograd, for the sum over entries
    v = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    ws = [w.clone().requires_grad_() for w in weights]
    auto = torch.autograd.grad((0.5 * (rt.mlp_read(ws, k) - v) ** 2).sum(), ws)
    for a, b in zip(rt.mlp_grads(weights, k, v, "l2"), auto):
        assert max_diff(a, b) < 1e-12


SCHEDULED = """\
optimizer scheduled(lr = 0.1, every = 2) {
  level weights {
    state params
    context grad(loss)
    objective dot
    update gd
    lr lr / sqrt(step)
    period every steps
  }
}
"""


def test_gates_over_step_and_a_periodic_root():
    """`lr lr / sqrt(step)`; period 2 steps: p moves every 2 steps by the rule run over both gradients,
    each taken at the period-start parameters (frequency is exact)."""
    ps, loss, grads = quadratic((3, 2))
    start = ps[0].detach().clone()
    got = run_spec(build_optimizer(nlc.loads(SCHEDULED), ps), ps, loss, 5)[0]
    visible, running = start.clone(), start.clone()
    for t in range(1, 6):
        running = running - 0.1 / math.sqrt(t) * grads([visible])[0]
        if t % 2 == 0:
            visible = running.clone()
    assert max_diff(got, visible) < 1e-12


CHAIN = """\
optimizer chain(lr = 0.05, beta = 0.9) {
  level m {
    state like(param)
    context grad(loss)
    objective l2
    update momentum(beta = beta)
    lr 0.5
    retain 0.99
  }

  level n {
    state like(param)
    init identity
    context grad(m)
    objective huber(delta = 0.5)
    update gd
    lr 0.1
  }

  level weights {
    state params
    context grad(loss)
    update m * n
    lr lr * param * param + lr
  }
}
"""


def test_levels_that_learn_gradients_of_levels_elementwise_rates_and_rules():
    ps, loss, grads = quadratic((3, 4))
    start = ps[0].detach().clone()
    got = run_spec(build_optimizer(nlc.loads(CHAIN), ps), ps, loss, 6)[0]
    W, m, S, n = start.clone(), torch.zeros_like(start), torch.zeros_like(start), torch.ones_like(start)
    for _ in range(6):
        g = grads([W])[0]
        Gm = m - g  # l2, key 1, value g
        Gn = (n - Gm).clamp(-0.5, 0.5)  # huber, value: m's objective gradient
        S = 0.9 * S - 0.5 * Gm
        m = 0.99 * m + S
        n = n - 0.1 * Gn
        W = W - (0.05 * W * W + 0.05) * (m * n)
    assert max_diff(got, W) < 1e-12


# ---- real optimizers -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, hyper", [("m3", dict(lr=0.002, f=3)), ("dmgd", dict(inner_lr=0.01)),
                                         ("adamw", {}), ("delta_momentum", {})])
def test_state_dict_round_trip_resumes_identically(name, hyper):
    model = mlp()
    opt = build_optimizer(spec(name), model.parameters(), **hyper)
    train(opt, steps=7, model=model)  # mid-period for f = 3
    saved_model = copy.deepcopy(model.state_dict())
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    a, _ = train(opt, steps=8, model=model)

    model2 = mlp()
    model2.load_state_dict(saved_model)
    opt2 = build_optimizer(spec(name), model2.parameters(), **hyper)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    b, _ = train(opt2, steps=8, model=model2)
    assert torch.equal(a, b)
    st = opt2.state[model2[0].weight]
    assert st["step"] == 15 and all(isinstance(v, torch.Tensor) for k, v in st.items() if k != "step")


def test_zero_grad_and_parameters_without_gradients():
    model = mlp()
    frozen = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = build_optimizer(spec("adam"), [*model.parameters(), frozen])
    loss_of(model).backward()
    opt.step()
    assert frozen.grad is None and len(opt.state[frozen]) == 0 and torch.equal(frozen, torch.ones(3).double())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert opt.state[model[0].weight]["step"] == 1


def test_closure_is_called_and_its_loss_returned():
    model = mlp()
    opt = build_optimizer(spec("sgd_momentum"), model.parameters())

    def closure():
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))


class _NoHostSync(TorchFunctionMode):
    FORBIDDEN = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
                 torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FORBIDDEN:
            raise AssertionError(f"step() synchronises with the host: {func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_never_reads_tensors_on_the_host(name):
    model = mlp()
    opt = build_optimizer(spec(name), model.parameters(), **({"f": 2} if name == "m3" else {}))
    for _ in range(3):
        opt.zero_grad()
        loss_of(model).backward()
        with _NoHostSync():
            opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_cuda_matches_cpu(name):
    hyper = {"f": 2} if name == "m3" else {}
    a, _ = train(lambda ps: build_optimizer(spec(name), ps, **hyper), steps=5)
    model = mlp().cuda()
    opt = build_optimizer(spec(name), model.parameters(), **hyper)
    for _ in range(5):
        opt.zero_grad()
        ((model(X.cuda()) - Y.cuda()) ** 2).mean().backward()
        opt.step()
    b = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()
    assert max_diff(a, b) < 1e-8


# ---- generated code ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_generated_source_is_deterministic_and_carries_its_header(name):
    prog = nlc.load(spec(name))
    checked = check_ir(prog, {})
    src = generate_optimizer(checked.program, checked.params)
    again = check_ir(nlc.load(spec(name)), {})
    assert generate_optimizer(again.program, again.params) == src
    assert src.startswith(f"# Generated by nlc {nlc.__version__} from ")
    assert f"examples/{name}.nl" in src.splitlines()[0]
    from nlc.codegen import spec_hash

    assert f"# spec sha256: {spec_hash(prog)}" in src
    compile(src, f"{name}.py", "exec")
    cls = optimizer_class(spec(name))
    assert issubclass(cls, torch.optim.Optimizer) and cls.nlc_source == src


def test_constructor_keywords_are_the_spec_parameters_with_their_defaults():
    import inspect

    cls = optimizer_class(spec("adam"), lr=0.003)
    sig = inspect.signature(cls.__init__)
    assert {k: v.default for k, v in sig.parameters.items() if k not in ("self", "params", "unknown")} == \
        {"lr": 0.003, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "weight_decay": 0}
    opt = cls([torch.nn.Parameter(torch.zeros(2))], lr=0.1, beta1=0.5)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["beta1"] == 0.5


# ---- errors ----------------------------------------------------------------------------------------


def params():
    return [torch.nn.Parameter(torch.zeros(2, 2))]


def test_unknown_hyperparameter_names():
    with pytest.raises(nlc.SpecError) as e:
        build_optimizer(spec("adam"), params(), lrr=0.1)
    assert e.value.codes == ["E208"] and "did you mean `lr`?" in str(e.value)
    cls = optimizer_class(spec("adam"))
    with pytest.raises(ValueError, match=r"unknown hyper-parameter `betas`.*did you mean `beta[12]`"):
        cls(params(), betas=(0.9, 0.99))
    with pytest.raises(ValueError, match=r"unknown hyper-parameter `weight_decy`.*did you mean `weight_decay`"):
        cls([{"params": params(), "weight_decy": 0.1}])


def test_negative_learning_rates():
    with pytest.raises(ValueError, match=r"invalid learning rate `lr` = -0.1"):
        build_optimizer(spec("sgd_momentum"), params(), lr=-0.1)
    with pytest.raises(ValueError, match=r"invalid learning rate `inner_lr`"):
        build_optimizer(spec("dmgd"), [{"params": params(), "inner_lr": -1}])
    with pytest.raises(ValueError, match=r"`f` is a period or a count"):
        build_optimizer(spec("m3"), [{"params": params(), "f": 2.5}])
    with pytest.raises(ValueError, match=r"`eps` must be a finite number"):
        build_optimizer(spec("adam"), [{"params": params(), "eps": "small"}])


def test_a_model_spec_is_not_an_optimizer_and_vice_versa():
    with pytest.raises(nlc.SpecError) as e:
        build_optimizer(EXAMPLES / "titans_lmm.nl", params())
    assert e.value.codes == ["E510"] and "`titans_lmm` is a model, not an optimizer" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        nlc.build(spec("adam"))
    assert e.value.codes == ["E501"]


@pytest.mark.parametrize("body, code, text", [
    ("let s = learned(0.1)\n  level weights {\n    state params\n    context grad(loss)\n    update gd\n    lr s\n  }",
     "E511", "`learned` cannot be used in an optimizer"),
    ("level m {\n    state vector(1)\n    context (1, mean(grad))\n  }\n  level weights {\n    state params\n"
     "    context grad(loss)\n    update grad * m\n  }", "E511", "not `vector`"),
    ("level m {\n    state like(param)\n    init learned\n    context grad(loss)\n  }\n  level weights {\n"
     "    state params\n    context grad(loss)\n    update m\n  }", "E511", "`learned` initial state"),
    ("level m {\n    state mlp(1, 4)\n    init identity\n    context (grad, grad)\n    update momentum\n  }\n"
     "  level weights {\n    state params\n    context grad(loss)\n    update m(grad)\n  }", "E511",
     "learns with `gd`"),
])
def test_what_the_optimizer_back_end_cannot_compile(body, code, text):
    """`nlc check` (nlc.passes.optimizer) reports what build_optimizer would reject."""
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(f"optimizer bad(lr = 0.1) {{\n  {body}\n}}\n")
    assert e.value.codes[0] == code and text in str(e.value)


def test_a_parameter_named_like_a_python_keyword():
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads("optimizer bad(lambda = 0.1) {\n  level weights {\n    state params\n"
                  "    context grad(loss)\n    update gd\n    lr lambda\n  }\n}\n")
    assert e.value.codes == ["E512"]


# ---- differential: generated code == the reference optimizer ----------------------------------------

from nlc.optim.reference import reference_optimizer  # noqa: E402


def compare_with_reference(prog_or_path, steps=6, **hyper):
    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    m2 = copy.deepcopy(m1)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    opts = [build_optimizer(prog_or_path, m1.parameters(), **hyper),
            reference_optimizer(prog_or_path, m2.parameters(), **hyper)]
    for _ in range(steps):
        for m, opt in zip((m1, m2), opts):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_examples_match_the_reference_optimizer(name):
    compare_with_reference(spec(name), steps=7, **({"f": 3, "lr": 1e-3} if name == "m3" else {}))


RULES = ["gd", "momentum", "momentum(beta = 0.5)", "muon(steps = 3)", "delta_momentum(beta = b)", "adam",
         "adam(beta1 = b, eps = 0.001)"]
OBJECTIVES = ["dot", "l2", "huber(delta = 0.05)", "lp(p = 3)"]


def random_spec(seed: int) -> str:
    """A random optimizer over the forms the back end compiles (names start with `_`: unused is fine)."""
    import random

    r = random.Random(seed)
    names = [f"_m{i}" for i in range(r.randint(0, 3))]
    lets = ["let _g = grad + 0.01 * param"] if r.random() < 0.5 else []
    body, mlps = [], set()
    for i, name in enumerate(names):
        earlier = [n for n in names[:i] if n not in mlps]  # levels that can be read or learned from as tensors
        gates = ["0.1", "b", "1 - b", "lr / sqrt(step)", "0.1 * sigmoid(grad)", "relu(2 - step) + 0.5",
                 "0.01 * abs(param)", *(f"0.1 * {n}" for n in earlier)]
        mlp = r.random() < 0.15
        if mlp:  # an MLP memory's gates are numbers
            mlps.add(name)
            gates = ["0.1", "b", "1 - b", "lr / sqrt(step)", "relu(2 - step) + 0.5"]
        if mlp:
            ctx = r.choice(["(grad, grad)", "(grad, 2 * grad)", *(f"({n}, grad)" for n in earlier)])
            fields = [f"state mlp(1, {r.choice([2, 3])}, depth = {r.choice([1, 2, 3])})", "init identity",
                      f"context {ctx}", f"objective {r.choice(OBJECTIVES)}", "update gd"]
        else:
            ctx = r.choice(["grad(loss)", "(1, grad)", "(grad, grad)", "(1, grad * grad)",
                            *(f"grad({n})" for n in earlier), *(["(1, _g)"] if lets else [])])
            fields = ["state like(param)", f"init {r.choice(['zeros', 'identity'])}", f"context {ctx}",
                      f"objective {r.choice(OBJECTIVES)}", f"update {r.choice(RULES + earlier)}"]
        if r.random() < 0.7:
            fields.append(f"lr {r.choice(gates)}")
        debias = False
        if r.random() < 0.5:
            const = r.random() < 0.6 and not mlp
            fields.append(f"retain {r.choice(['b', '0.9', '1 - b']) if const else r.choice(gates)}")
            debias = const and r.random() < 0.5
        fields.append(f"period {r.choice([1, 1, 2, 4])} steps")
        if debias:
            fields.append("debias")
        body.append(f"level {name} {{\n" + "".join(f"    {f}\n" for f in fields) + "  }")
    reads = [n for n in names if n not in mlps]
    updates = RULES + reads + [f"{n}(grad)" for n in sorted(mlps)]
    if reads:
        updates += [f"{reads[0]} / (sqrt(abs({reads[-1]})) + 0.001)", f"newton_schulz({reads[-1]}, 3)",
                    f"{reads[0]} * grad", f"mean({reads[0]}) * grad + l2norm({reads[-1]})"]
    update = r.choice(updates)
    # an objective shapes a rule's step only; a level or an expression gives the direction itself (E314)
    objective = [f"objective {r.choice(['dot', 'l2'])}"] if update in RULES else []
    root = ["state params", "context grad(loss)", *objective,
            f"update {update}", f"lr {r.choice(['lr', 'lr / sqrt(step)', 'lr * (1 + grad * grad)'])}"]
    if r.random() < 0.4:
        root.append("retain 1 - lr * 0.01")
    root.append(f"period {r.choice([1, 1, 1, 2])} steps")
    body.append("level weights {\n" + "".join(f"    {f}\n" for f in root) + "  }")
    return "optimizer random(lr = 0.05, b = 0.9) {\n" + "".join(f"  {x}\n" for x in lets) + "\n" + \
        "\n\n".join(f"  {b}" for b in body) + "\n}\n"


@pytest.mark.parametrize("seed", range(40))
def test_random_specs_match_the_reference_optimizer(seed):
    text = random_spec(seed)
    try:
        prog = nlc.loads(text)
    except nlc.SpecError as e:  # e.g. a slow level producing a fast one's update (E306)
        assert set(e.codes) <= {"E306"}, e
        pytest.skip(f"not a valid spec: {e.codes}")
    compare_with_reference(prog)
