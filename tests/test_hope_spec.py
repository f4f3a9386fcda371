"""examples/hope.nl: its switches (`normalise_values`, the caps `max_lr`, `max_forget`) and their defaults.

The default build must compute what the spec computed before the switches existed (OLD_HOPE, the
spec as of commit 9140bd4 "Hope: normalise self-generated values", comments dropped), and
`normalise_values = 0` must give the unnormalised values of the spec before that commit.
"""

from __future__ import annotations

import torch

import nlc
from tests.model_cases import ROOT

TINY = {"dim": 8, "layers": 1, "chunk": 2, "hidden": 8, "cms_hidden": 16}


def _memory(name: str, period: str) -> str:
    return (f"      level {name} {{\n        state mlp(dim, hidden, depth = 2, residual = true)\n"
            f"        init learned\n        context (k, {name}(v))\n        objective l2\n        update dgd\n"
            f"        lr eta\n        retain alpha\n        period {period} tokens\n        online\n      }}\n")


def _cms(name: str, period: str) -> str:
    return (f"      level {name} {{\n        state mlp(dim, cms_hidden, depth = 2, residual = true)\n"
            f"        init learned\n        context loss\n        objective dot\n        update gd\n"
            f"        lr cms_lr\n        period {period} steps\n        online\n      }}\n")


def old_hope(v: str) -> str:
    """hope.nl before the switches, with `let v = <v>`."""
    return ("model hope(dim = 64, layers = 2, chunk = 16, memory_chunk = chunk, hidden = dim, cms_hidden = 4 * dim,\n"
            "  cms_fast = 1, cms_slow = 4, max_lr = 0.1, max_forget = 0.01, cms_lr = 0.01) {\n"
            "  repeat layers {\n    block hope {\n      let h = rmsnorm(x)\n"
            "      let q = l2norm(conv(linear(h, dim), 4))\n      let k = l2norm(conv(m_k(h), 4))\n"
            f"      let v = {v}\n"
            "      let eta = sigmoid(linear(m_eta(h), 1)) * max_lr\n"
            "      let alpha = 1 - sigmoid(linear(m_alpha(h), 1)) * max_forget\n"
            + "".join(_memory(n, "chunk") for n in ("m_k", "m_v", "m_eta", "m_alpha"))
            + _memory("memory", "memory_chunk") + _cms("cms_1", "cms_slow") + _cms("cms_2", "cms_fast")
            + "      let o = memory(q)\n      out = cms_2(cms_1(o))\n    }\n  }\n}\n")


OLD_HOPE = old_hope("l2norm(m_v(h))")  # as of commit 9140bd4
UNNORMALISED_HOPE = old_hope("m_v(h)")  # before it


def _outputs(spec, **params):
    """Logits and every parameter's gradient (float64, a fixed seed and tokens) of one build."""
    torch.manual_seed(0)
    model = nlc.build(spec, **TINY, **params).to(torch.float64)
    return model


def _same(old_spec, new_spec, new_params: dict, same: bool):
    old, new = _outputs(old_spec), _outputs(new_spec, **new_params)
    new.load_state_dict(old.state_dict())  # the same parameter names: the switches add none
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    a, b = old(tokens), new(tokens)
    if not same:
        assert not torch.allclose(a, b, rtol=1e-6, atol=1e-9)
        return
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    a.square().mean().backward()
    b.square().mean().backward()
    for (n, p), (m, q) in zip(old.named_parameters(), new.named_parameters()):
        assert n == m
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=n)


def test_hope_defaults_compute_what_the_spec_computed_before_the_switches():
    assert nlc.print_program(nlc.loads(OLD_HOPE)) != nlc.print_program(nlc.load(ROOT / "examples/hope.nl"))
    # the step cap's default is 0.01 since issue #15 (docs/training.md "Step sizes"); the old spec's was 0.1
    _same(nlc.loads(OLD_HOPE), nlc.load(ROOT / "examples/hope.nl"), {"max_lr": 0.1}, same=True)


def test_hope_normalise_values_0_gives_the_unnormalised_values():
    hope = nlc.load(ROOT / "examples/hope.nl")
    _same(nlc.loads(UNNORMALISED_HOPE), hope, {"normalise_values": 0, "max_lr": 0.1}, same=True)
    _same(nlc.loads(OLD_HOPE), hope, {"normalise_values": 0, "max_lr": 0.1}, same=False)


def test_hope_paper_form_is_reachable_through_parameters():
    """The paper's form (no caps, raw values) builds, runs and differs from the defaults."""
    hope = nlc.load(ROOT / "examples/hope.nl")
    paper = {"max_lr": 1, "max_forget": 1, "normalise_values": 0}
    _same(nlc.loads(UNNORMALISED_HOPE), hope, paper, same=False)
    _same(nlc.loads(old_hope("m_v(h)").replace("max_lr = 0.1", "max_lr = 1")
                    .replace("max_forget = 0.01", "max_forget = 1")), hope, paper, same=True)
