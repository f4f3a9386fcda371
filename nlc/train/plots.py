"""Figures for runs, evaluations and comparisons (matplotlib, Agg backend: no display needed).

    loss_curves         training loss against tokens seen, one line per model
    niah_heatmaps       NIAH exact-match accuracy by context length (rows) and needle depth
                        (columns), one panel per model; each cell also shows, in brackets, the
                        fraction of answer digits right (chance 0.1)
    forgetting_curves   continual learning: loss on every domain after each domain, one panel
                        per model (a line that rises after its own domain is forgetting)

Every figure is written atomically (PNG, or any format matplotlib knows from the suffix).
"""

from __future__ import annotations

import io
from pathlib import Path

from nlc.files import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _smooth(ys: list[float], weight: float) -> list[float]:
    out, m = [], None
    for y in ys:
        m = y if m is None else weight * m + (1 - weight) * y
        out.append(m)
    return out


def loss_curves(curves: dict[str, list[tuple[float, float]]], path: str | Path, title: str = "training loss",
                xlabel: str = "tokens", ylabel: str = "loss (nats/byte)", smooth: float = 0.8) -> Path:
    """One line per label: (x, loss) points, lightly smoothed (the raw points shown faintly)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (label, pts) in enumerate(curves.items()):
        if not pts:
            continue
        xs, ys = zip(*pts)
        color = f"C{i}"
        ax.plot(xs, ys, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(xs, _smooth(list(ys), smooth), color=color, label=label, linewidth=1.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def niah_heatmaps(results: dict[str, dict], path: str | Path, title: str | None = None) -> Path:
    """Panels of accuracy grids: results[label] has "grid" [lengths][depths], "lengths", "depths"."""
    plt = _plt()
    n = max(1, len(results))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 1.2, 3.4), squeeze=False, constrained_layout=True)
    im = None
    for k, (ax, (label, r)) in enumerate(zip(axes[0], results.items())):
        grid = r["grid"]
        digits = r.get("digit_grid")
        im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(r["depths"])), [f"{d:g}" for d in r["depths"]])
        ax.set_yticks(range(len(r["lengths"])), [_length(L) for L in r["lengths"]])
        ax.set_xlabel("needle depth")
        if k == 0:
            ax.set_ylabel("context length (tokens)")
        ax.set_title(f"{label} ({r.get('variant', 'single')})", fontsize=10)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                text = f"{v:.2f}" + (f"\n({digits[i][j]:.2f})" if digits else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="exact match (digits right)", shrink=0.9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _length(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def mqar_by_pairs(results: dict[str, list[tuple[int, float]]], path: str | Path,
                  title: str = "MQAR: recall against the number of pairs") -> Path:
    """One line per label: answer accuracy at each number of key-value pairs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (label, pts) in enumerate(results.items()):
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=label, linewidth=1.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("key-value pairs in the context")
    ax.set_ylabel("answer accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if results:
        ax.legend()
    return _save(fig, path)


def forgetting_curves(results: dict[str, dict], path: str | Path, title: str | None = None) -> Path:
    """Panels, one per model: loss on each domain (a line) after training on each domain in turn.

    results[label] has "names" and "matrix" (row i: losses after domain i), optionally "before".
    """
    plt = _plt()
    n = max(1, len(results))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True, constrained_layout=True)
    for ax, (label, r) in zip(axes[0], results.items()):
        names, matrix = r["names"], r["matrix"]
        rows = ([r["before"]] if r.get("before") else []) + matrix
        ticks = (["before"] if r.get("before") else []) + [f"after\n{x}" for x in names]
        for j, name in enumerate(names):
            ax.plot(range(len(rows)), [row[j] for row in rows], marker="o", label=name)
        ax.set_xticks(range(len(rows)), ticks, fontsize=7)
        ax.set_title(f"{label}: forgetting {r.get('avg_forgetting', 0):.3f}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss on domain (nats/byte)")
    axes[0][-1].legend(fontsize=7, title="domain")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


continual_matrices = forgetting_curves
