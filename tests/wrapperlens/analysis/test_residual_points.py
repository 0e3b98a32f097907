"""Residual vectors at the probe points against TransformerLens's own cache of a full forward."""

import pytest
import torch

from wrapperlens.analysis.residual_points import (
    residual_at_positions,
    residual_hook_names,
    residual_mean_last,
)
from wrapperlens.models import ModelConfig, build_model

VOCAB, SEQ = 12, 6


def test_cached_residuals_equal_transformer_lens_cache_at_per_sample_positions():
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, init_seed=5), n_ctx=SEQ,
                        d_vocab=VOCAB)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (10, SEQ), generator=gen)
    positions = torch.randint(2, SEQ, (10,), generator=gen)
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(10)
    expected = torch.stack([cache[n][rows, positions] for n in residual_hook_names(2)])
    got = residual_at_positions(model, tokens, positions, chunk=3)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(residual_at_positions(model, tokens, -1, points=[1])[0],
                               cache["blocks.0.hook_resid_post"][:, -1])
    lengths = torch.tensor([6, 5, 4, 6, 3, 6, 5, 4, 3, 6])
    mean = residual_mean_last(model, tokens, last_k=2, lengths=lengths, chunk=4)
    for i, n in enumerate(lengths.tolist()):
        window = torch.stack([cache[h][i, n - 2 : n].mean(0) for h in residual_hook_names(2)])
        torch.testing.assert_close(mean[:, i], window)
    with pytest.raises(ValueError, match="last_k"):
        residual_mean_last(model, tokens, last_k=4, lengths=lengths)


def test_probe_points_are_the_embedding_output_then_every_block_output():
    assert residual_hook_names(2) == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
    ]  # fmt: skip
