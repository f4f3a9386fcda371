"""Tiny configurations of every example model, shared by the model tests."""

from pathlib import Path

import torch

import nlc

ROOT = Path(__file__).resolve().parent.parent
MODEL_EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.nl")
                        if nlc.load(p).is_model)


def tiny(program, **extra) -> dict:
    """Parameter overrides that make any example model tiny (dim 8, one layer (two for shared levels), small hidden)."""
    over = {"dim": 8}
    # a memory shared by the layers needs two of them (one writer: `shared` would change nothing, E425)
    layers = 2 if any(lv.shared for lv in nlc.ir.all_levels(program)) else 1
    for name, value in (("layers", layers), ("heads", 2), ("hidden", 16), ("cms_hidden", 16), ("ffn", 16),
                        ("n_persistent", 2)):
        if program.param(name) is not None:
            over[name] = value
    if program.param("cms_mid") is not None:  # a CMS learning in tokens: periods a short test sequence completes,
        c = extra.get("chunk", 2)  # multiples of the memories' chunk (nlc check: E307)
        over.update(chunk=c, cms_fast=2 * c, cms_mid=4 * c, cms_slow=8 * c)
    over.update({k: v for k, v in extra.items() if program.param(k) is not None or k in ("dim", "vocab")})
    return over


def pair(name: str, seed: int = 0, dtype=torch.float64, **extra):
    """(reference, compiled) models of an example with identical parameters."""
    program = nlc.load(ROOT / "examples" / name)
    over = tiny(program, **extra)
    torch.manual_seed(seed)
    ref = nlc.build(program, backend="reference", **over).to(dtype)
    gen = nlc.build(program, **over).to(dtype)
    gen.load_state_dict(ref.state_dict())
    return ref, gen


def assert_same_outputs_and_gradients(ref, gen, tokens, **tolerance) -> None:
    """Both back ends give the same logits and, after the same loss, the same gradient on every slow parameter."""
    a, b = ref(tokens), gen(tokens)
    torch.testing.assert_close(b, a, **tolerance)
    a.square().mean().backward()
    b.square().mean().backward()
    ga = {n: p.grad for n, p in ref.named_parameters()}
    gb = {n: p.grad for n, p in gen.named_parameters()}
    assert ga.keys() == gb.keys()
    for n in ga:
        assert (ga[n] is None) == (gb[n] is None), n
        if ga[n] is not None:
            torch.testing.assert_close(gb[n], ga[n], **tolerance, msg=lambda m: f"{n}: {m}")


def rejection(spec_text: str) -> str:
    """The rendered diagnostics of a spec that must not load (AssertionError if it loads)."""
    try:
        nlc.loads(spec_text)
    except nlc.SpecError as e:
        return e.render()
    raise AssertionError("the spec loaded")
