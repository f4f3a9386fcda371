"""Data with no download: a byte tokenizer, the Python standard library as a corpus, user text.

Tokens are bytes (vocab 256): UTF-8 text needs no vocabulary file and no download. The
default corpus is the standard library's own `.py` sources on the running machine (found
with `sysconfig`; `site-packages` and test folders left out). Users can pass their own text
files or folders instead.

Splits are deterministic and disjoint: a document's split is fixed by the sha256 of its path
relative to the corpus root (5% validation, 5% test, the rest training), so the same file is
always in the same split, whatever else the folder holds. When hashing leaves a split empty
(a handful of files, or a single one) every document is split by position instead: its
first 90% trains, the next 5% validates, the last 5% tests (cut at line ends).

Bad data is an E6xx error, never a traceback: E610 missing path, E611 unreadable file,
E612 no text (empty file, empty folder, split too small), E613 binary file, E615 a path that
is neither a regular file nor a folder (a FIFO, a device such as /dev/zero, a socket, a
symlink loop). The type of every file is checked on the opened file before a byte is read,
so nothing waits on a FIFO or reads a device without end; inside a folder such files are
skipped.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from nlc.files import NotARegularFile, kind_of, read_regular_bytes
from nlc.train.errors import train_error

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
SEPARATOR = 0  # the byte between documents (text files never contain NUL)
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 symbols, no vocabulary file."""

    vocab_size = 256

    def encode(self, text: str | bytes) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else bytes(text))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Document:
    """One text: its name (path relative to the corpus root) and its bytes."""

    name: str
    data: bytes


@dataclass
class Corpus:
    """Documents split into train / val / test, and their bytes concatenated per split."""

    name: str
    splits: dict[str, list[Document]]
    skipped: list[str] = field(default_factory=list)
    split_by: str = "hash"
    _tokens: dict = field(default_factory=dict, repr=False)

    def tokens(self, split: str):
        """The split's documents as one uint8 tensor, SEPARATOR between documents."""
        import torch

        if split not in self._tokens:
            parts = []
            for doc in self.splits[split]:
                parts.append(doc.data)
                parts.append(bytes([SEPARATOR]))
            data = b"".join(parts)
            self._tokens[split] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else \
                torch.zeros(0, dtype=torch.uint8)
        return self._tokens[split]

    def size(self, split: str) -> int:
        return sum(len(d.data) + 1 for d in self.splits[split])

    def describe(self) -> dict:
        return {"name": self.name, "split_by": self.split_by, "skipped": len(self.skipped),
                **{s: {"documents": len(self.splits[s]), "bytes": self.size(s)} for s in SPLITS},
                "fingerprint": self.fingerprint()}

    def fingerprint(self) -> str:
        """A hash of every document's name and bytes: two runs on the same data agree on it."""
        h = hashlib.sha256()
        for s in SPLITS:
            for d in self.splits[s]:
                h.update(f"{s}\0{d.name}\0{len(d.data)}\0".encode())
                h.update(hashlib.sha256(d.data).digest())
        return h.hexdigest()[:16]


def split_of(name: str) -> str:
    """The split of a document, from the sha256 of its relative path."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def _cut(data: bytes, fraction: float) -> int:
    """A cut near `fraction` of data, moved forward to just after a line end when one is near."""
    i = int(len(data) * fraction)
    nl = data.find(b"\n", i)
    return nl + 1 if 0 <= nl < len(data) and nl - i < 4096 else i


def split_documents(docs: Sequence[Document]) -> tuple[dict[str, list[Document]], str]:
    """Split documents by path hash; by position inside each document when hashing leaves a split empty."""
    docs = sorted(docs, key=lambda d: d.name)
    by_hash = {s: [d for d in docs if split_of(d.name) == s] for s in SPLITS}
    if all(by_hash[s] for s in SPLITS):
        return by_hash, "hash"
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    a, b = 1 - VAL_FRACTION - TEST_FRACTION, 1 - TEST_FRACTION
    for d in docs:
        i, j = _cut(d.data, a), _cut(d.data, b)
        j = max(i, j)
        for s, piece in (("train", d.data[:i]), ("val", d.data[i:j]), ("test", d.data[j:])):
            if piece:
                out[s].append(Document(f"{d.name}[{s}]", piece))
    return out, "position"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


NOT_A_FILE_HINT = ("pass regular text files or folders: nlc reads the data again on --resume and for "
                   "`nlc eval`, so save a stream to a file first")
LOOP_HINT = "the symlink leads (through others) back to itself: point it at a text file or folder"


def resolve_data_path(path: str | Path) -> str:
    """The absolute path of a --data path, checked to be a file or folder first (see data_kind), so that
    an error names the path as the user wrote it."""
    data_kind(Path(path))
    try:
        return str(Path(path).resolve())
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
        raise train_error("E615", f"data path {path} is a symlink loop", LOOP_HINT) from None


def data_kind(path: Path) -> str:
    """"file" or "folder" for a --data path; E610 when nothing is there, E615 when it is something else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        target = f" (a symlink to {os.readlink(path)}, which does not exist)" if os.path.islink(path) else ""
        raise train_error("E610", f"no such data file or folder: {path}{target}", "check the path") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise train_error("E615", f"data path {path} is a symlink loop", LOOP_HINT) from None
        raise train_error("E611", f"cannot read data path {path}: {e.strerror or e}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    raise train_error("E615", f"data path {path} is {kind_of(mode)}, not a text file or folder", NOT_A_FILE_HINT)


def read_text(path: Path, explicit: bool = True) -> bytes | None:
    """The bytes of a UTF-8 text file; errors for an explicit file, None (skip) inside a folder.

    Only regular files are read (checked on the open file, which never waits for a FIFO's writer)."""
    try:
        data = read_regular_bytes(path)
    except FileNotFoundError:
        if not explicit:  # a dangling symlink in a folder
            return None
        raise train_error("E610", f"no such data file: {path}", "check the path") from None
    except NotARegularFile as e:
        if not explicit:
            return None
        raise train_error("E615", f"data path {path} is {e.kind}, not a text file", NOT_A_FILE_HINT) from None
    except MemoryError:
        raise train_error("E611", f"data file {path} is too large to read into memory",
                          "pass a smaller file (or several)") from None
    except OSError as e:
        if not explicit:
            return None
        if e.errno == errno.ELOOP:
            raise train_error("E615", f"data path {path} is a symlink loop", LOOP_HINT) from None
        raise train_error("E611", f"cannot read data file {path}: {e.strerror or e}",
                          "check the file's permissions") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        if not explicit:
            return None
        raise train_error("E613", f"{path} is a binary file (a NUL byte at byte {nul}), not text",
                          "pass UTF-8 text files or folders of them")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if not explicit:
            return None
        raise train_error("E613", f"{path} is not UTF-8 text (byte {e.start})",
                          "pass UTF-8 text files or folders of them") from None
    if not data.strip():
        if not explicit:
            return None
        raise train_error("E612", f"data file {path} is empty", "pass a file with some text in it")
    return data


def _walk(root: Path, suffixes: tuple[str, ...] | None, skip_dirs: set[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip_dirs)
        for f in sorted(filenames):
            if f.startswith(".") or (suffixes and not f.endswith(suffixes)):
                continue
            found.append(Path(dirpath) / f)
    return found


def collect(paths: Sequence[str | Path]) -> tuple[list[Document], list[str]]:
    """Documents from files and folders (names relative to the folder given); skipped files listed."""
    docs, skipped = [], []
    for p in paths:
        p = Path(p)
        if data_kind(p) == "file":
            docs.append(Document(p.name, read_text(p, explicit=True)))
            continue
        if not os.access(p, os.R_OK | os.X_OK):
            raise train_error("E611", f"cannot read data folder {p}", "check the folder's permissions")
        found = 0
        for f in _walk(p, None, {"__pycache__"}):
            data = read_text(f, explicit=False)
            rel = f.relative_to(p).as_posix()
            if data is None:
                skipped.append(rel)
                continue
            found += 1
            docs.append(Document(rel if len(paths) == 1 else f"{p.name}/{rel}", data))
        if not found:
            why = f" ({len(skipped)} binary, empty or unreadable files skipped)" if skipped else ""
            raise train_error("E612", f"data folder {p} holds no text files{why}",
                              "pass a folder of UTF-8 text files")
    return docs, skipped


@lru_cache(maxsize=8)
def _stdlib(packages: tuple[str, ...] | None) -> Corpus:
    root = stdlib_root()
    if packages is None:
        files = _walk(root, (".py",), SKIP_DIRS)
        name = "stdlib"
    else:
        files = []
        for pkg in packages:
            if (root / pkg).is_dir():
                files += _walk(root / pkg, (".py",), SKIP_DIRS)
            elif (root / f"{pkg}.py").is_file():
                files.append(root / f"{pkg}.py")
            else:
                raise train_error("E610", f"the standard library at {root} has no package `{pkg}`",
                                  "name a folder or module of the standard library, e.g. `email` or `asyncio`")
        name = "stdlib:" + "+".join(packages)
    docs, skipped = [], []
    for f in files:
        data = read_text(f, explicit=False)
        rel = f.relative_to(root).as_posix()
        if data is None:
            skipped.append(rel)
        else:
            docs.append(Document(rel, data))
    if not docs:
        raise train_error("E612", f"found no Python sources under {root}",
                          "pass your own text with --data FILE_OR_FOLDER")
    splits, how = split_documents(docs)
    return Corpus(name, splits, skipped, how)


@lru_cache(maxsize=8)
def _user(paths: tuple[str, ...]) -> Corpus:
    docs, skipped = collect(paths)
    splits, how = split_documents(docs)
    return Corpus("+".join(Path(p).name or p for p in paths), splits, skipped, how)


def load_corpus(paths: Sequence[str | Path] | None = None, packages: Sequence[str] | None = None) -> Corpus:
    """The corpus of user files/folders, or of the standard library (all of it, or some packages)."""
    if paths:
        corpus = _user(tuple(resolve_data_path(p) for p in paths))
    else:
        corpus = _stdlib(tuple(packages) if packages else None)
    return corpus
