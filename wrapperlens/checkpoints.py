"""Safe, atomic files: safetensors + JSON, never pickle.

The building blocks of every file the project writes (the layout of a run directory is
`wrapperlens.runs`'s business): every write goes to a temporary file in the same directory and is
moved into place with `os.replace`, so a reader (or a resumed run) sees the old file or the new
one, never half of one. Loading refuses, naming the file and the tensor, a missing key, an extra
key, a shape mismatch or a corrupt file; a HookedTransformer config round-trips through JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformerConfig


__all__ = [
    "CheckpointError",
    "atomic_write",
    "write_json",
    "read_json",
    "save_tensors",
    "load_tensors",
    "hooked_config_to_dict",
    "hooked_config_from_dict",
    "load_state_dict_checked",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match its config."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` atomically.

    The temporary file lives in the target directory (so `os.replace` is a rename on one
    filesystem) and is removed if `write` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises `CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save tensors as safetensors, atomically (tensors are made contiguous CPU copies)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file raises `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e


def hooked_config_to_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """The JSON-serialisable fields of a HookedTransformerConfig (dtype as a string, no device)."""
    out: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if key in ("device", "n_devices", "tokenizer_name_or_path_override"):
            continue
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        try:
            json.dumps(value)
        except TypeError:
            continue  # derived or runtime-only fields; HookedTransformerConfig recomputes them
        out[key] = value
    return out


def hooked_config_from_dict(d: dict[str, Any], source: str = "config") -> HookedTransformerConfig:
    """Inverse of `hooked_config_to_dict`; unknown keys raise `CheckpointError` naming them."""
    d = dict(d)
    if isinstance(d.get("dtype"), str):
        d["dtype"] = getattr(torch, d["dtype"])
    valid = set(HookedTransformerConfig.__dataclass_fields__)
    unknown = sorted(set(d) - valid)
    if unknown:
        raise CheckpointError(f"{source}: unknown HookedTransformerConfig keys {unknown}")
    # Derived fields are recomputed in __post_init__; passing stale copies can conflict.
    d.pop("n_params", None)
    d["device"] = "cpu"
    try:
        return HookedTransformerConfig(**d)
    except (TypeError, ValueError, AssertionError) as e:
        raise CheckpointError(f"{source}: invalid model config ({e})") from e


def load_state_dict_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str
) -> None:
    """Load `state` into `model` after checking every key and shape; errors name `source`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source}: weights do not match the model config"
            + (f"; missing {missing[:5]}" if missing else "")
            + (f"; unexpected {extra[:5]}" if extra else "")
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)} but the config "
                f"expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)

