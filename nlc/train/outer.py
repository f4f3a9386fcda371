"""The outer optimizer of `nlc train`: AdamW (the default) or any optimizer spec (`--optimizer SPEC`).

    nlc train examples/hope.nl --optimizer examples/m3.nl -o beta3=0.8 --out runs/hope-m3

An optimizer spec is compiled by nlc.optim to a torch.optim.Optimizer over the main parameters
(every trainable parameter except those of CMS step levels, which step with their own rule).
What decides it, its text and its hyper-parameter overrides (`-o NAME=VALUE`), is recorded in
config.json under "optimizer" with its hash; a resume with another optimizer is E622.

The learning-rate schedule (warm-up, cosine decay) drives the parameter groups' `lr`, whichever
optimizer it is. For an optimizer spec the peak is its `lr` hyper-parameter: the spec's default,
`-o lr=X` or `--lr X` (the same thing; both, different, is E633). A spec without an `lr`
hyper-parameter is refused (E633): the schedule would have nothing to drive.

Checkpoints keep whatever state the optimizer keeps for a parameter (`state_dict()`): tensors in
trainer.safetensors, numbers in meta.json. `expected_state` is what that state must look like for
this model, checked before anything is loaded (E622 when it is another optimizer's or model's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nlc.api import read_spec
from nlc.errors import SpecError
from nlc.train.errors import train_error
from nlc.train.identity import spec_identity

ADAMW_BETAS = (0.9, 0.95)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer spec as a run records it: its text, where it came from, its overrides, its hash."""

    text: str
    path: str
    params: dict  # hyper-parameter overrides (`-o`), lr aside: the schedule's peak is TrainConfig.lr
    name: str
    hash: str

    def record(self) -> dict:
        return {"path": self.path, "name": self.name, "hash": self.hash, "text": self.text, "params": self.params}


def split_lr(params: dict, lr_given: float | None) -> tuple[dict, float | None]:
    """(-o overrides without `lr`, the peak lr they and --lr give); E633 when `-o lr` and --lr differ."""
    params = dict(params)
    lr = params.pop("lr", None)
    if lr is not None and lr_given is not None and lr != lr_given:
        raise train_error("E633", f"-o lr={lr} and --lr {lr_given} disagree: both set the peak learning rate "
                          "of the outer optimizer", "pass one of them")
    return params, lr if lr is not None else lr_given


def optimizer_spec(text: str, path: str, params: dict) -> OptimizerSpec:
    """The OptimizerSpec of an optimizer spec text with overrides: E510 for a model spec, E208 for an
    unknown hyper-parameter, the spec's own codes for values that do not fit."""
    import nlc
    from nlc.plan.optimizer import require_optimizer

    require_optimizer(nlc.loads(text, path))  # E510 before the overrides are checked against it
    prog, shash = spec_identity(text, path, params)
    return OptimizerSpec(text=text, path=path, params=dict(params), name=prog.name, hash=shash)


def read_optimizer_spec(path: str, params: dict) -> OptimizerSpec:
    return optimizer_spec(read_spec(path), str(path), params)


def stored_optimizer(config: dict, where) -> OptimizerSpec | None:
    """The optimizer spec a run's config.json records (None: AdamW), checked to give the hash it records
    (E622 naming config.json when it was edited, E626 when the record has the wrong types)."""
    record = config.get("optimizer")
    if record is None:
        return None
    types = {"text": str, "path": str, "name": str, "hash": str, "params": dict}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in types.items()):
        raise train_error("E626", f"{where} is not a run record: `optimizer` is not {{text, path, name, hash, "
                          "params}", "config.json must stay as `nlc train` wrote it")
    try:
        spec = optimizer_spec(record["text"], record["path"], record["params"])
    except SpecError as e:
        d = e.diagnostics[0]
        raise train_error("E622", f"{where} was edited: its optimizer spec no longer compiles ({d.code}: "
                          f"{d.message})", "config.json must stay as `nlc train` wrote it") from None
    if spec.hash != record["hash"] or spec.name != record["name"]:
        raise train_error("E622", f"{where} was edited: its optimizer spec and overrides give hash "
                          f"{spec.hash[:12]}, not the {record['hash'][:12]} it records",
                          "config.json must stay as `nlc train` wrote it")
    return spec


def spec_lr(spec: OptimizerSpec) -> float:
    """The default `lr` of an optimizer spec (with its overrides); E633 when it has no `lr`."""
    from nlc.optim import optimizer_class

    cls = optimizer_class(_program(spec), **spec.params)
    if "lr" not in cls.hyperparameters:
        raise train_error("E633", f"optimizer `{spec.name}` ({spec.path}) has no `lr` hyper-parameter: the "
                          "warm-up and cosine schedule of `nlc train` drives the parameter groups' `lr`",
                          f"declare one, `optimizer {spec.name}(lr = 0.01, ...)`, and use it as the lr of the "
                          "level with `state params`")
    return float(cls([torch.zeros(1, requires_grad=True)], **spec.params).defaults["lr"])


def _program(spec: OptimizerSpec):
    import nlc

    return nlc.loads(spec.text, spec.path, **spec.params)


def build(spec: OptimizerSpec | None, params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The outer optimizer over `params`: AdamW, or the optimizer spec with peak lr `lr`."""
    if spec is None:
        return torch.optim.AdamW(params, lr=lr, betas=ADAMW_BETAS, weight_decay=weight_decay)
    if weight_decay:
        raise train_error("E633", f"--weight-decay is AdamW's; optimizer `{spec.name}` takes its own "
                          "hyper-parameters", "pass -o weight_decay=... if the spec declares it")
    from nlc.optim import optimizer_class

    cls = optimizer_class(_program(spec), **spec.params)
    try:
        return cls(params, **{**spec.params, "lr": lr})
    except ValueError as e:  # the constructor's checks of hyper-parameter values
        raise train_error("E633", f"optimizer `{spec.name}`: {e}", "pass values the spec accepts with -o") from None


def expected_state(opt: torch.optim.Optimizer) -> dict[int, tuple[torch.Tensor, dict[str, object]]]:
    """What the optimizer keeps for each parameter, by state-dict id: (the parameter, {name: a tensor (its
    shape and dtype count) or a number}). Read from a fresh optimizer (one that holds no state yet)."""
    ids = opt.state_dict()["param_groups"]
    out: dict[int, tuple[torch.Tensor, dict[str, object]]] = {}
    for group, own in zip(opt.param_groups, ids):
        for pid, p in zip(own["params"], group["params"]):
            if isinstance(opt, torch.optim.AdamW):
                out[pid] = (p, {"step": 0, "exp_avg": p, "exp_avg_sq": p})
            else:  # an nlc optimizer: its `_init_state` makes the state of a parameter before its first step
                opt._init_state(p, group)
                out[pid] = (p, dict(opt.state.pop(p)))
    return out


def state_misfit(key: str, value, like, param: torch.Tensor) -> str | None:
    """Why a checkpoint's optimizer entry `key` does not fit what the optimizer keeps for `param`
    (`like`: a tensor, or a number such as the step count), or None when it fits."""
    if isinstance(like, torch.Tensor):
        shape, pshape = tuple(like.shape), tuple(param.shape)
        if not isinstance(value, torch.Tensor):
            return f"`{key}` is a number, not a tensor of shape {shape} (its parameter's shape is {pshape})"
        if tuple(value.shape) != shape or value.dtype != like.dtype:
            return (f"`{key}` is a {value.dtype} tensor of shape {tuple(value.shape)}, not the {like.dtype} "
                    f"{shape} this optimizer keeps (its parameter's shape is {pshape})")
        return None
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        return f"the count `{key}` has shape {tuple(value.shape)}"
    return None
