"""Runtime kernels against their naive references (many shapes, float64)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlc.rules.dgd import chunk as dgd_chunk, naive as dgd_naive
from nlc.rules.gd import chunk as gd_chunk, naive as gd_naive
from nlc.rules.momentum import chunk as momentum_chunk, naive as momentum_naive
from nlc.runtime import chunkops, layers, memory
from nlc.runtime.newton_schulz import newton_schulz

F64 = torch.float64


def _problem(seed, B, C, i, o, elementwise):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    if elementwise:
        W, grads = {"m": r(B, o)}, {"m": (r(B, C, o), r(B, C, o))}
    else:
        W, grads = {"W": r(B, i, o)}, {"W": (r(B, C, i), r(B, C, o))}
    gates = [torch.rand(B, C, generator=g, dtype=F64) * 0.9 + 0.05 for _ in range(3)]
    return W, {k: torch.randn_like(v) for k, v in W.items()}, grads, gates


shapes = dict(seed=st.integers(0, 10_000), B=st.integers(1, 3), C=st.integers(1, 7), i=st.integers(1, 5),
              o=st.integers(1, 5), elementwise=st.booleans())


@settings(deadline=None)
@given(**shapes)
def test_gd_chunk_equals_per_token_loop(seed, B, C, i, o, elementwise):
    W, _, grads, (lr, retain, _) = _problem(seed, B, C, i, o, elementwise)
    a, b = gd_chunk.chunk(W, grads, lr, retain), gd_naive.reference(W, grads, lr, retain)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@settings(deadline=None)
@given(**shapes)
def test_momentum_chunk_equals_per_token_loop(seed, B, C, i, o, elementwise):
    W, S, grads, (lr, retain, beta) = _problem(seed, B, C, i, o, elementwise)
    (Wa, Sa), (Wb, Sb) = momentum_chunk.chunk(W, S, grads, lr, retain, beta), \
        momentum_naive.reference(W, S, grads, lr, retain, beta)
    for k in Wa:
        torch.testing.assert_close(Wa[k], Wb[k])
        torch.testing.assert_close(Sa[k], Sb[k])


@settings(deadline=None)
@given(**shapes)
def test_dgd_chunk_equals_per_token_loop(seed, B, C, i, o, elementwise):
    W, _, grads, (lr, retain, _) = _problem(seed, B, C, i, o, elementwise)
    a, b = dgd_chunk.chunk(W, grads, lr, retain), dgd_naive.reference(W, grads, lr, retain)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), C=st.integers(1, chunkops.SUBSTITUTION_MAX_ROWS),
       n=st.integers(1, 6), scale=st.sampled_from([0.01, 1.0, 3.0]))
def test_forward_substitution_equals_the_library_solve(seed, B, C, n, scale):
    """The compiled CPU path of dgd's solve (row by row) against LAPACK's, values and gradients; L's
    diagonal and upper part are garbage that neither may read."""
    g = torch.Generator().manual_seed(seed)
    L = (torch.randn(B, C, C, generator=g, dtype=F64) * scale).requires_grad_()
    rhs = torch.randn(B, C, n, generator=g, dtype=F64).requires_grad_()
    weights = torch.randn(B, C, n, generator=g, dtype=F64)
    outs = []
    for solve in (chunkops.forward_substitution, chunkops.unit_lower_solve):  # eager: the library solve
        R = solve(L, rhs)
        outs.append((R, *torch.autograd.grad((R * weights).sum(), (L, rhs), materialize_grads=True)))
    (R, dL, drhs), (R_ref, dL_ref, drhs_ref) = outs
    torch.testing.assert_close(R, R_ref)
    torch.testing.assert_close(drhs, drhs_ref)
    torch.testing.assert_close(dL.tril(-1), dL_ref.tril(-1))
    assert not dL.triu().any()  # the substitution never reads on or above the diagonal


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), T=st.integers(0, 5), o=st.integers(1, 6),
       h=st.integers(1, 6), tokens=st.booleans())
def test_times_transposed_is_the_matmul_with_its_gradients_twice(seed, B, T, o, h, tokens):
    """memory.times_transposed (a layer's gradient passed back, with W's gradient in W's layout) against
    torch.bmm(d, W^T): values, gradients, second derivatives (gradgradcheck) and torch.func.grad, [B, T, o] and [B, o]."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(B, T, o, generator=g, dtype=F64) if tokens else torch.randn(B, o, generator=g, dtype=F64)
    W = torch.randn(B, h, o, generator=g, dtype=F64)
    d.requires_grad_(), W.requires_grad_()
    weights = torch.randn(*d.shape[:-1], h, generator=g, dtype=F64)
    reference = memory._mm(d, W.transpose(1, 2))
    got = memory.times_transposed(d, W)
    torch.testing.assert_close(got, reference, rtol=1e-14, atol=1e-14)
    expected = torch.autograd.grad((reference * weights).sum(), (d, W), materialize_grads=True)
    by_func = torch.func.grad(lambda d, W: (memory.times_transposed(d, W) * weights).sum(), argnums=(0, 1))(d, W)
    for grads in (torch.autograd.grad((got * weights).sum(), (d, W), materialize_grads=True), by_func):
        for a, b in zip(grads, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(memory.times_transposed, (d, W))


def test_constant_gates_broadcast():
    W, _, grads, _ = _problem(0, 2, 4, 3, 3, False)
    a = gd_chunk.chunk(W, grads, 0.5, 1.0)
    b = gd_naive.reference(W, grads, torch.full((2, 4), 0.5, dtype=F64), torch.ones(2, 4, dtype=F64))
    torch.testing.assert_close(a["W"], b["W"])


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 1000), depth=st.integers(1, 3), residual=st.booleans(),
       objective=st.sampled_from([("l2",), ("dot",), ("huber", 0.3), ("lp", 3.0)]))
def test_closed_form_gradients_equal_autograd(seed, depth, residual, objective):
    torch.manual_seed(seed)
    B, T, d, h = 2, 3, 4, 5
    dims = [d] + [h] * (depth - 1) + [d]
    state = {f"W{i}": torch.randn(B, dims[i], dims[i + 1], dtype=F64, requires_grad=True) for i in range(depth)}
    if depth == 1:
        state = {"W": state["W0"]}
    kind = "linear" if depth == 1 else "mlp"
    k, v = torch.randn(B, T, d, dtype=F64), torch.randn(B, T, d, dtype=F64)
    factors = memory.grads(kind, state, k, v, objective, residual and kind == "mlp")
    for t in range(T):
        y = memory.read(kind, state, k[:, t], residual and kind == "mlp")
        auto = torch.autograd.grad(memory.objective_value(objective, y, v[:, t]).sum(), list(state.values()))
        for (name, (a, dd)), g in zip(factors.items(), auto):
            torch.testing.assert_close(torch.einsum("bi,bo->bio", a[:, t], dd[:, t]), g)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 1000), depth=st.integers(1, 3), residual=st.booleans())
def test_key_products_are_the_layer_products_and_dgd_reuses_them_exactly(seed, depth, residual):
    """grads(..., products=True) (and read_and_grads) hand dgd each weight's a_l W_l at the keys; dgd's
    closed form with them is dgd's closed form without them (which computes them itself) and the
    token-by-token loop."""
    torch.manual_seed(seed)
    B, C, d, h = 2, 4, 4, 5
    dims = [d] + [h] * (depth - 1) + [d]
    state = {f"W{i}": torch.randn(B, dims[i], dims[i + 1], dtype=F64) for i in range(depth)}
    kind = "mlp" if depth > 1 else "linear"
    if depth == 1:
        state = {"W": state["W0"]}
    residual = residual and kind == "mlp"
    k, v, q = (torch.randn(B, C, d, dtype=F64) for _ in range(3))
    factors, products = memory.grads(kind, state, k, v, ("l2",), residual, products=True)
    for name, (a, _) in factors.items():
        torch.testing.assert_close(products[name], torch.bmm(a, state[name]), rtol=0, atol=0)
    read, factors_2, products_2 = memory.read_and_grads(kind, state, q, k, v, ("l2",), residual, products=True)
    torch.testing.assert_close(read, memory.read(kind, state, q, residual))
    for name in factors:
        torch.testing.assert_close(products_2[name], products[name])
    lr, retain = torch.rand(B, C, dtype=F64) * 0.5, 1 - torch.rand(B, C, dtype=F64) * 0.1
    reused = dgd_chunk.chunk(state, factors, lr, retain, products=products)
    computed, loop = dgd_chunk.chunk(state, factors, lr, retain), dgd_naive.reference(state, factors, lr, retain)
    for name in state:
        torch.testing.assert_close(reused[name], computed[name], rtol=0, atol=0)
        torch.testing.assert_close(reused[name], loop[name])


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 1000), depth=st.integers(1, 3), residual=st.booleans(), products=st.booleans())
def test_grads_toward_the_own_read_are_a_read_then_grads(seed, depth, residual, products):
    """grads_toward_read(k, q) is grads(k, read(q)) in one pass: the same factors (and key products),
    and the same gradients through them to the state, the keys and the read's keys."""
    torch.manual_seed(seed)
    B, C, d, h = 2, 4, 4, 5
    dims = [d] + [h] * (depth - 1) + [d]
    kind = "mlp" if depth > 1 else "linear"
    state = {f"W{i}": torch.randn(B, dims[i], dims[i + 1], dtype=F64, requires_grad=True) for i in range(depth)}
    if depth == 1:
        state = {"W": state["W0"]}
    residual = residual and kind == "mlp"
    k, q = (torch.randn(B, C, d, dtype=F64, requires_grad=True) for _ in range(2))

    def flat(out):
        factors, prods = out if products else (out, {})
        return [t for a, dd in factors.values() for t in (a, dd)] + list(prods.values())

    fused = flat(memory.grads_toward_read(kind, state, k, q, ("l2",), residual, products=products))
    apart = flat(memory.grads(kind, state, k, memory.read(kind, state, q, residual), ("l2",), residual,
                              products=products))
    assert len(fused) == len(apart)
    for a, b in zip(fused, apart):
        torch.testing.assert_close(a, b)
    weights = [torch.randn_like(t) for t in fused]
    inputs = [*state.values(), k, q]
    g_fused = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, fused)), inputs)
    g_apart = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, apart)), inputs)
    for a, b in zip(g_fused, g_apart):
        torch.testing.assert_close(a, b)


def test_attention_in_pieces_equals_whole():
    torch.manual_seed(0)
    for kw in (dict(), dict(window=3), dict(segment=2, persistent=2), dict(window=2, memory=True),
               dict(window=4, segment=3, memory=True), dict(window=9)):
        att = layers.Attention(8, heads=2, **kw).double()
        x, m = torch.randn(2, 7, 8, dtype=F64), torch.randn(2, 7, 8, dtype=F64)
        mem = lambda s, e: m[:, s:e] if kw.get("memory") else None  # noqa: E731
        whole, _ = att(x, att.init_cache(2, x), mem(0, 7))
        cache, parts = att.init_cache(2, x), []
        for s, e in ((0, 1), (1, 4), (4, 7)):
            y, cache = att(x[:, s:e], cache, mem(s, e))
            parts.append(y)
            if att.capacity is not None:  # a window's cache: the same length from the first piece on
                lengths = {cache[k].shape[2] for k in (("k", "v", "mk", "mv") if att.memory else ("k", "v"))}
                assert lengths == {att.capacity}, (kw, lengths)
        torch.testing.assert_close(torch.cat(parts, 1), whole)


def test_a_windowed_cache_has_a_fixed_length_and_hides_its_empty_slots():
    """A window's cache has its full length from the start; the slots before the sequence's first token sit
    at negative positions and no query sees them, whatever they hold. (The first call leaves them out of
    its scores altogether; the second one, at position 1, has them in its keys, masked.)"""
    torch.manual_seed(0)
    att = layers.Attention(4, heads=1, window=5).double()
    x = torch.randn(1, 2, 4, dtype=F64)
    cache = att.init_cache(1, x)
    assert cache["k"].shape == (1, 1, 4, 4) and att.capacity == 4
    first, cache = att(x[:, :1], cache)
    torch.testing.assert_close(first, att.o(att.v(x[:, :1])))  # the first token sees only itself
    assert cache["k"].shape == (1, 1, 4, 4) and cache["pos"] == 1
    second, _ = att(x[:, 1:], cache)
    poisoned = {**cache, "k": cache["k"].clone(), "v": cache["v"].clone()}
    poisoned["k"][:, :, :3], poisoned["v"][:, :, :3] = 1e3, 1e3  # positions -3 .. -1
    torch.testing.assert_close(att(x[:, 1:], poisoned)[0], second)
    torch.testing.assert_close(torch.cat([first, second], 1), att(x, att.init_cache(1, x))[0])
    assert layers.Attention(4, window=6, segment=4).capacity == 3 and layers.Attention(4, segment=4).capacity is None


def test_causal_conv_in_pieces_equals_whole():
    conv = layers.CausalConv(5, 4).double()
    x = torch.randn(2, 9, 5, dtype=F64)
    whole, _ = conv(x, conv.init_cache(2, 5, x))
    cache, parts = conv.init_cache(2, 5, x), []
    for s, e in ((0, 2), (2, 3), (3, 9)):
        y, cache = conv(x[:, s:e], cache)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole)


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    for shape in ((6, 6), (4, 9), (9, 4), (3, 5, 7)):
        G = torch.randn(*shape, dtype=F64)
        X = newton_schulz(G, 5)
        s = torch.linalg.svdvals(X)
        assert X.shape == G.shape and s.min() > 0.5 and s.max() < 1.3, s
    v = torch.randn(5)
    assert torch.equal(newton_schulz(v), v)


def test_chunk_steps_compile_once_per_device_type_with_the_cpu_options():
    """compile_chunks' StepPerDevice: the C++ wrapper on the CPU only, a user's options win, other
    backends and modes untouched; the device is found inside a level's (nested) state dict."""
    from nlc.runtime.compile import CPU_INDUCTOR_OPTIONS, StepPerDevice, _device_type

    def step(W, x):
        return W["W0"] * x + 1

    assert StepPerDevice(step, {})._options("cpu") == {"options": CPU_INDUCTOR_OPTIONS}
    assert StepPerDevice(step, {})._options("cuda") == {}
    assert StepPerDevice(step, {"mode": "reduce-overhead"})._options("cpu") == {"mode": "reduce-overhead"}
    assert StepPerDevice(step, {"backend": "eager"})._options("cpu") == {"backend": "eager"}
    assert StepPerDevice(step, {"options": {"cpp_wrapper": False}})._options("cpu") == \
        {"options": {**CPU_INDUCTOR_OPTIONS, "cpp_wrapper": False}}
    assert _device_type(({"levels": {"W": {"W0": torch.zeros(1)}}}, True)) == "cpu"
    assert _device_type(({}, None, 3)) == ""
    compiled = StepPerDevice(step, {"backend": "eager"})
    W, x = {"W0": torch.randn(3)}, torch.randn(3)
    torch.testing.assert_close(compiled(W, x), step(W, x))
    assert list(compiled.compiled) == ["cpu"]
