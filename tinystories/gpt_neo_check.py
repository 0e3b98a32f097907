"""The check an HF GPT-Neo directory passes before `from_pretrained` reads it.

`from_pretrained` is lenient: it fills missing config keys with defaults, casts tensors and
accepts NaN weights. `check_gpt_neo_dir` refuses all of that first, naming the file and the key
or tensor (`tinystories.gpt_neo.load_gpt_neo` calls it on every local directory).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import GPTNeoConfig
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

from wrapperlens.checkpoints import CheckpointError, check_model_size, read_json

__all__ = ["check_gpt_neo_dir"]


#: Keys of an HF GPT-Neo `config.json` besides those of `GPTNeoConfig().to_dict()`: written by
#: older transformers versions.
_LEGACY_CONFIG_KEYS = ("gradient_checkpointing", "torch_dtype")
#: Keys that shape the imported model: none may be left to a default.
_REQUIRED_CONFIG_KEYS = ("model_type", "hidden_size", "num_layers", "num_heads", "vocab_size",
                         "max_position_embeddings", "window_size", "attention_types",
                         "activation_function", "layer_norm_epsilon", "intermediate_size")
_NONE_DEFAULTS = {"intermediate_size": int, "pad_token_id": int, "architectures": list,
                  "dtype": str, "torch_dtype": str, "problem_type": str}
_FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def check_gpt_neo_dir(path: Path) -> None:
    """Refuse an HF GPT-Neo directory that `from_pretrained` would read leniently.

    `config.json`: a missing key of `_REQUIRED_CONFIG_KEYS`, an unknown key, a value whose JSON type is not that of `GPTNeoConfig`'s
    default (bool is no int), a size out of bounds (`check_model_size`: a corrupted
    `num_layers` would build for ever) or attention layers that do not match `num_layers`.
    `model.safetensors` (when it is the weights file): a corrupt file, a tensor of another dtype
    than the config's `torch_dtype` (float32 by default; `from_pretrained` would cast it) or a
    NaN / inf.

    Raises:
        CheckpointError: naming the file and the key or tensor.
    """
    config_path = path / CONFIG_NAME
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    defaults = GPTNeoConfig().to_dict()
    unknown = sorted(str(k) for k in config if k not in defaults and k not in _LEGACY_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{config_path}: unknown GPT-Neo config keys {unknown}")
    missing = [k for k in _REQUIRED_CONFIG_KEYS if k not in config]
    if missing:  # from_pretrained would fill in GPTNeoConfig's defaults: another model
        raise CheckpointError(f"{config_path}: missing GPT-Neo config keys {missing}")
    if config.get("model_type") != "gpt_neo":
        raise CheckpointError(f"{config_path}: 'model_type' must be 'gpt_neo', got "
                              f"{config.get('model_type')!r}")
    for key, value in config.items():
        default = defaults.get(key)
        if value is None and key not in _REQUIRED_CONFIG_KEYS:
            ok = True  # unset (bos_token_id of an export without a tokenizer)
        elif default is None:  # None, or a value of the type _NONE_DEFAULTS names
            kind = _NONE_DEFAULTS.get(key, object)
            ok = value is None or (isinstance(value, kind) and not isinstance(value, bool))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise CheckpointError(f"{config_path}: {key!r} has the wrong type ({value!r})")
    sizes = {k: config.get(k, defaults[k]) for k in
             ("hidden_size", "num_layers", "num_heads", "vocab_size", "max_position_embeddings",
              "window_size", "intermediate_size")}
    check_model_size(str(config_path), {
        "n_layers": sizes["num_layers"], "d_model": sizes["hidden_size"],
        "n_heads": sizes["num_heads"], "d_vocab": sizes["vocab_size"],
        "n_ctx": sizes["max_position_embeddings"], "window_size": sizes["window_size"],
        "d_mlp": sizes["intermediate_size"] or 4 * sizes["hidden_size"],
        "d_head": sizes["hidden_size"] // sizes["num_heads"] if sizes["num_heads"] else None,
    })
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise CheckpointError(f"{config_path}: 'hidden_size' {sizes['hidden_size']} is not "
                              f"divisible by 'num_heads' {sizes['num_heads']}")
    try:
        layers = GPTNeoConfig.expand_attention_types_params(
            config.get("attention_types", defaults["attention_types"]))
    except Exception as e:  # noqa: BLE001 - any malformed attention_types names the file
        raise CheckpointError(f"{config_path}: invalid 'attention_types' ({e})") from e
    if len(layers) != sizes["num_layers"] or not all(x in ("global", "local") for x in layers):
        raise CheckpointError(f"{config_path}: 'attention_types' gives the layers "
                              f"{str(layers)[:80]}, not {sizes['num_layers']} of 'global' / "
                              "'local'")
    if "attention_layers" in config and config["attention_layers"] != layers:
        raise CheckpointError(f"{config_path}: 'attention_layers' disagrees with "
                              "'attention_types'")
    weights = path / SAFE_WEIGHTS_NAME
    if not weights.is_file():
        return
    dtype = config.get("torch_dtype", config.get("dtype")) or "float32"
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                kind = f.get_slice(key).get_dtype()
                if _FLOAT_DTYPES.get(kind) != dtype:
                    raise CheckpointError(f"{weights}: tensor {key!r} is {kind}, but "
                                          f"{CONFIG_NAME} says {dtype}")
                if not torch.isfinite(f.get_tensor(key)).all():
                    raise CheckpointError(f"{weights}: tensor {key!r} holds NaN or inf")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: a corrupt file
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({e})") from e
