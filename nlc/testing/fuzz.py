"""The fuzzer behind `nlc fuzz`: run the nlc.testing properties on a spec or on random specs.

    nlc fuzz SPEC [--examples N] [--seed S] [--tiny] [-p NAME=VALUE] [--property P ...]
    nlc fuzz --random [--examples N] [--seed S] [--max-levels N] [--max-blocks N]

With a SPEC, hypothesis draws inputs (token batches of awkward lengths) and
initialisation seeds for that spec; with --random it draws the specs too
(`nlc.testing.spec_texts`). On a failure hypothesis shrinks the example, then
the spec itself is reduced (repeats unrolled to one copy, blocks dropped) while
the same property still fails, and the smallest failing spec is printed as nlc
source you can paste into a file, with the inputs that show the failure.

Exit status: 0 every property holds on every example; 1 a property fails (or the
spec does not check); 2 bad usage.

The command line itself (arguments, messages) is nlc.testing.fuzz_cli, which needs no hypothesis.
"""

from __future__ import annotations

import dataclasses
import traceback

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

import nlc
from nlc import ir
from nlc.testing.properties import (_TAKES_SEED, _TAKES_TOKENS, PROPERTIES, SPEC_PROPERTIES, check_deterministic,
                                    check_fields_live, check_round_trip, run_property)
from nlc.testing.strategies import inputs, spec_texts

__all__ = ["Failure", "fuzz_random", "fuzz_spec", "reduce_spec"]


@dataclasses.dataclass
class Failure:
    """The smallest failing example found: which property, its message, the spec and the inputs."""

    prop: str
    message: str
    text: str
    tokens: object  # LongTensor [B, T] or None
    seed: int
    params: dict

    def render(self) -> str:
        lines = [f"property `{self.prop}` fails:", "", _indent(self.message), "",
                 "smallest failing spec (paste it into a .nl file):", "", self.text.rstrip("\n"), ""]
        if self.tokens is not None and self.prop in _TAKES_TOKENS:
            lines.append(f"inputs: tokens {tuple(self.tokens.shape)}, seed {self.seed}")
        elif self.prop in _TAKES_SEED:
            lines.append(f"inputs: seed {self.seed}")
        if self.params:
            lines.append(f"parameters: {', '.join(f'{k}={v}' for k, v in self.params.items())}")
        call = f"import torch, nlc.testing; nlc.testing.check_{self.prop}(open('failing.nl').read()"
        if self.tokens is not None and self.prop in _TAKES_TOKENS:
            call += f", tokens=torch.tensor({self.tokens.tolist()})"
        if self.params:
            call += f", params={self.params!r}"
        if self.prop in _TAKES_SEED:
            call += f", seed={self.seed}"
        lines.append(f"reproduce (the spec saved as failing.nl): python -c \"{call})\"")
        return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _run(prop: str, text: str, tokens, seed: int, params: dict) -> None:
    run_property(prop, text, tokens=tokens, params=params or None, seed=seed)


def _settings(examples: int, seed: int | None):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                    report_multiple_bugs=False, print_blob=False,
                    suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])


def _search(test, examples: int, seed: int | None, record: dict) -> Failure | None:
    """Run a hypothesis test; return the last (shrunk) failure it recorded."""
    test = _settings(examples, seed)(test)
    if seed is not None:
        test = hseed(seed)(test)
    try:
        test()
    except AssertionError:
        return record.get("failure")
    except BaseException as e:  # noqa: BLE001 - an internal error in nlc is a failure too
        f = record.get("failure")
        if f is not None:
            return f
        raise e
    return None


def _check_one(props, text, tokens, seed, params, record, counts) -> None:
    for prop in props:
        try:
            _run(prop, text, tokens, seed, params)
        except AssertionError as e:
            record["failure"] = Failure(prop, str(e), text, tokens, seed, dict(params))
            record.setdefault("passed", counts["examples"])
            raise
        except Exception as e:  # an internal error in nlc: report it like a failing property

            tb = "".join(traceback.format_exception(e)[-6:])
            record["failure"] = Failure(prop, f"internal error: {type(e).__name__}: {e}\n{tb}", text, tokens,
                                        seed, dict(params))
            record.setdefault("passed", counts["examples"])
            raise AssertionError(str(e)) from e
    counts["examples"] += 1


def fuzz_spec(text: str, examples: int = 20, seed: int | None = None, params: dict | None = None,
              properties=tuple(PROPERTIES), max_length: int = 16) -> tuple[Failure | None, int]:
    """Run the properties on one spec with hypothesis-drawn inputs; (smallest failure or None, examples run)."""
    params = dict(params or {})
    prog = nlc.loads(text, "<spec>", **params) if params else nlc.loads(text, "<spec>")
    record, counts = {}, {"examples": 0}
    if not prog.is_model:
        props = [p for p in properties if p in SPEC_PROPERTIES]
        try:
            _check_one(props, text, None, 0, params, record, counts)
        except AssertionError:
            return record["failure"], 1
        return None, 1
    # the properties of the text alone run once (generation also in another process, another hash seed)

    # fields_live too: it draws its own tokens (long enough for every field to show) and perturbs
    # each field in turn, which is too slow to repeat for every drawn input
    once = {"round_trip": lambda: check_round_trip(text, params or None),
            "deterministic": lambda: check_deterministic(text, params, other_process=True),
            "fields_live": lambda: check_fields_live(text, params=params or None)}
    for prop in (p for p in properties if p in once):
        try:
            once[prop]()
        except AssertionError as e:
            return Failure(prop, str(e), text, None, 0, dict(params)), 0
    drawn = [p for p in properties if p not in once]
    if not drawn:
        return None, 1
    model = nlc.build(prog, **params)
    vocab = model.embed.num_embeddings
    length = max(max_length, 3 * model.alignment + 1)

    @given(inputs(vocab=vocab, max_length=length, periods=(2, 3, 4, model.alignment)), st.integers(0, 2**16))
    def test(tokens, init_seed):
        _check_one(drawn, text, tokens, init_seed, params, record, counts)

    failure = _search(test, examples, seed, record)
    if failure is not None:
        return reduce_spec(failure), record.get("passed", 0)
    return None, counts["examples"]


def fuzz_random(examples: int = 20, seed: int | None = None, properties=tuple(PROPERTIES),
                **knobs) -> tuple[Failure | None, int]:
    """Run the properties on random specs (`spec_texts(**knobs)`); (smallest failure or None, examples run)."""
    record, counts = {}, {"examples": 0}

    @given(spec_texts(**knobs), inputs(max_length=12))
    def test(text, tokens):
        _check_one(properties, text, tokens, 0, {}, record, counts)

    failure = _search(test, examples, seed, record)
    if failure is not None:
        return reduce_spec(failure), record.get("passed", 0)
    return None, counts["examples"]


def _smaller(prog):
    """Candidate programs one step smaller: a repeat unrolled to one copy, a block dropped."""
    body = list(prog.body)
    for i, s in enumerate(body):
        if isinstance(s, ir.Repeat):
            yield dataclasses.replace(prog, body=tuple(body[:i] + list(s.body) + body[i + 1:]))
    blocks = [i for i, s in enumerate(body) if isinstance(s, (ir.Block, ir.Repeat))]
    if len(blocks) > 1:
        for i in blocks:
            yield dataclasses.replace(prog, body=tuple(body[:i] + body[i + 1:]))


def reduce_spec(failure: Failure) -> Failure:
    """Shrink the failing spec's structure while the same property still fails on the same inputs."""
    current = failure
    progress = True
    while progress:
        progress = False
        try:
            prog = nlc.loads(current.text, "<spec>")
        except nlc.SpecError:
            return current
        for candidate in _smaller(prog):
            try:
                text = nlc.print_program(candidate)
                nlc.loads(text, "<spec>", **current.params)
            except nlc.SpecError:
                continue
            try:
                _run(current.prop, text, current.tokens, current.seed, current.params)
            except AssertionError as e:
                current = dataclasses.replace(current, text=text, message=str(e))
                progress = True
                break
            except Exception:  # noqa: BLE001 - a different problem: not the same failure
                continue
    return current


# ---- the command line ----------------------------------------------------------------------


def _tiny(prog) -> dict:
    """Overrides that make a model small (dim 8, one layer, small hidden sizes, chunk 2) for the parameters it has."""
    over = {"dim": 8}
    for name, value in (("layers", 1), ("depth", 1), ("heads", 2), ("hidden", 16), ("cms_hidden", 16), ("chunk", 2),
                        ("ffn", 16), ("n_persistent", 2)):
        p = prog.param(name)
        if p is not None:
            over[name] = value
    return over
