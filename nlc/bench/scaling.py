"""Time and memory against sequence length (titans_lmm and hope; 1k .. 64k tokens).

(a) streaming: a forward pass without gradients over the whole length in pieces of
    `piece` tokens, carrying the state (`model(tokens, state=state)`); seconds, tokens/s
    and "time/len" = (seconds / length) relative to the first length: about 1.0 means
    time linear in length (constant tokens/s).
(b) memory of that streaming run, in a fresh process so that earlier runs leave no trace:
    the peak resident memory while streaming (CPU: Linux's VmHWM, the ru_maxrss figure, reset
    just before; elsewhere ru_maxrss) or torch.cuda.max_memory_allocated (CUDA); "+stream" =
    that peak minus the memory in use before streaming; and the size of the state. Both
    must be flat in length.
(c) training: a whole-sequence (not streamed) forward+backward for lengths up to `train_cap`,
    with its own time/len ratio: linear in length too.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from nlc.bench.build import build, example
from nlc.bench.config import BenchConfig, BenchError
from nlc.bench.report import progress
from nlc.bench.timing import best_time, forward_backward
from nlc.runtime.state import state_bytes

COLUMNS = [["model", "model", ""], ["tokens", "tokens", "d"], ["stream_s", "stream s", ".3f"],
           ["stream_tok_s", "stream tok/s", ".0f"], ["stream_time_ratio", "time/len", ".2f"],
           ["peak_mb", "peak MB", ".1f"], ["stream_mb", "+stream MB", ".1f"], ["state_kb", "state KB", ".1f"],
           ["fwd_bwd_s", "f+b s", ".3f"], ["fwd_bwd_tok_s", "f+b tok/s", ".0f"],
           ["fwd_bwd_time_ratio", "time/len", ".2f"]]


def stream(model, tokens, piece: int):
    """Run the model over tokens in pieces, carrying the state; return the final state."""
    state = model.init_state(tokens.shape[0])
    with torch.no_grad():
        for s in range(0, tokens.shape[1], piece):
            _, state = model(tokens[:, s:s + piece], state=state)
    return state


def _reset_peak(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak RSS (VmHWM, via clear_refs)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak stays the process's peak (ru_maxrss)
        pass


def _memory(device: str) -> tuple[float, float]:
    """(now, peak since the last reset) in MB: CUDA allocations, or resident memory on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def child(request: str) -> None:
    """The fresh process of `streaming_memory`: stream once and print the memory it took as JSON."""
    r = json.loads(request)
    if r["threads"]:
        torch.set_num_threads(r["threads"])
    model = build(r["spec"], r["device"], **r["params"])
    tokens = torch.randint(0, 256, (1, r["length"]), device=r["device"])
    _reset_peak(r["device"])
    before, _ = _memory(r["device"])
    state = stream(model, tokens, r["piece"])
    _, peak = _memory(r["device"])
    print(json.dumps({"peak_mb": peak, "stream_mb": peak - before, "state_kb": state_bytes(state) / 1024}))


def streaming_memory(spec: str, params: dict, length: int, cfg: BenchConfig) -> dict:
    request = json.dumps({"spec": spec, "params": params, "length": length, "piece": cfg.piece,
                          "device": cfg.device, "threads": cfg.threads})
    code = "import sys; from nlc.bench.scaling import child; child(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, request], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the streaming-memory process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def measure_model(name: str, cfg: BenchConfig) -> list[dict]:
    params = {"dim": cfg.scaling_dim, "chunk": cfg.chunk, "layers": cfg.layers}
    model = build(example(name), cfg.device, **params)
    bad = [n for n in (cfg.piece, *cfg.lengths) if n % model.alignment]
    if bad:
        raise BenchError(f"scaling: {name} streams in multiples of {model.alignment} tokens; "
                         f"{bad[0]} is not one (--piece, --lengths)")
    tokens = torch.randint(0, 256, (1, max(cfg.lengths)), device=cfg.device)
    rows = []
    for length in progress(cfg.lengths, f"scaling {name}"):
        row = {"model": name, "tokens": length}
        row["stream_s"] = best_time(lambda: stream(model, tokens[:, :length], cfg.piece), cfg.repeats, cfg.device)
        row.update(streaming_memory(str(example(name)), params, length, cfg))
        if length <= cfg.train_cap:
            row["fwd_bwd_s"] = best_time(lambda: forward_backward(model, tokens[:, :length]), cfg.repeats,
                                         cfg.device)
        rows.append(row)
    for kind in ("stream", "fwd_bwd"):
        timed = [r for r in rows if f"{kind}_s" in r]
        for r in timed:
            r[f"{kind}_tok_s"] = r["tokens"] / r[f"{kind}_s"]
            r[f"{kind}_time_ratio"] = timed[0][f"{kind}_tok_s"] / r[f"{kind}_tok_s"]
    return rows


def run(cfg: BenchConfig) -> dict:
    rows = [r for name in cfg.scaling_models for r in measure_model(name, cfg)]
    notes = [f"streaming: batch 1, pieces of {cfg.piece} tokens, no gradients; f+b: the whole sequence at "
             f"once, lengths up to {cfg.train_cap}",
             "time/len = (seconds / tokens) relative to the first length: ~1.0 is linear in length",
             "memory in a fresh process: " + ("CUDA max_memory_allocated" if cfg.device.startswith("cuda")
                                              else "peak RSS (includes torch itself)") + "; flat in length"]
    return {"title": f"scaling with sequence length (dim {cfg.scaling_dim}, {cfg.layers} layers, "
                     f"chunk {cfg.chunk}, {cfg.device})", "columns": COLUMNS, "rows": rows, "notes": notes}
