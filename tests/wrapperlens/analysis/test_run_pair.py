"""The source/target checks of patching: every architecture field and bad token tensor is named."""

import pytest
import torch

from wrapperlens.analysis.run_pair import check_same_architecture, check_tokens, resolve_source
from wrapperlens.models import hooked_transformer

BASE = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=8, d_vocab=10,
            act_fn="gelu", normalization_type="LN", default_prepend_bos=False)  # fmt: skip


def make_model(seed=0, **overrides):
    return hooked_transformer({**BASE, **overrides}, init_seed=seed)


def test_the_source_defaults_to_the_target_run_and_other_weights_are_allowed():
    model, tokens = make_model(), torch.zeros(3, 5, dtype=torch.long)
    source_model, source_tokens = resolve_source(model, tokens, None, None)
    assert source_model is model and source_tokens is tokens
    other = make_model(seed=1)  # same architecture, different weights: a fine-tuned copy
    source_model, source_tokens = resolve_source(model, tokens, other, tokens + 1)
    assert source_model is other and torch.equal(source_tokens, tokens + 1)


@pytest.mark.parametrize(
    "field, value",
    [("d_mlp", 48), ("n_layers", 3), ("n_ctx", 12), ("act_fn", "relu"),
     ("normalization_type", "RMS"), ("attn_only", True)],
)  # fmt: skip
def test_a_different_architecture_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"differ in cfg.{field}"):
        check_same_architecture(make_model(**{field: value}), make_model())


def test_bad_tokens_are_refused_naming_the_tensor():
    model = make_model()
    good = torch.zeros(2, 4, dtype=torch.long)
    for tokens, message in [
        (torch.zeros(2, 4), "must be an integer tensor"),
        (torch.zeros(4, dtype=torch.long), "must be an integer tensor"),
        (torch.zeros(1, 9, dtype=torch.long), "9 positions > n_ctx=8"),
        (torch.full((1, 3), 10), "outside the vocabulary of size 10"),
    ]:
        with pytest.raises(ValueError, match=f"my_tokens .*{message}"):
            check_tokens(tokens, "my_tokens", model)
    with pytest.raises(ValueError, match="source_tokens .* must have the same shape"):
        resolve_source(model, good, None, good[:, :3])
    with pytest.raises(ValueError, match="source_tokens holds ids outside"):
        resolve_source(model, good, None, good + 10)
