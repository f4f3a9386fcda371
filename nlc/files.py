"""Atomic file writes (a crash or Ctrl-C never leaves a half-written file behind), reads that never
block on a FIFO or a device, and JSON that is always valid (no bare NaN)."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path


def _new_file_mode() -> int:
    """The mode `open()` gives a new file (0666 less the umask); mkstemp's temporary files are 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write data to path via a temporary file in the same folder and an atomic rename. The file gets the
    mode an ordinary write would give it: an existing file's, else 0666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to path atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ---- reading only regular files -------------------------------------------------------------

class NotARegularFile(OSError):
    """A path that is a folder, a FIFO, a device or a socket where a regular file was expected."""

    def __init__(self, path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = path, kind


def kind_of(mode: int) -> str:
    """What a stat mode is, for messages: "a regular file", "a folder", "a named pipe (FIFO)", ..."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: str | Path):
    """A regular file opened for binary reading. Anything else (a FIFO, /dev/zero, a folder) is
    NotARegularFile, raised before a byte is read: the open does not wait for a FIFO's writer
    (O_NONBLOCK) and the type is checked on the opened file, so it cannot change between the
    check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        try:  # a socket cannot be opened at all (ENXIO): say what it is
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise NotARegularFile(path, kind_of(mode)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, kind_of(mode))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular_bytes(path: str | Path, at_most: int | None = None) -> bytes:
    """The bytes of a regular file (its first `at_most` bytes when given); NotARegularFile for anything
    else (see open_regular)."""
    with open_regular(path) as f:
        return read_at_most(f, at_most)


def read_at_most(f, at_most: int | None = None) -> bytes:
    """The bytes of an open binary file, its first `at_most` when given."""
    if at_most is None:
        return f.read()
    return b"".join(read_pieces(f, at_most))


def read_pieces(f, at_most: int):
    """The first `at_most` bytes of an open binary file, in pieces of at most 1 MiB: f.read(n) would
    allocate n bytes first, however short the file."""
    left = at_most
    while left > 0:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            return
        yield chunk
        left -= len(chunk)


# ---- JSON that stays JSON -----------------------------------------------------------------------

def dumps_json(obj, indent: int | None = None) -> str:
    """json.dumps that never writes NaN or Infinity (which are not JSON).

    A non-finite float is written as null, and a top-level object gains a key "nonfinite" mapping the
    dotted path of each such value to "nan", "inf" or "-inf" (e.g. {"val.loss": "nan"}): strict JSON
    readers can read the file, and nothing is silently lost."""
    found = nonfinite_paths(obj)
    cleaned = _finite(obj)
    if found and isinstance(cleaned, dict):
        cleaned["nonfinite"] = found
    return json.dumps(cleaned, indent=indent, allow_nan=False)


def nonfinite_paths(obj, path: str = "") -> dict[str, str]:
    """{dotted path: "nan" | "inf" | "-inf"} for every non-finite float in nested dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {path: "nan" if obj != obj else ("inf" if obj > 0 else "-inf")}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: dict[str, str] = {}
    for k, v in items:
        found.update(nonfinite_paths(v, f"{path}.{k}" if path else str(k)))
    return found


def _finite(obj):
    """obj with every non-finite float replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
