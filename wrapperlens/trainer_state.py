"""The trainer's checkpoint: model, optimizer state and RNG in `trainer_state.safetensors`.

`save_trainer_state` writes the model's weights, the optimizer's per-parameter state (AdamW's
moments and step counts, SGD's momentum buffers) and torch's generator state with the step;
`load_trainer_state` restores them for a resume, checking everything before changing anything
(so a refused checkpoint leaves the model, the optimizer and `metrics.jsonl` as they were).
"""

from __future__ import annotations

import json
import math

import torch
from transformer_lens import HookedTransformer

from wrapperlens.checkpoints import CheckpointError, check_state_dict
from wrapperlens.runs import RunDir

__all__ = ["STATE_KEYS", "save_trainer_state", "load_trainer_state"]


def save_trainer_state(run: RunDir, model: HookedTransformer, opt: torch.optim.Optimizer,
                       step: int) -> None:
    """Write the model, the optimizer state and the RNG state at `step` (atomically)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    scalars: dict[str, float] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p)
            if not state:
                continue
            name = names[id(p)]
            for key, value in state.items():
                if key == "step":  # AdamW's per-parameter step count
                    scalars[name] = float(value)
                elif value is not None:  # SGD's momentum_buffer is None before its first step
                    tensors[f"optim.{name}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    run.save_state(tensors, {"step": str(step), "optimizer_steps": json.dumps(scalars)})
    run.save_model(model)


#: The state tensors each optimizer keeps per parameter (what a checkpoint must hold).
STATE_KEYS = {"adamw": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


def load_trainer_state(run: RunDir, model: HookedTransformer, opt: torch.optim.Optimizer,
                       optimizer: str, steps: int) -> int:
    """Restore the model, optimizer and RNG from `trainer_state.safetensors`; returns its step.

    Everything is checked before anything is changed (the caller truncates `metrics.jsonl`
    only after this returns): the step is an integer in [0, `steps`], every tensor has the
    name, shape and dtype of what it restores, and the optimizer scalars are finite numbers.

    Raises:
        CheckpointError: naming the file and the key or tensor.
    """
    tensors, meta = run.load_state(verify=False)  # named structural errors first, hash last
    path = run.state_file
    if "step" not in meta or "optimizer_steps" not in meta:
        raise CheckpointError(f"{path}: metadata lacks the step / optimizer state")
    unknown_meta = sorted(set(meta) - {"step", "optimizer_steps"})
    if unknown_meta:
        raise CheckpointError(f"{path}: unknown metadata keys {unknown_meta}")
    if not meta["step"].isascii() or not meta["step"].isdigit() or int(meta["step"]) > steps:
        raise CheckpointError(f"{path}: metadata 'step' must be an integer in [0, {steps}] "
                              f"(train.steps), got {meta['step']!r}")
    step = int(meta["step"])
    try:
        scalars = json.loads(meta["optimizer_steps"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: metadata 'optimizer_steps' is not JSON ({e})") from e
    if not isinstance(scalars, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0 for v in scalars.values()):
        raise CheckpointError(f"{path}: metadata 'optimizer_steps' must map parameter names to "
                              f"finite step counts, got {meta['optimizer_steps'][:80]!r}")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dict(model, model_state, source=str(path))
    params = dict(model.named_parameters())
    keys = STATE_KEYS[optimizer]
    optim_names = {k[len("optim."):].rsplit(".", 1)[0] for k in tensors if k.startswith("optim.")}
    unknown = sorted((set(scalars) | optim_names) - set(params))
    other = sorted(k for k in tensors if not k.startswith(("model.", "optim.")) and k != "rng.torch")
    foreign = sorted(k for k in tensors if k.startswith("optim.") and k.rsplit(".", 1)[1] not in keys)
    if unknown or other or foreign:
        raise CheckpointError(f"{path}: unexpected tensors {(unknown + other + foreign)[:5]} "
                              f"(train.optimizer is {optimizer!r})")
    if optimizer == "adamw" and sorted(scalars) != sorted(optim_names):
        raise CheckpointError(f"{path}: metadata 'optimizer_steps' names "
                              f"{sorted(set(scalars) ^ optim_names)[:5]} without (or only) their "
                              "moment tensors")
    states = {}
    for name in sorted(set(scalars) | optim_names):
        p = params[name]
        try:
            state = {k: tensors[f"optim.{name}.{k}"] for k in keys}
            if optimizer == "adamw":
                state["step"] = torch.tensor(float(scalars[name]))
        except KeyError as e:
            raise CheckpointError(f"{path}: missing optimizer state {e} of {name!r}") from e
        for key in keys:
            if state[key].shape != p.shape or state[key].dtype != p.dtype:
                raise CheckpointError(f"{path}: tensor 'optim.{name}.{key}' is "
                                      f"{state[key].dtype} {tuple(state[key].shape)} but "
                                      f"{name!r} is {p.dtype} {tuple(p.shape)}")
            state[key] = state[key].to(p.device)
        states[p] = state
    rng = tensors.get("rng.torch")
    if rng is None:
        raise CheckpointError(f"{path}: missing tensor 'rng.torch' (the generator state)")
    expected_rng = torch.get_rng_state()
    if rng.dtype != expected_rng.dtype or rng.shape != expected_rng.shape:
        raise CheckpointError(f"{path}: tensor 'rng.torch' is {rng.dtype} {tuple(rng.shape)}, "
                              f"not a generator state ({expected_rng.dtype} "
                              f"{tuple(expected_rng.shape)})")
    run.verify_state(tensors, meta)
    # Every check passed: change the model, optimizer and generator.
    model.load_state_dict(model_state, strict=True)
    opt.state.update(states)
    torch.set_rng_state(rng)
    return step
