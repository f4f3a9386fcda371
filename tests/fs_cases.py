"""Hostile file-system objects for tests: FIFOs, symlink loops, and a guard that fails a test
(instead of hanging the suite) when something blocks on one of them."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def no_hang(seconds: int = 60):
    """Fail if the body blocks for `seconds` (e.g. opening a FIFO that has no writer)."""
    def hung(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make_fifo(path: Path) -> Path:
    """A named pipe at path (replacing a file there)."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def make_symlink_loop(folder: Path) -> Path:
    """loop_a -> loop_b -> loop_a in folder; returns loop_a."""
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    return folder / "loop_a"
