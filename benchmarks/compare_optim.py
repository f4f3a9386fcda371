#!/usr/bin/env python3
"""Compare optimizers on one small byte-level language model (CPU, a few minutes).

The same tiny causal transformer (written here, plain torch: nlc's model code
generation is not involved) is trained from the same initial weights on the same
batches of the Python standard library's own source text (the `.py` files under
`sysconfig.get_paths()["stdlib"]`, read in sorted order, split 95/5 into train
and validation bytes) with:

    adamw           torch.optim.AdamW                      (the baseline)
    adam            examples/adam.nl                       (nlc; torch.optim.Adam step for step)
    muon            examples/muon.nl                       (nlc; momentum + Newton-Schulz)
    m3              examples/m3.nl                         (nlc; NL Algorithm 1)
    delta_momentum  examples/delta_momentum.nl             (nlc; NL eqs. 48-49)
    dmgd            examples/dmgd.nl                       (nlc; deep momentum, an MLP read-out)

Muon and M3 are given the transformer blocks' weight matrices, and torch AdamW
(lr 3e-3) the embedding, output head, gains and biases, as Muon is normally used
(--no-hybrid gives them every parameter: M3 divides by sqrt(V) + eps entry by
entry after orthogonalising, so embedding rows that never get a gradient take
steps of size lr / eps). The other optimizers get every parameter. Each
optimizer has one learning rate. With `--tune` (the
default) the learning rate is the best of a small grid (3 or 4 values) on a
short run of `--tune-steps` steps, judged by the mean training loss of its last
quarter; then each optimizer trains for `--steps` steps. The table reports the
final training loss (mean of the last 10% of steps), the validation loss at the
end, steps per second (the optimizer's step included) and the chosen lr; a
loss-curve PNG and a JSON file go to --out (default benchmarks/results/).

    python benchmarks/compare_optim.py                       # about 3 minutes on 2 CPU cores
    python benchmarks/compare_optim.py --steps 200 --no-tune --only adamw,m3
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlc.optim import build_optimizer  # noqa: E402

EXAMPLES = ROOT / "examples"

AUX_LR = 3e-3  # AdamW's lr for the parameters Muon and M3 leave to it (embeddings, head, gains, biases)


class Pair:
    """Two optimizers stepped together (Muon's usual setup: hidden matrices / everything else)."""

    def __init__(self, *opts):
        self.opts = opts

    def step(self):
        for o in self.opts:
            o.step()

    def zero_grad(self, set_to_none: bool = True):
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)


def hidden_matrices(model) -> tuple[list, list]:
    """(2-D weights inside the transformer blocks, every other parameter)."""
    inner = [p for b in model.blocks for p in b.parameters() if p.dim() == 2]
    ids = {id(p) for p in inner}
    return inner, [p for p in model.parameters() if id(p) not in ids]


def nlc_opt(spec: str, **fixed):
    return lambda model, lr: build_optimizer(EXAMPLES / f"{spec}.nl", model.parameters(), lr=lr, **fixed)


def matrices_only(spec: str, **fixed):
    """The nlc optimizer on the blocks' matrices, torch AdamW (lr AUX_LR) on the rest."""

    def make(model, lr):
        inner, rest = hidden_matrices(model)
        return Pair(build_optimizer(EXAMPLES / f"{spec}.nl", inner, lr=lr, **fixed),
                    torch.optim.AdamW(rest, lr=AUX_LR, weight_decay=0.01))

    return make


# name -> (build(model, lr), learning-rate grid; its middle value is used with --no-tune)
OPTIMIZERS = {
    "adamw": (lambda model, lr: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01),
              [3e-3, 1e-2, 3e-2]),
    "adam": (nlc_opt("adam"), [3e-3, 1e-2, 3e-2]),
    "muon": (matrices_only("muon"), [1e-2, 3e-2, 1e-1]),
    "m3": (matrices_only("m3"), [3e-6, 1e-5, 3e-5, 1e-4]),
    "delta_momentum": (nlc_opt("delta_momentum"), [1e-2, 2e-2, 3e-2, 5e-2]),
    "dmgd": (nlc_opt("dmgd", inner_lr=1e-4), [0.1, 0.3, 1.0]),
}
ALL_PARAMS = {"muon": nlc_opt("muon"), "m3": nlc_opt("m3")}  # --no-hybrid


# ---- data: the standard library's source, as bytes ---------------------------------------------


def corpus(max_bytes: int) -> torch.Tensor:
    """The first `max_bytes` bytes of the stdlib's .py files, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    data = b"".join(chunks)[:max_bytes]
    if len(data) < 10_000:
        raise SystemExit(f"found only {len(data)} bytes of Python source under {root}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


class Batches:
    """Random windows of `seq + 1` bytes from a fixed seed: every optimizer sees the same batches."""

    def __init__(self, data: torch.Tensor, batch: int, seq: int, seed: int):
        self.data, self.batch, self.seq = data, batch, seq
        self.gen = torch.Generator().manual_seed(seed)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.data) - self.seq - 1, (self.batch,), generator=self.gen)
        window = torch.stack([self.data[s: s + self.seq + 1] for s in starts.tolist()])
        return window[:, :-1], window[:, 1:]


# ---- model: a tiny causal transformer ------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, D))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class TinyLM(nn.Module):
    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, seq: int = 64):
        super().__init__()
        self.embed = nn.Embedding(256, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 256, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def lm_loss(model, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))


# ---- training ---------------------------------------------------------------------------------------


def train(name: str, lr: float, steps: int, data, val, args, progress: bool) -> dict:
    torch.manual_seed(args.seed)
    model = TinyLM(args.dim, args.layers, args.heads, args.seq)
    make = ALL_PARAMS[name] if name in ALL_PARAMS and not args.hybrid else OPTIMIZERS[name][0]
    opt = make(model, lr)
    batches = Batches(data, args.batch, args.seq, args.seed + 1)
    losses = []
    bar = _progress(steps, f"{name} lr={lr:g}") if progress else None
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if not math.isfinite(losses[-1]):
            break
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    return {"optimizer": name, "lr": lr, "steps": len(losses), "losses": losses,
            "final_loss": sum(tail) / len(tail), "val_loss": evaluate(model, val, args),
            "steps_per_s": len(losses) / seconds, "seconds": seconds, "diverged": not math.isfinite(losses[-1])}


@torch.no_grad()
def evaluate(model, val: torch.Tensor, args) -> float:
    batches = Batches(val, 32, args.seq, 12345)
    total = [lm_loss(model, *next(batches)).item() for _ in range(args.val_batches)]
    return sum(total) / len(total)


def tune(name: str, data, val, args) -> tuple[float, dict]:
    grid = OPTIMIZERS[name][1]
    scores = {}
    for lr in grid:
        r = train(name, lr, args.tune_steps, data, val, args, progress=False)
        tail = r["losses"][-max(1, len(r["losses"]) // 4):]
        scores[lr] = sum(tail) / len(tail) if not r["diverged"] else float("inf")
    best = min(grid, key=lambda lr: (scores[lr], lr))
    return best, scores


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        ls = r["losses"]
        w = max(1, len(ls) // 50)
        smooth = [sum(ls[max(0, i - w + 1): i + 1]) / len(ls[max(0, i - w + 1): i + 1]) for i in range(len(ls))]
        ax.plot(range(1, len(ls) + 1), smooth, label=f"{r['optimizer']} (lr {r['lr']:g})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (nats/byte, moving mean of {max(1, len(results[0]['losses']) // 50)})")
    ax.set_title(title)
    ax.set_ylim(top=min(6.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="training steps per optimizer")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                   help="pick each optimizer's lr from its grid on a short run first")
    p.add_argument("--tune-steps", type=int, default=100)
    p.add_argument("--only", default=",".join(OPTIMIZERS), help="comma-separated optimizers")
    p.add_argument("--hybrid", action=argparse.BooleanOptionalAction, default=True,
                   help="Muon and M3 on the blocks' matrices, AdamW on the rest (as Muon is used); "
                        "--no-hybrid gives them every parameter")
    p.add_argument("--lr", action="append", default=[], metavar="NAME=LR", help="fix an optimizer's lr")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--bytes", type=int, default=2_000_000, help="bytes of stdlib source to use")
    p.add_argument("--val-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: steady timings on a shared machine; 0: torch's default)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        p.error(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}")
    fixed = {}
    for item in args.lr:
        n, _, v = item.partition("=")
        fixed[n] = float(v)

    text = corpus(args.bytes)
    cut = int(len(text) * 0.95)
    data, val = text[:cut], text[cut:]
    print(f"data: {len(text):,} bytes of stdlib source ({sysconfig.get_paths()['stdlib']}); "
          f"model: {sum(p.numel() for p in TinyLM(args.dim, args.layers, args.heads, args.seq).parameters()):,} "
          f"parameters; {args.steps} steps of {args.batch} x {args.seq} bytes; {torch.get_num_threads()} threads",
          file=sys.stderr)

    results, tuning = [], {}
    for name in names:
        if name in fixed:
            lr = fixed[name]
        elif args.tune:
            lr, scores = tune(name, data, val, args)
            tuning[name] = {f"{k:g}": v for k, v in scores.items()}
        else:
            grid = OPTIMIZERS[name][1]
            lr = grid[len(grid) // 2]
        results.append(train(name, lr, args.steps, data, val, args, progress=True))

    header = f"{'optimizer':<16}{'lr':>9}{'final loss':>12}{'val loss':>10}{'steps/s':>10}"
    lines = [header, "-" * len(header)]
    for r in results:
        flag = "  (diverged)" if r["diverged"] else ""
        lines.append(f"{r['optimizer']:<16}{r['lr']:>9g}{r['final_loss']:>12.3f}{r['val_loss']:>10.3f}"
                     f"{r['steps_per_s']:>10.1f}{flag}")
    print("\n".join(lines))

    args.out.mkdir(parents=True, exist_ok=True)
    png, js = args.out / "compare_optim.png", args.out / "compare_optim.json"
    plot(results, png, f"byte-level LM on stdlib source: {args.steps} steps, CPU")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    js.write_text(json.dumps({"config": config, "torch": torch.__version__, "machine": platform.platform(),
                              "threads": torch.get_num_threads(), "tuning": tuning, "results": results}, indent=1))
    print(f"wrote {png} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
