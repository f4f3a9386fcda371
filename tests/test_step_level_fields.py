"""`period N steps` levels: every field a spec states reaches the trainer, or `nlc check` refuses it.

The contract is nlc.runtime.steplevel.StepLevelSpec; the trainer is nlc.train.steplevels.StepLevels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nlc
from nlc.runtime.steplevel import StepLevelSpec
from nlc.train.steplevels import StepLevels

LEVEL = """\
model tiny(dim = 4, vocab = 8) {{
  block b {{
    let h = linear(x, dim)

    level cms {{
      state linear(dim, dim)
      init learned
      context {context}
      objective {objective}
      update {update}
      lr {lr}
      retain {retain}
      period 2 steps{flags}
    }}

    out = cms(h)
  }}
}}
"""


def spec(context="loss", objective="dot", update="momentum(beta = 0.3)", lr="0.1", retain="0.5", flags=""):
    return LEVEL.format(context=context, objective=objective, update=update, lr=lr, retain=retain, flags=flags)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_the_model_states_every_field_of_its_step_level(backend):
    model = nlc.build(nlc.loads(spec()), backend=backend)
    assert model.step_levels == {"blocks.0.cms_state": StepLevelSpec(
        level="cms", period=2, lr=0.1, rule="momentum", retain=0.5, beta=0.3, online=False)}


def test_generated_source_states_the_step_level_readably():
    source = nlc.generate(nlc.loads(spec()))
    assert ("StepLevelSpec(level='cms', period=2, lr=0.1, rule='momentum', retain=0.5, beta=0.3, online=False)"
            in source)


def _loss(model, tokens):
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].reshape(-1, 8), tokens[:, 1:].reshape(-1))


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_trainer_runs_retain_and_momentum_beta_as_stated(backend):
    """StepLevels vs a hand-written loop of S <- beta S - lr sum g ; theta <- retain theta + S every 2 steps."""
    torch.manual_seed(0)
    model = nlc.build(nlc.loads(spec()), backend=backend)
    twin = nlc.build(nlc.loads(spec()), backend=backend)
    twin.load_state_dict(model.state_dict())
    batches = [torch.randint(0, 8, (2, 6), generator=torch.Generator().manual_seed(s)) for s in range(6)]
    levels = StepLevels(model)
    owned = [n for n, _ in model.named_parameters() if levels.owns(n)]
    assert owned == ["blocks.0.cms_state.W"]
    for tokens in batches:
        model.zero_grad()
        _loss(model, tokens).backward()
        levels.accumulate()
        levels.step()

    w = dict(twin.named_parameters())["blocks.0.cms_state.W"]
    s, total = torch.zeros_like(w), torch.zeros_like(w)
    for step, tokens in enumerate(batches, start=1):
        twin.zero_grad()
        _loss(twin, tokens).backward()
        total += w.grad
        if step % 2 == 0:
            with torch.no_grad():
                s = 0.3 * s - 0.1 * total
                w.copy_(0.5 * w + s)
            total = torch.zeros_like(w)
    moved = dict(model.named_parameters())["blocks.0.cms_state.W"]
    torch.testing.assert_close(moved, w, rtol=1e-5, atol=1e-6)
    # the other weights are the outer optimizer's: StepLevels leaves them alone
    others = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        if name not in owned:
            assert torch.equal(p, others[name]), name


# (field values, the code, a word of the message): each a field the trainer cannot honour
REFUSED = [
    (dict(context="(h, h)"), "E308", "context"),
    (dict(objective="huber(delta = 1.0)"), "E308", "`huber`"),
    (dict(objective="lp(p = 3)"), "E308", "`lp`"),
    (dict(update="dgd"), "E308", "`dgd`"),
    (dict(update="muon"), "E308", "`muon`"),
    (dict(update="delta_momentum(beta = 0.9)"), "E308", "`delta_momentum`"),
    (dict(update="adam"), "E308", "`adam`"),
    (dict(flags="\n      debias"), "E308", "debias"),
    (dict(lr="learned(0.1)"), "E504", "`lr`"),
    (dict(lr="sigmoid(linear(h, 1))"), "E504", "`lr`"),
    (dict(retain="sigmoid(linear(h, 1))"), "E504", "`retain`"),
    (dict(update="momentum(beta = sigmoid(linear(h, 1)))"), "E504", "`beta`"),
    (dict(update="momentum(sigmoid(linear(h, 1)))"), "E504", "`beta`"),
]


@pytest.mark.parametrize("fields,code,word", REFUSED, ids=[f"{c}-{w}" for _, c, w in REFUSED])
def test_check_refuses_a_step_level_field_the_trainer_cannot_honour(fields, code, word):
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(spec(**fields))
    assert e.value.codes == [code], e.value.render()
    assert word in str(e.value)


def test_check_refuses_an_update_by_another_level_on_a_step_level():
    text = spec(update="m").replace("    level cms {", "    level m {\n      state linear(dim, dim)\n"
                                    "      init zeros\n      context grad(cms)\n      period 2 steps\n    }\n\n"
                                    "    level cms {")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text)
    assert "E308" in e.value.codes


def test_gd_and_momentum_with_dot_are_accepted():
    for update in ("gd", "momentum", "momentum(0.5)", "momentum(beta = 1 - 0.5)"):
        nlc.loads(spec(objective="dot", update=update))


def test_a_context_loss_level_defaults_to_dot_and_refuses_a_stated_l2():
    """The loop steps along the task loss's gradient (the dot objective): a stated `l2` would be dead."""
    from nlc import ir

    text = spec(objective="dot", update="gd").replace("      objective dot\n", "")
    assert "objective" not in text.split("level cms")[1]
    (cms,) = [lv for lv in ir.all_levels(nlc.loads(text)) if lv.name == "cms"]
    assert cms.objective.fn == "dot"
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(spec(objective="l2", update="gd"))
    assert e.value.codes == ["E308"]
