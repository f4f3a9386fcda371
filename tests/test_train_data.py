"""Training data: byte tokens, deterministic disjoint splits, clear errors for bad data (nlc.train.data)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from fs_cases import make_fifo, make_symlink_loop, no_hang

import nlc
from nlc.train import data as D


def _text(i: int, n: int = 400) -> str:
    return "".join(f"line {j} of document {i}: {'abcdefghij'[(i + j) % 10] * (j % 7)}\n" for j in range(n))


def test_byte_tokenizer_round_trips_utf8():
    tok = D.ByteTokenizer()
    text = "def f(x):\n    return x  # é ✓"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text and tok.vocab_size == 256


def test_split_of_is_a_function_of_the_path_only():
    names = [f"pkg/mod_{i}.py" for i in range(400)]
    first = {n: D.split_of(n) for n in names}
    assert {n: D.split_of(n) for n in reversed(names)} == first
    counts = {s: list(first.values()).count(s) for s in D.SPLITS}
    assert counts["val"] > 0 and counts["test"] > 0 and counts["train"] > 300
    # the rule, recomputed independently: sha256 of the path, first 8 bytes as a fraction
    for n in names[:50]:
        u = int(hashlib.sha256(n.encode()).hexdigest()[:16], 16) / 2 ** 64
        assert first[n] == ("test" if u < 0.05 else "val" if u < 0.10 else "train")


def test_stdlib_corpus_splits_are_deterministic_and_disjoint():
    corpus = D.load_corpus()
    assert corpus.split_by == "hash"
    names = {s: {d.name for d in corpus.splits[s]} for s in D.SPLITS}
    assert all(names[s] for s in D.SPLITS)
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and \
        not (names["val"] & names["test"])
    assert not any("site-packages" in n for s in D.SPLITS for n in names[s])
    # a fresh load (no cache) gives the same split and the same bytes
    D._stdlib.cache_clear()
    again = D.load_corpus()
    assert again.fingerprint() == corpus.fingerprint()
    assert {s: {d.name for d in again.splits[s]} for s in D.SPLITS} == names
    tokens = again.tokens("val")
    assert int(tokens.numel()) == again.size("val") and tokens.dtype.is_floating_point is False


def test_adding_a_file_moves_no_other_file(tmp_path):
    for i in range(60):
        (tmp_path / f"doc{i}.txt").write_text(_text(i, 20))
    before = D.split_documents(D.collect([tmp_path])[0])[0]
    (tmp_path / "new.txt").write_text(_text(99, 20))
    after = D.split_documents(D.collect([tmp_path])[0])[0]
    where = {d.name: s for s in D.SPLITS for d in before[s]}
    assert all(where[d.name] == s for s in D.SPLITS for d in after[s] if d.name != "new.txt")


def test_few_files_split_by_position_disjoint_and_complete(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text(_text(1))
    corpus = D.load_corpus([f])
    assert corpus.split_by == "position"
    pieces = [corpus.splits[s][0].data for s in D.SPLITS]
    assert all(pieces) and b"".join(pieces) == f.read_bytes()  # disjoint, in order, nothing lost
    assert len(pieces[0]) > 8 * len(pieces[2])
    assert pieces[0].endswith(b"\n") and pieces[1].endswith(b"\n")  # cut at line ends


def test_folder_skips_binary_files_but_a_named_binary_file_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text(_text(1, 50))
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / ".hidden").write_text("secret")
    docs, skipped = D.collect([tmp_path])
    assert [d.name for d in docs] == ["a.txt"] and skipped == ["img.png"]
    with pytest.raises(nlc.SpecError) as e:
        D.collect([tmp_path / "img.png"])
    assert e.value.codes == ["E613"] and "binary" in str(e.value)


@pytest.mark.parametrize("content, code, words", [
    (b"", "E612", "empty"),
    (b"  \n\n", "E612", "empty"),
    (b"text\x00more", "E613", "NUL byte at byte 4"),
    (b"caf\xe9 latin-1", "E613", "not UTF-8 text (byte 3)"),
])
def test_bad_data_files_give_clear_errors(tmp_path, content, code, words):
    f = tmp_path / "data.txt"
    f.write_bytes(content)
    with pytest.raises(nlc.SpecError) as e:
        D.load_corpus([f])
    assert e.value.codes == [code] and words in str(e.value) and str(f) in str(e.value)
    assert f.read_bytes() == content  # never touched


def test_missing_path_and_textless_folder(tmp_path):
    with pytest.raises(nlc.SpecError) as e:
        D.load_corpus([tmp_path / "nowhere"])
    assert e.value.codes == ["E610"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(nlc.SpecError) as e:
        D.load_corpus([tmp_path / "empty"])
    assert e.value.codes == ["E612"] and "no text files" in str(e.value) and "1 binary" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        D.load_corpus(packages=["no_such_package_here"])
    assert e.value.codes == ["E610"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path):
    f = tmp_path / "locked.txt"
    f.write_text("text")
    f.chmod(0)
    try:
        with pytest.raises(nlc.SpecError) as e:
            D.load_corpus([f])
        assert e.value.codes == ["E611"]
    finally:
        f.chmod(0o644)


# ---- paths that are not text files: checked before a byte is read, never a hang -----------------

def _loop(tmp_path: Path) -> Path:
    return make_symlink_loop(tmp_path)


def _fifo(tmp_path: Path) -> Path:
    return make_fifo(tmp_path / "pipe")


def _to_dev_zero(tmp_path: Path) -> Path:
    (tmp_path / "zeros.txt").symlink_to("/dev/zero")
    return tmp_path / "zeros.txt"


NOT_TEXT = {  # --data PATH -> (code, what the message says)
    "a symlink loop": (_loop, "E615", "is a symlink loop"),
    "a FIFO": (_fifo, "E615", "is a named pipe (FIFO), not a text file or folder"),
    "/dev/zero": (lambda tmp_path: Path("/dev/zero"), "E615", "is a character device, not a text file or folder"),
    "a symlink to /dev/zero": (_to_dev_zero, "E615", "is a character device"),
    "a dangling symlink": (lambda t: (t / "gone").symlink_to(t / "nowhere") or t / "gone", "E610",
                           "which does not exist"),
    "a folder of folders": (lambda t: (t / "d" / "e").mkdir(parents=True) or t / "d", "E612", "holds no text files"),
}


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs and /dev/zero")
@pytest.mark.parametrize("case", list(NOT_TEXT))
def test_data_that_is_not_a_text_file(tmp_path, case):
    make, code, words = NOT_TEXT[case]
    path = make(tmp_path)
    with no_hang():
        for load in (lambda: D.load_corpus([path]), lambda: D.collect([path])):
            with pytest.raises(nlc.SpecError) as e:
                load()
            assert e.value.codes == [code] and words in str(e.value) and str(path) in str(e.value), str(e.value)


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs and /dev/zero")
def test_a_folder_skips_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "a.txt").write_text(_text(1, 50))
    _fifo(tmp_path)
    _to_dev_zero(tmp_path)
    _loop(tmp_path)
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere")
    with no_hang():
        docs, skipped = D.collect([tmp_path])
    assert [d.name for d in docs] == ["a.txt"]
    assert sorted(skipped) == ["gone.txt", "loop_a", "loop_b", "pipe", "zeros.txt"]


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs")
def test_train_refuses_such_data_and_spec_files_with_a_code(tmp_path, capsys):
    from nlc.cli import main

    spec = Path(__file__).resolve().parent.parent / "examples" / "titans_lmm.nl"
    fifo = _fifo(tmp_path)
    with no_hang():
        assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--data", str(fifo), "-p", "dim=8",
                     "--steps", "1", "--quiet"]) == 1
        assert main(["train", str(fifo), "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"]) == 1
        assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--data", str(_loop(tmp_path)),
                     "-p", "dim=8", "--steps", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error[E615]: data path" in err and "named pipe (FIFO)" in err and "symlink loop" in err
    assert f"error[E604]: {fifo} is not a regular file: it is a named pipe (FIFO)" in err
    assert "internal error" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
