"""Throughput of whole models, forward and forward+backward tokens/s.

Table 1: for titans_lmm and hope at a small config, the reference interpreter (on a
shorter sequence: it runs token by token), the generated code eager and compiled
(nlc.build(compile=True), when compile is on).
Table 2: hope, titans_lmm and the transformer at equal parameter count: each spec's `dim`
is chosen (nlc.train.compare.match_dim) so that its parameter count is the closest it gets
to hope's at the base dim; eager and compiled.
Table 3: the cost of a CMS that learns in context (issue #14): hope (CMS levels every N optimiser
steps: plain MLPs in the forward) against hope_tokens (CMS levels learning from the model's loss
every chunk, 4 chunks and 16 chunks of tokens), and hope_tokens with that learning switched off
(`learn_from_loss = False`: the chunk-major run alone), so the table says where the time goes.
"""

from __future__ import annotations

import torch

from nlc.bench.build import build, example, modes
from nlc.bench.config import BenchConfig
from nlc.bench.report import progress
from nlc.bench.timing import throughput
from nlc.train.compare import match_dim, parameter_count

COLUMNS = [["model", "model", ""], ["variant", "variant", ""], ["tokens", "tokens", "d"],
           ["fwd_tok_s", "fwd tok/s", ".0f"], ["fwd_bwd_tok_s", "f+b tok/s", ".0f"]]
MATCHED_COLUMNS = [["model", "model", ""], ["dim", "dim", "d"], ["params", "params", ",d"],
                   ["eager_fwd_tok_s", "eager fwd tok/s", ".0f"], ["eager_fwd_bwd_tok_s", "eager f+b tok/s", ".0f"],
                   ["compiled_fwd_tok_s", "compiled fwd tok/s", ".0f"],
                   ["compiled_fwd_bwd_tok_s", "compiled f+b tok/s", ".0f"]]


def tokens_per_s(model, seq: int, cfg: BenchConfig) -> dict:
    """{fwd_tok_s, fwd_bwd_tok_s} of a model on a random batch."""
    tokens = torch.randint(0, 256, (cfg.batch, seq), device=cfg.device)
    return dict(zip(("fwd_tok_s", "fwd_bwd_tok_s"), throughput(model, tokens, cfg.repeats, cfg.device)))


def backends(cfg: BenchConfig) -> list[tuple[str, dict, int]]:
    """(variant, build options, sequence length) of table 1."""
    return [("reference", {"backend": "reference"}, cfg.ref_seq)] + [
        (f"generated {label}", {"compiled": compiled}, cfg.models_seq) for label, compiled in modes(cfg)]


def throughput_table(cfg: BenchConfig) -> dict:
    params = {"dim": cfg.models_dim, "chunk": cfg.chunk, "layers": cfg.layers}
    rows = []
    for name, (variant, options, seq) in progress([(n, b) for n in cfg.models for b in backends(cfg)], "models"):
        model = build(example(name), cfg.device, **options, **params)
        rows.append({"model": name, "variant": variant, "tokens": cfg.batch * seq, **tokens_per_s(model, seq, cfg)})
    return {"title": f"reference vs generated: tokens/s (dim {cfg.models_dim}, {cfg.layers} layers, chunk "
                     f"{cfg.chunk}, batch {cfg.batch}, {cfg.device})",
            "columns": COLUMNS, "rows": rows, "notes": []}


def matched_dims(cfg: BenchConfig) -> list[tuple[str, int, int]]:
    """(spec, dim, parameter count) with every count matched to the first spec's at the base dim."""
    base, *others = cfg.matched
    params = {"layers": cfg.layers}
    target = parameter_count(str(example(base)), {**params, "dim": cfg.models_dim})
    return [(base, cfg.models_dim, target)] + [(name, *match_dim(str(example(name)), params, target))
                                               for name in others]


def matched_table(cfg: BenchConfig) -> dict:
    rows = []
    for name, dim, count in progress(matched_dims(cfg), "models (equal parameters)"):
        row = {"model": name, "dim": dim, "params": count}
        for label, compiled in modes(cfg):
            model = build(example(name), cfg.device, compiled, dim=dim, layers=cfg.layers)
            row.update({f"{label}_{k}": v for k, v in tokens_per_s(model, cfg.models_seq, cfg).items()})
        rows.append(row)
    columns = [c for c in MATCHED_COLUMNS if cfg.compile or not c[0].startswith("compiled")]
    return {"title": f"equal parameter count ({cfg.matched[0]} at dim {cfg.models_dim}, {cfg.layers} layers): "
                     f"tokens/s (batch {cfg.batch}, seq {cfg.models_seq}, {cfg.device})",
            "columns": columns, "rows": rows, "notes": []}


CMS_COLUMNS = [["variant", "variant", ""], ["fwd_tok_s", "fwd tok/s", ".0f"], ["fwd_bwd_tok_s", "f+b tok/s", ".0f"],
               ["fwd_ratio", "fwd / hope", ".2f"], ["fwd_bwd_ratio", "f+b / hope", ".2f"]]


def cms_table(cfg: BenchConfig) -> dict:
    """hope (CMS in steps) vs hope_tokens (CMS in tokens), learning on and off, eager, side by side."""
    params = {"dim": cfg.models_dim, "chunk": cfg.chunk, "layers": cfg.layers}
    periods = {"cms_fast": cfg.chunk, "cms_mid": 4 * cfg.chunk, "cms_slow": 16 * cfg.chunk}
    variants = [("hope: CMS every N steps", "hope", {}, True),
                ("hope_tokens: CMS learns in context", "hope_tokens", periods, True),
                ("hope_tokens, learning off (chunk-major only)", "hope_tokens", periods, False)]
    rows = []
    for label, name, extra, learn in progress(variants, "models (CMS in tokens)"):
        model = build(example(name), cfg.device, **params, **extra)
        if not learn:
            model.learn_from_loss = False
        rows.append({"variant": label, **tokens_per_s(model, cfg.models_seq, cfg)})
    for row in rows:
        for k in ("fwd", "fwd_bwd"):
            row[f"{k}_ratio"] = row[f"{k}_tok_s"] / rows[0][f"{k}_tok_s"]
    return {"title": f"CMS in tokens vs in steps: tokens/s (dim {cfg.models_dim}, {cfg.layers} layers, chunk "
                     f"{cfg.chunk}, CMS every {cfg.chunk}/{4 * cfg.chunk}/{16 * cfg.chunk} tokens, batch {cfg.batch}, "
                     f"seq {cfg.models_seq}, {cfg.device}, eager)",
            "columns": CMS_COLUMNS, "rows": rows,
            "notes": ["a level steps only on full periods: at this seq the slower CMS levels may not step at all",
                      "learning off: the same chunk-major forward without the loss levels' gradients and steps"]}


def run(cfg: BenchConfig) -> dict:
    return {**throughput_table(cfg), "extra_tables": [matched_table(cfg), cms_table(cfg)]}
