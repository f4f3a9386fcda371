"""The `train`, `eval` and `compare` subcommands (added to `nlc` by `register`).

    nlc train SPEC --task TASK [--steps N --batch B --seq T --lr LR --seed S --device cpu|cuda
              --compile --stream -p NAME=VALUE --data PATH ...] --out runs/NAME [--resume [CKPT]]
              [--optimizer OPTIMIZER_SPEC -o NAME=VALUE ...]
    nlc eval RUN_OR_CHECKPOINT [--task TASK] [--frozen] [--lengths 1k,4k,16k] [--depths ...]
    nlc compare SPEC... --task lm,mqar,niah --budget 300k [-p dim=32] [--match-params first] --out DIR

Exit codes: 0 done, 1 an error (an E6xx diagnostic), 130 stopped by Ctrl-C after saving.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nlc.cli_options import add_size_options, param, size_limits, whole
from nlc.errors import SpecError
from nlc.train.errors import nonfinite_warning


def _spec_param(text: str) -> tuple[str, object]:
    """NAME=VALUE or SPEC.NAME=VALUE (compare: one spec only)."""
    key, sep, value = text.partition("=")
    label, dot, name = key.rpartition(".")
    if not sep or not name.isidentifier() or (dot and not label):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or SPEC.NAME=VALUE, got {text!r}")
    _, v = param(f"{name}={value}")
    return key, v


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _strings(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _tasks(text: str) -> list[str]:
    """"lm,mqar:kv=8,seq=64,niah" -> ["lm", "mqar:kv=8,seq=64", "niah"] (options carry on after commas)."""
    out: list[str] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and out:
            out[-1] += ("," if ":" in out[-1] else ":") + item
        else:
            out.append(item)
    return out


def register(sub) -> None:
    """Add `train`, `eval` and `compare` to an argparse subparsers object."""
    p = sub.add_parser("train", help="train a model spec on a task (checkpoints, resume, metrics)")
    p.add_argument("spec", type=Path, metavar="SPEC")
    p.add_argument("--out", type=Path, required=True, help="the run folder (config.json, metrics.jsonl, checkpoints/)")
    p.add_argument("--task", help="lm (default), mqar, niah, continual, parity, brackets; options as "
                                  "NAME:key=value,... e.g. mqar:kv=16")
    p.add_argument("--data", action="append", metavar="PATH",
                   help="text file or folder (repeatable); default: the Python standard library")
    p.add_argument("-p", "--param", action="append", type=param, default=[], metavar="NAME=VALUE",
                   help="override a spec parameter (repeatable), e.g. -p dim=32")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int, help="tokens a sequence")
    p.add_argument("--optimizer", metavar="OPTIMIZER_SPEC",
                   help="the outer optimizer: an optimizer spec such as examples/m3.nl (default AdamW)")
    p.add_argument("-o", "--optimizer-param", action="append", type=param, default=[], metavar="NAME=VALUE",
                   dest="optimizer_param", help="override a hyper-parameter of --optimizer (repeatable), "
                                                "e.g. -o beta3=0.8")
    p.add_argument("--lr", type=float, help="peak learning rate of the outer optimizer (default: AdamW 3e-3, "
                                             "an optimizer spec its own `lr`)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default min(100, steps/10))")
    p.add_argument("--schedule", choices=["cosine", "constant"])
    p.add_argument("--weight-decay", type=float, dest="weight_decay")
    p.add_argument("--clip", type=float, help="gradient-norm clipping (default 1.0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--stream", action="store_true", default=None,
                   help="lm: read the corpus consecutively and carry the streaming state across steps")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile each block's chunk step (nlc.build(compile=True))")
    p.add_argument("--chunks-per-graph", type=whole, dest="chunks_per_graph", metavar="K",
                   help="with --compile: run K consecutive chunks as one compiled graph (faster steps where "
                        "chunks are small, a longer compile; default 1)")
    p.add_argument("--eval-every", type=int, dest="eval_every", help="validate every N steps (default: at the end)")
    p.add_argument("--eval-batches", type=int, dest="eval_batches")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every", help="checkpoint every N steps (default 100)")
    p.add_argument("--keep", type=int, help="checkpoints kept (default 3)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue the run in --out from its newest checkpoint (or from CKPT)")
    p.add_argument("--init-from", dest="init_from", metavar="RUN_OR_CKPT",
                   help="start from the model weights of another run (its newest checkpoint) or checkpoint, "
                        "with a fresh optimizer and schedule: a curriculum, e.g. short sequences first")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    p.add_argument("--nproc", type=whole, metavar="N",
                   help="train with N processes on this machine (data parallel: torchrun --standalone "
                        "--nproc-per-node N -m nlc train ...; docs/distributed.md)")
    p.add_argument("--dist-timeout", type=float, dest="dist_timeout", metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before it stops with E642 "
                        "(default 600)")
    p.add_argument("--fsdp", action="store_true", default=None,
                   help="under torchrun (or --nproc N): shard parameters, gradients and optimizer state over "
                        "the processes (FSDP2, block by block; docs/distributed.md)")
    add_size_options(p)  # stored in the run: `nlc eval` rebuilds the model with the same limits
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint (perplexity, accuracy, NIAH, continual)")
    p.add_argument("checkpoint", type=Path, metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--task", help="default: the run's task")
    p.add_argument("--frozen", action="store_true", help="no test-time learning: fresh state every segment, "
                                                         "no step-level updates")
    p.add_argument("--data", action="append", metavar="PATH")
    p.add_argument("--lengths", type=_strings, help="NIAH context lengths (default 1k,4k,16k)")
    p.add_argument("--depths", type=_floats, help="NIAH needle depths (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--samples", type=int, default=4, help="NIAH examples a (length, depth) cell")
    p.add_argument("--batches", type=int, default=8, help="batches for accuracy tasks")
    p.add_argument("--tokens", type=int, default=65536, help="tokens of test text (lm, continual)")
    p.add_argument("--seq", type=int, help="tokens a sequence for mqar, parity, brackets (default: the run's)")
    p.add_argument("--segment", type=int, help="tokens a streaming segment (a multiple of the model's alignment)")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--out", type=Path, help="folder for the results (default RUN/eval)")
    p.add_argument("-p", "--param", action="append", type=_spec_param, default=[], metavar="NAME=VALUE",
                   help="evaluate the trained weights with a spec parameter changed (an ablation, e.g. "
                        "-p max_lr=0: no in-context writes); the tensors must still fit")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="train and evaluate several specs with one budget; table and plots")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--task", type=_tasks, default=["lm"],
                   help="comma-separated tasks with their options (default lm), e.g. lm,mqar:kv=8,seq=64,niah")
    p.add_argument("--budget", required=True, help="training tokens a spec and task, e.g. 300k")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("-p", "--param", action="append", type=_spec_param, default=[], metavar="NAME=VALUE",
                   help="override a parameter in every spec that declares it; SPEC.NAME=VALUE: in one spec")
    p.add_argument("--match-params", dest="match_params",
                   help="set each spec's dim to match the parameter count of the first spec ('first'), "
                        "of the spec NAME, or N")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", action="append", metavar="PATH")
    p.add_argument("--niah-lengths", type=_strings, dest="niah_lengths", help="default 512,1k,2k")
    p.add_argument("--niah-depths", type=_floats, dest="niah_depths")
    p.add_argument("--niah-samples", type=int, default=4, dest="niah_samples")
    p.add_argument("--eval-batches", type=int, default=4, dest="eval_batches")
    p.add_argument("--eval-tokens", type=int, default=32768, dest="eval_tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-stream", dest="stream", action="store_false",
                   help="lm: every spec reads random windows (default: specs with online memories train --stream)")
    p.add_argument("--jobs", type=int, default=1,
                   help="train the runs in this many processes (cores / jobs torch threads each unless "
                        "OMP_NUM_THREADS is set); evaluation stays serial")
    p.add_argument("--compile", action="store_true",
                   help="train with each block's chunk step under torch.compile (nlc train --compile): the "
                        "same losses up to float rounding, after about a minute of compiling a run")
    p.add_argument("--chunks-per-graph", type=whole, dest="chunks_per_graph", default=1, metavar="K",
                   help="with --compile: run K consecutive chunks as one compiled graph (nlc train "
                        "--chunks-per-graph; default 1)")
    p.set_defaults(func=cmd_compare)


def cmd_train(args) -> int:
    if args.nproc is not None:
        return launch(args.nproc, getattr(args, "argv", None))
    from nlc.train.loop import train  # torch: imported by the command that needs it, not while `nlc` starts

    options = {k: getattr(args, k) for k in ("task", "steps", "batch", "seq", "lr", "warmup", "schedule",
                                              "weight_decay", "clip", "seed", "stream", "device", "compile",
                                              "chunks_per_graph", "eval_every", "eval_batches", "ckpt_every", "keep", "quiet",
                                              "dist_timeout", "fsdp", "init_from")}
    if args.data:
        options["data"] = args.data
    if args.param:
        options["params"] = dict(args.param)
    if size_limits(args):
        options["limits"] = size_limits(args)
    summary = train(args.spec, args.out, resume=args.resume if args.resume is True else
                    (Path(args.resume) if args.resume else False), optimizer=args.optimizer,
                    optimizer_params=dict(args.optimizer_param), **options)
    if summary["interrupted"]:
        print(f"stopped at step {summary['step']}; saved {summary['checkpoint']}\n"
              f"continue with: nlc train {args.spec} --out {args.out} --resume", file=sys.stderr)
        return 130
    val = summary.get("val", {})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
    print(f"done: {summary['step']} steps, train loss {summary['loss']:.4f}; validation: {shown}\n"
          f"checkpoint {summary['checkpoint']}")
    _warn_nonfinite({"val": val, "continual": summary.get("continual", {})}, f"the validation of run {args.out}")
    return 0


def launch(nproc: int, argv: list[str] | None) -> int:
    """`nlc train ... --nproc N`: the same command under torchrun (torch.distributed.run), N processes
    on this machine (--standalone: a rendezvous on a free local port). Returns torchrun's exit code."""
    import os
    import subprocess

    from nlc.train.errors import train_error

    if os.environ.get("WORLD_SIZE") or argv is None:
        raise train_error("E640", "--nproc starts torchrun, and this process is already one rank of a run "
                          "(or was not started from the command line)",
                          "leave --nproc out under torchrun: torchrun --nproc-per-node N -m nlc train ...")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "nlc", *without_nproc(argv)]
    return subprocess.call(command)


def without_nproc(argv: list[str]) -> list[str]:
    """The command line without its --nproc N (or --nproc=N)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _warn_nonfinite(result: dict, what: str) -> None:
    """Print an E634 warning when an evaluation gave NaN or infinite numbers (they are not silently shown)."""
    warning = nonfinite_warning(result, what)
    if warning is not None:
        print(warning.render(), file=sys.stderr)


def cmd_eval(args) -> int:
    from nlc.train.evaluate import evaluate, report

    result = evaluate(args.checkpoint, task=args.task, frozen=args.frozen, device=args.device,
                      lengths=args.lengths, depths=args.depths, samples=args.samples, batches=args.batches,
                      tokens=args.tokens, segment=args.segment, data=args.data, out=args.out, seq=args.seq,
                      params=dict(args.param))
    print(report(result))
    print("\nwrote " + ", ".join(result["files"]))
    _warn_nonfinite(result, f"the evaluation of {result['checkpoint']} on {result['task']}")
    return 0


def cmd_compare(args) -> int:
    from nlc.train.compare import compare

    results = compare([str(s) for s in args.specs], args.task, args.budget, args.out, batch=args.batch,
                      seq=args.seq, lr=args.lr, seed=args.seed, params=dict(args.param),
                      match_params=args.match_params, device=args.device, niah_lengths=args.niah_lengths,
                      niah_depths=args.niah_depths, niah_samples=args.niah_samples,
                      eval_batches=args.eval_batches, eval_tokens=args.eval_tokens, data=args.data,
                      quiet=args.quiet, stream=args.stream, jobs=args.jobs, compile=args.compile,
                      chunks_per_graph=args.chunks_per_graph)
    print(results["table"])
    print(f"\nwrote {args.out}/compare.md, {args.out}/compare.json and " + ", ".join(results["plots"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlc", description="Train, evaluate and compare nlc models.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run train / eval / compare alone (the `nlc` command registers them too)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` starts itself again
    try:
        return args.func(args)
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is whole)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from nlc.train.dist import exit_process

    exit_process(main())
