"""check_fields_live (issue #12: accepted means correct): every field a spec states takes effect.

A field that a level ignores by what it is (the learning fields of a frozen level, the objective of
an optimizer's `state params` level moved by an update expression) is rejected by `nlc check` (E314),
so no example and no random spec may have a dead field.
"""

from __future__ import annotations

import pytest
from hypothesis import given

import nlc
import nlc.testing as nt
from nlc.cli import main
from nlc.testing.settings import for_property
from tests.model_cases import ROOT, tiny

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.nl"))
SMALL_PERIODS = dict(chunk=2, memory_chunk=2, cms_fast=1, cms_slow=2, fast_period=1, mid_period=2,
                     slow_period=4, hidden=8, f=2)


def _no_dead_fields(dead: list) -> None:
    assert not dead, "dead fields:\n" + "\n".join(map(str, dead))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_stated_field_of_an_example_is_live(name):
    prog = nlc.load(ROOT / "examples" / name)
    small = dict(SMALL_PERIODS, cms_fast=2, cms_slow=8) if prog.param("cms_mid") is not None else SMALL_PERIODS
    params = tiny(prog, **small) if prog.is_model else (
        {k: v for k, v in SMALL_PERIODS.items() if prog.param(k) is not None})
    dead, _ = nt.find_dead_fields(prog, params=params)
    _no_dead_fields(dead)


@for_property("fields_live")
@given(nt.spec_texts(max_blocks=1, max_levels=2, roles=("memory", "optimizer")))
def test_every_stated_field_of_a_random_spec_is_live(text):
    dead, _ = nt.find_dead_fields(text)
    _no_dead_fields(dead)


CHAIN = """\
model chain(dim = 8, chunk = 2) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(conv(linear(h, dim), 3))

    level mem {
      state linear(dim, dim)
      init zeros
      context (k, linear(h, dim))
      objective huber(delta = 0.5)
      update momentum(beta = 0.8)
      lr sigmoid(linear(h, 1)) * 0.1
      retain 0.9
      period chunk tokens
    }

    level cms {
      state mlp(dim, 2 * dim)
      context loss
      update momentum(beta = 0.5)
      lr 0.01
      retain 0.99
      period 2 steps
    }

    out = cms(mem(l2norm(linear(h, dim))))
  }
}
"""


def test_every_field_of_an_in_context_and_a_steps_level_is_live():
    """`mem`'s fields in both back ends; `cms`'s lr, retain, momentum beta and period through the trainer
    (retain and beta used to be dropped on the way to it: issue #12 item 2)."""
    nt.check_fields_live(CHAIN)


def test_fields_live_catches_an_objective_argument_one_back_end_ignores(monkeypatch):
    """A planted bug: the compiled back end's Huber gradient ignores `delta` (always 1)."""
    from nlc.runtime import memory

    right = memory.objective_grad
    monkeypatch.setattr(memory, "objective_grad",
                        lambda obj, y, v: right(("huber", 1.0) if obj[0] == "huber" else obj, y, v))
    with pytest.raises(AssertionError, match=r"level `mem`, field `objective.delta`: `0.5` and `0.5 \* 0.1` give "
                                             r"the same outputs and slow-parameter gradients \(compiled\)"):
        nt.check_fields_live(CHAIN.replace("    level cms", "    level cms_unused").split("    level cms_unused")[0]
                             + "    out = mem(l2norm(linear(h, dim)))\n  }\n}\n", backends=("compiled",))


def test_fuzz_runs_fields_live(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "chain.nl"
    spec.write_text(CHAIN, encoding="utf-8")
    assert main(["fuzz", str(spec), "--property", "fields_live", "--examples", "1"]) == 0
    assert main(["fuzz", str(ROOT / "examples" / "decayed_gd.nl"), "--property", "fields_live"]) == 0
    # the planted bug of the test above: fuzz reports the dead field and fails
    from nlc.runtime import memory

    right = memory.objective_grad
    monkeypatch.setattr(memory, "objective_grad",
                        lambda obj, y, v: right(("huber", 1.0) if obj[0] == "huber" else obj, y, v))
    capsys.readouterr()
    assert main(["fuzz", str(spec), "--property", "fields_live", "--examples", "1"]) == 1
    out = capsys.readouterr().out
    assert "property `fields_live` fails" in out and "field `objective.delta`" in out
