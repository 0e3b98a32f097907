"""Safe, atomic files: safetensors + JSON, never pickle.

The building blocks of every file the project writes (the layout of a run directory is
`wrapperlens.runs`'s business): every write goes to a temporary file in the same directory and is
moved into place with `os.replace`, so a reader (or a resumed run) sees the old file or the new
one, never half of one. Loading refuses, naming the file and the tensor, a missing key, an extra
key, a shape or dtype mismatch (a tensor is never cast on load) or a corrupt file; a
HookedTransformer config round-trips through JSON, and reading one back refuses a missing or
unknown key, a value of the wrong type and a size too large to allocate.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import typing
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
    "check_model_size",
    "check_state_dict",
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
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from e


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


#: Largest size field of a saved model config and largest parameter count (embeddings
#: included): far above any model here, low enough that a corrupted size is refused before
#: anything is allocated (n_layers = 1e15 would otherwise build for ever).
MAX_SIZE = 2**20
MAX_PARAMETERS = 2**36
_SIZE_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab",
                "d_vocab_out", "n_key_value_heads", "rotary_dim", "window_size")
_DTYPES = ("float32", "float64", "float16", "bfloat16")


def check_model_size(source: str, sizes: typing.Mapping[str, Any]) -> None:
    """Refuse a size field outside [1, MAX_SIZE] (None and -1 mean "unset" in TransformerLens)
    or a model of more than MAX_PARAMETERS parameters; the message names `source` and the key."""
    for key in _SIZE_FIELDS:
        value = sizes.get(key)
        if value is None or (value == -1 and key in ("d_vocab_out", "rotary_dim")):
            continue
        if not 1 <= value <= MAX_SIZE:
            raise CheckpointError(f"{source}: {key!r} must be in [1, {MAX_SIZE}], got {value}")
    d_model, d_mlp = sizes.get("d_model") or 0, sizes.get("d_mlp") or 0
    attention = 4 * d_model * (sizes.get("n_heads") or 0) * (sizes.get("d_head") or 0)
    total = (sizes.get("n_layers") or 0) * (attention + 3 * d_model * d_mlp) \
        + d_model * (2 * (sizes.get("d_vocab") or 0) + (sizes.get("n_ctx") or 0))
    if total > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: the config describes {total:.3g} parameters, more "
                              f"than {MAX_PARAMETERS:.3g}; a corrupted size?")


def _json_fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value has the type of a HookedTransformerConfig field (bool is no int)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_json_fits(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if annotation is torch.dtype:
        return value in _DTYPES
    if annotation in (list, typing.List) or origin is list:
        return isinstance(value, list)
    if annotation in (dict, typing.Dict) or origin is dict:
        return isinstance(value, dict)
    return True  # a field type this check does not know: HookedTransformerConfig validates


_saved_keys: frozenset[str] | None = None


def _saved_hooked_keys() -> frozenset[str]:
    """The keys `hooked_config_to_dict` writes (the same for every config)."""
    global _saved_keys
    if _saved_keys is None:
        reference = HookedTransformerConfig(n_layers=1, d_model=4, n_ctx=2, d_head=2,
                                            act_fn="relu", d_vocab=3, device="cpu")
        _saved_keys = frozenset(hooked_config_to_dict(reference))
    return _saved_keys


def hooked_config_from_dict(d: dict[str, Any], source: str = "config") -> HookedTransformerConfig:
    """Inverse of `hooked_config_to_dict`.

    Raises:
        CheckpointError: not a JSON object; an unknown or missing key (a saved config has every
            key: none is defaulted); a value of the wrong type; a size out of bounds
            (`check_model_size`); or a config HookedTransformerConfig refuses. The message
            names `source` and the key.
    """
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(d).__name__}")
    d = dict(d)
    valid = set(HookedTransformerConfig.__dataclass_fields__)
    unknown = sorted(str(k) for k in set(d) - valid)
    if unknown:
        raise CheckpointError(f"{source}: unknown HookedTransformerConfig keys {unknown}")
    missing = sorted(_saved_hooked_keys() - set(d))
    if missing:
        raise CheckpointError(f"{source}: missing HookedTransformerConfig keys {missing}")
    hints = typing.get_type_hints(HookedTransformerConfig)
    for key, value in d.items():
        if not _json_fits(value, hints.get(key, Any)):
            raise CheckpointError(f"{source}: {key!r} has the wrong type ({value!r}; expected "
                                  f"{hints.get(key)})")
    check_model_size(source, d)
    d["dtype"] = getattr(torch, d["dtype"])
    # Derived fields are recomputed in __post_init__; passing stale copies can conflict.
    d.pop("n_params", None)
    d["device"] = "cpu"
    try:
        return HookedTransformerConfig(**d)
    except Exception as e:  # noqa: BLE001 - any refusal of the config names the file
        raise CheckpointError(f"{source}: invalid model config ({type(e).__name__}: {e})") from e


def load_state_dict_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str
) -> None:
    """Load `state` into `model` after `check_state_dict`; errors name `source`."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse `state` unless it has exactly the keys, shapes and dtypes of `model.state_dict()`
    (CheckpointError naming `source` and the tensor)."""
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
        if state[key].dtype != value.dtype:  # load_state_dict would cast it silently
            raise CheckpointError(
                f"{source}: tensor {key!r} is {state[key].dtype} but the model is {value.dtype}"
            )

