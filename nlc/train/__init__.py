"""Training, evaluation and comparison of nlc models (DESIGN.md section 3, `nlc/train/`).

    data.py        byte tokenizer; the stdlib corpus and user text, split by file hash
    tasks.py       language modelling and synthetic tasks (MQAR, NIAH, continual, parity, brackets)
    checkpoint.py  safetensors checkpoints, written atomically and verified when read
    loop.py        `nlc train`: the training loop (CMS step levels, resume, Ctrl-C, NaN stops)
    evaluate.py    `nlc eval`: perplexity, accuracy, NIAH heat-maps, continual-learning tables
    compare.py     `nlc compare`: several specs, one budget, a markdown table and plots
    plots.py       matplotlib (Agg) figures
    cli.py         the `train`, `eval` and `compare` subcommands

Every problem a user can cause (bad data, a damaged checkpoint, a checkpoint of another
spec, an unaligned streaming length, a diverging run) is an nlc.SpecError with an E6xx code.
"""

from nlc.train.errors import train_error

__all__ = ["train_error"]
