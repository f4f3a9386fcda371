"""Synthetic tasks have the answers they claim: every check recomputes them independently."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import nlc
from nlc.train import tasks as T


def _text(row) -> str:
    return bytes(int(t) for t in row).decode("utf-8")


def _seq(batch, b) -> list[int]:
    """The full sequence of row b: tokens plus the last target."""
    return batch.tokens[b].tolist() + [int(batch.targets[b, -1])]


def test_batches_depend_on_seed_split_and_step_only():
    for name in ("mqar", "niah", "parity", "brackets"):
        task = T.make_task(name)
        a, b = task.batch(3, 4, 200, seed=7), task.batch(3, 4, 200, seed=7)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
        assert not torch.equal(a.tokens, task.batch(4, 4, 200, seed=7).tokens)
        assert not torch.equal(a.tokens, task.batch(3, 4, 200, seed=8).tokens)
        assert not torch.equal(a.tokens, task.batch(3, 4, 200, seed=7, split="val").tokens)
        assert torch.equal(a.targets[:, :-1], a.tokens[:, 1:])  # targets are the next token


def test_mqar_answers_are_the_values_bound_to_the_queried_keys():
    task = T.make_task("mqar:kv=12,min_kv=3")
    batch = task.batch(0, 16, 127, seed=1)
    for b in range(16):
        seq = _seq(batch, b)
        # the key-value part: a prefix of (key, value) pairs, keys < 128 <= values
        kv = {}
        i = 0
        while i + 1 < len(seq) and 0 < seq[i] < 128 and seq[i + 1] >= 128 and seq[i] not in kv:
            kv[seq[i]] = seq[i + 1]
            i += 2
        assert 3 <= len(kv) <= 12
        answers = batch.mask[b].nonzero().flatten().tolist()
        assert len(answers) == len(kv)  # every key is queried once
        for pos in answers:
            key = int(batch.tokens[b, pos])
            assert key in kv and int(batch.targets[b, pos]) == kv[key]
            assert pos >= 2 * len(kv)  # queries come after the key-value part
        # the loss counts the answers only
        assert torch.equal(batch.loss_mask[b], batch.mask[b])


def test_mqar_refuses_what_does_not_fit():
    with pytest.raises(nlc.SpecError) as e:
        T.make_task("mqar:kv=40").check(64)
    assert e.value.codes == ["E614"]


@pytest.mark.parametrize("length", [1024, 4096])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_niah_single_needle(length, depth):
    rng = np.random.default_rng(0)
    seq, answers, info = T.niah_example(rng, length, depth, "single")
    text = bytes(seq.tolist()).decode()
    assert len(seq) == length
    keys = re.findall(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.", text)
    assert len(keys) == 1 and keys[0][0] == keys[0][1]
    question = text.rindex("What is the pass key? The pass key is ")
    assert "".join(text[i] for i in answers) == keys[0][0] == text[question:].split()[-1]
    needle = text.index("The pass key is")
    assert abs(needle / question - depth) < 0.08  # at the requested depth of the haystack
    assert answers == list(range(length - 5, length))


def test_niah_multikey_asks_for_one_of_several_needles():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        seq, answers, _ = T.niah_example(rng, 2048, 0.3, "multikey", keys=5)
        text = bytes(seq.tolist()).decode()
        found = dict(re.findall(r"The pass key for (\w+) is (\d+)\. ", text))
        assert len(found) == 5
        asked = re.search(r"What is the pass key for (\w+)\? The pass key for \1 is (\d+)$", text)
        assert asked and found[asked.group(1)] == asked.group(2) == "".join(text[i] for i in answers)


def test_niah_multivalue_lists_every_value_in_order():
    rng = np.random.default_rng(3)
    seq, answers, _ = T.niah_example(rng, 2048, 0.6, "multivalue", values=3)
    text = bytes(seq.tolist()).decode()
    m = re.search(r"What are the pass keys for (\w+)\? The pass keys for \1 are ([\d, ]+)$", text)
    values = re.findall(rf"The pass key for {m.group(1)} is (\d+)\. ", text)
    assert len(values) == 3 and m.group(2) == ", ".join(values)
    assert "".join(text[i] for i in answers) == "".join(values)


def test_niah_batches_and_too_short():
    task = T.make_task("niah")
    batch = task.batch(0, 3, 300, seed=0)
    for b in range(3):
        text = _text(_seq(batch, b))
        key = re.search(r"The pass key is (\d+)", text).group(1)
        got = "".join(chr(int(t)) for t in batch.targets[b][batch.mask[b]])
        assert got == key
    assert bool(batch.loss_mask.all())  # NIAH trains on every byte
    with pytest.raises(nlc.SpecError) as e:
        T.make_task("niah:variant=multikey,keys=8").check(128)
    assert e.value.codes == ["E614"] and "needs more than" in str(e.value)


def test_parity_answers():
    batch = T.make_task("parity:max_bits=12").batch(0, 8, 100, seed=2)
    n = 0
    for b in range(8):
        text = _text(_seq(batch, b))
        for pos in batch.mask[b].nonzero().flatten().tolist():
            question = text[:pos + 1].rsplit("\n", 1)[-1]
            assert question.endswith("=") and set(question[:-1]) <= {"0", "1"}
            expected = sum(ch == "1" for ch in question) % 2
            assert chr(int(batch.targets[b, pos])) == str(expected)
            n += 1
    assert n > 30


def _balanced_by_erasing(s: str) -> bool:
    while "()" in s or "[]" in s:
        s = s.replace("()", "").replace("[]", "")
    return s == ""


def test_bracket_answers():
    batch = T.make_task("brackets:max_len=12").batch(0, 16, 120, seed=4)
    labels = []
    for b in range(16):
        text = _text(_seq(batch, b))
        for pos in batch.mask[b].nonzero().flatten().tolist():
            word = text[:pos + 1].rsplit("\n", 1)[-1][:-1]
            assert set(word) <= set("()[]") and word
            label = chr(int(batch.targets[b, pos]))
            assert label == ("Y" if _balanced_by_erasing(word) else "N")
            labels.append(label)
    assert 0.3 < labels.count("Y") / len(labels) < 0.8  # both answers are common


def test_lm_batches_are_windows_of_the_corpus(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("".join(f"{i:05d} the quick brown fox\n" for i in range(3000)))
    task = T.make_task("lm", [str(f)])
    buf = bytes(task.corpus.tokens("train").tolist())
    batch = task.batch(5, 4, 64, seed=0)
    for b in range(4):
        window = bytes(_seq(batch, b))
        assert window in buf
    assert bool(batch.mask.all())
    s0, s1 = task.stream_batch(0, 2, 64, 0), task.stream_batch(1, 2, 64, 0)
    for b in range(2):  # streaming: step 1 continues where step 0 stopped
        assert bytes(s0.tokens[b].tolist()) + bytes(s1.tokens[b].tolist()) in buf
        assert int(s0.targets[b, -1]) == int(s1.tokens[b, 0])


def test_continual_stream_visits_domains_in_order(tmp_path):
    dirs = []
    for k, word in enumerate(("alpha", "beta", "gamma")):
        d = tmp_path / word
        d.mkdir()
        (d / "a.txt").write_text(f"{word} " * 4000)
        dirs.append(str(d))
    task = T.make_task("continual", dirs)
    task.schedule(9)
    assert [task.domain_of(s) for s in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert task.phase_ends() == [2, 5, 8]
    for s, word in ((0, "alpha"), (4, "beta"), (8, "gamma")):
        assert word in _text(task.batch(s, 1, 32, 0).tokens[0])
    default = T.make_task("continual:domains=json+email")
    assert [n for n, _ in default.domains] == ["json", "email"]


def test_task_names_and_options_are_checked():
    with pytest.raises(nlc.SpecError) as e:
        T.make_task("mqr")
    assert e.value.codes == ["E614"] and "did you mean `mqar`" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        T.make_task("mqar:pairs=3")
    assert e.value.codes == ["E614"] and "kv=" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        T.make_task("niah:variant=triple")
    assert e.value.codes == ["E614"]
    assert T.parse_length("4k") == 4096 and T.parse_length("16K") == 16384 and T.parse_length("512") == 512
