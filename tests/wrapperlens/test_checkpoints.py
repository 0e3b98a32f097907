"""Checkpoint files: round trips, corrupt files and mismatched configs are refused by name."""

import json

import pytest
import torch

from wrapperlens.checkpoints import (
    CheckpointError,
    load_tensors,
    save_tensors,
    write_json,
)
from wrapperlens.runs import load_hooked_model, save_hooked_model
from wrapperlens.models import ModelConfig, build_model


def _model(**kw):
    return build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2, **kw), n_ctx=12, d_vocab=10)


def test_round_trip_gives_identical_logits(tmp_path):
    model = _model()
    save_hooked_model(tmp_path, model)
    loaded = load_hooked_model(tmp_path)
    tokens = torch.randint(0, 10, (2, 12))
    torch.testing.assert_close(model(tokens), loaded(tokens), rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_truncated_and_garbage_weights_are_refused_naming_the_file(tmp_path):
    save_hooked_model(tmp_path, _model())
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hooked_model(tmp_path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hooked_model(tmp_path)


def test_config_that_does_not_match_the_weights_is_refused(tmp_path):
    save_hooked_model(tmp_path, _model())
    cfg = json.loads((tmp_path / "model.json").read_text())
    cfg["d_mlp"] = 32  # weights were saved with 4 * 16 = 64
    write_json(tmp_path / "model.json", cfg)
    with pytest.raises(CheckpointError, match=r"model.safetensors.*shape"):
        load_hooked_model(tmp_path)
    cfg["n_layers"] = 2
    write_json(tmp_path / "model.json", cfg)
    with pytest.raises(CheckpointError, match="missing"):
        load_hooked_model(tmp_path)
    (tmp_path / "model.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="model.json"):
        load_hooked_model(tmp_path)


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.ones(3)})

    with pytest.raises(Exception):
        save_tensors(path, {"x": "not a tensor"})  # type: ignore[dict-item]
    assert torch.equal(load_tensors(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]  # no temp files left
