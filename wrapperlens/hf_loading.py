"""Load Hugging Face checkpoints strictly: a missing, unexpected or mis-shaped tensor is an error.

`PreTrainedModel.from_pretrained` is lenient by design: a weight the checkpoint lacks is
initialised at random, a tensor the architecture does not have is dropped, and (with
`ignore_mismatched_sizes=True`) a tensor of the wrong shape is re-initialised. It says so only in
a log message, which is easy to miss or to have silenced. A model imported for analysis has to be
exactly the checkpoint, so `from_pretrained_checked` asks `from_pretrained` for its loading report
(`output_loading_info=True`) and refuses the checkpoint, naming the weights file and every
offending tensor, when the report lists any of them.

Tied weights are not missing: when the config ties the output embedding to the input embedding
(`tie_word_embeddings`), `save_pretrained` writes the input embedding only, and the loading report
does not list the output one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from transformers import PreTrainedModel
from transformers.utils import (CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME,
                                WEIGHTS_INDEX_NAME, WEIGHTS_NAME)

from wrapperlens.checkpoints import CheckpointError

__all__ = ["HF_WEIGHTS_FILES", "hf_weights_source", "from_pretrained_checked"]

# transformers' own names for the files of its model directories (not ours: see wrapperlens.runs)
HF_WEIGHTS_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
"""The weight files of an HF model directory, in the order `from_pretrained` prefers them."""

_SHOWN = 10  # tensors named per category; a wholly wrong checkpoint would list hundreds
M = TypeVar("M", bound=PreTrainedModel)


def hf_weights_source(name_or_path: str | Path) -> str:
    """How errors name the weights of `name_or_path`: the file `from_pretrained` reads from a
    local directory (the directory itself if it has none), else the hub model name."""
    path = Path(name_or_path)
    if path.is_dir():
        for name in HF_WEIGHTS_FILES:
            if (path / name).is_file():
                return str(path / name)
        return str(path)
    return f"hub model {str(name_or_path)!r}"


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{keys[:_SHOWN]}{more}"


def from_pretrained_checked(
    model_class: type[M],
    name_or_path: str | Path,
    *,
    allowed_unexpected: str | None = None,
    **kwargs: Any,
) -> M:
    """`model_class.from_pretrained(name_or_path, **kwargs)`, refusing an inexact checkpoint.

    Args:
        model_class: The HF model class, e.g. `GPTNeoForCausalLM`.
        name_or_path: A local HF model directory or a hub name.
        allowed_unexpected: A regular expression (`re.search`) for checkpoint tensors that may be
            left unused because the model recomputes them from its config (e.g. the causal-mask
            buffers old GPT-Neo checkpoints carry); None: every unused tensor is refused.
        **kwargs: Passed to `from_pretrained` (not `output_loading_info` or
            `ignore_mismatched_sizes`, which this function sets).

    Returns:
        The model, every parameter and persistent buffer read from the checkpoint.

    Raises:
        CheckpointError: a tensor is missing from the checkpoint (and not tied), the checkpoint
            has a tensor the model does not, or a tensor's shape differs from the config's; the
            message names the weights file and the tensors.
    """
    for key in ("output_loading_info", "ignore_mismatched_sizes"):
        if key in kwargs:
            raise TypeError(f"from_pretrained_checked sets {key!r} itself")
    # ignore_mismatched_sizes=True turns a shape mismatch from an error that names no tensor into
    # an entry of the report; the model is refused below either way.
    model, info = model_class.from_pretrained(
        str(name_or_path), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    pattern = re.compile(allowed_unexpected) if allowed_unexpected else None
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(
        k for k in info.get("unexpected_keys", ()) if not (pattern and pattern.search(k))
    )
    mismatched = sorted(info.get("mismatched_keys", ()), key=lambda m: m[0])
    errors = list(info.get("error_msgs", ()))
    if not (missing or unexpected or mismatched or errors):
        return model
    problems = []
    if missing:
        problems.append(
            f"missing tensors {_listed(missing)} (from_pretrained would initialise them at random)"
        )
    if unexpected:
        problems.append(f"unexpected tensors {_listed(unexpected)} (not in the architecture)")
    if mismatched:
        shapes = [f"{k!r} is {tuple(got)}, expected {tuple(want)}" for k, got, want in mismatched]
        problems.append("mis-shaped tensors: " + "; ".join(shapes[:_SHOWN]))
    if errors:
        problems.append(f"load errors {errors[:_SHOWN]}")
    raise CheckpointError(
        f"{hf_weights_source(name_or_path)}: the weights do not match the {model_class.__name__} "
        f"its {CONFIG_NAME} describes: " + "; ".join(problems)
    )
