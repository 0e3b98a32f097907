"""The stage runner of `wrapperlens.stages`: provenance, torch's global generator, reuse/resume."""

import importlib.metadata
import platform
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import torch

import wrapperlens
from tests.helpers import (
    assert_same_weights,
    drawing_from_global_generator,
    tiny_pcfg_spec,
    weights,
)
from wrapperlens.checkpoints import load_tensors
from wrapperlens.config import ConfigError
from wrapperlens.runs import PROVENANCE_KEYS, RunDir, state_dict_hash
from wrapperlens.stages import run_stage, train_or_reuse
from wrapperlens.training import train


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def saved_generator_state(run_dir) -> torch.Tensor:
    return load_tensors(Path(run_dir) / "trainer_state.safetensors")["rng.torch"]


def git_head_of_the_package() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(wrapperlens.__file__).parent, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# ----------------------------------------------------------------------------- provenance
def test_every_stage_writes_every_provenance_field(tmp_path):
    head = git_head_of_the_package()
    parent = None
    for stage in ("pretrain", "finetune", "reft"):
        run_stage(tiny_pcfg_spec(stage, parent=parent), tmp_path / stage, progress=False)
        run = RunDir(tmp_path / stage)
        record = run.provenance()
        assert set(PROVENANCE_KEYS) <= record.keys(), stage
        assert record["stage"] == stage and record["run_id"] == run.run_id()
        # the weights hash is that of the file the run left, read back independently
        assert record["state_dict_sha256"] == state_dict_hash(weights(run.path))
        assert record["torch_version"] == torch.__version__
        assert record["transformer_lens_version"] == importlib.metadata.version("transformer-lens")
        assert record["package_version"] == importlib.metadata.version("wrapperlens")
        assert record["python_version"] == platform.python_version()
        assert datetime.fromisoformat(record["finished_at"]).tzinfo is not None
        if head is not None:  # inside a git checkout
            assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])
            assert record["git_commit"] == head
        parent = run.path
    assert RunDir(tmp_path / "reft").ancestors() == [RunDir(tmp_path / "finetune"),
                                                     RunDir(tmp_path / "pretrain")]


def test_a_killed_run_has_no_provenance_until_it_finishes(tmp_path):
    spec = tiny_pcfg_spec()
    run_stage(spec, tmp_path, progress=False, stop_after=3)
    assert not RunDir(tmp_path).provenance_file.exists()
    run_stage(spec, tmp_path, progress=False, resume=True)
    assert RunDir(tmp_path).provenance()["state_dict_sha256"] == state_dict_hash(weights(tmp_path))


# ------------------------------------------------------------------ torch's global generator
def test_the_saved_generator_state_comes_from_train_seed_not_from_the_caller(tmp_path):
    """Fails on a trainer that saves the caller's (unseeded) generator state."""
    torch.manual_seed(1)
    run_stage(tiny_pcfg_spec(), tmp_path / "a", progress=False)
    torch.manual_seed(2)
    run_stage(tiny_pcfg_spec(), tmp_path / "b", progress=False)
    assert torch.equal(saved_generator_state(tmp_path / "a"), saved_generator_state(tmp_path / "b"))
    run_stage(tiny_pcfg_spec(**{"train.seed": 1}), tmp_path / "c", progress=False)
    assert not torch.equal(saved_generator_state(tmp_path / "a"),
                           saved_generator_state(tmp_path / "c"))


def test_train_leaves_the_callers_generator_as_it_was(tmp_path):
    draws = []
    spec = drawing_from_global_generator(tiny_pcfg_spec(), draws)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(spec.build_model(), spec.train, spec.batch, tmp_path, evaluate=spec.evaluate,
          progress=False)
    assert len(draws) == 6 + 3  # 6 batches, evaluations at 0, 3, 6
    assert torch.equal(torch.get_rng_state(), before)


def test_training_on_cpu_leaves_the_accelerator_generators_alone(tmp_path, monkeypatch):
    """`torch.manual_seed` also reseeds every CUDA / MPS generator (queued until CUDA starts, so
    `fork_rng(devices=[])` cannot restore them): a CPU run must not touch them."""
    spec = tiny_pcfg_spec()
    model = spec.build_model()
    reseeded = []
    for module, name in [(torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"),
                         (torch.mps, "manual_seed")]:
        monkeypatch.setattr(module, name, lambda seed, _n=name: reseeded.append(_n))
    train(model, spec.train, spec.batch, tmp_path, evaluate=spec.evaluate, progress=False)
    assert reseeded == []


def test_draws_from_the_global_generator_repeat_across_runs_and_a_kill_and_resume(tmp_path):
    """What dropout would see: the same numbers in two runs of one seed, whatever the caller's
    generator, and in a run killed between checkpoints and resumed."""
    full, again, killed = [], [], []
    torch.manual_seed(1)
    run_stage(drawing_from_global_generator(tiny_pcfg_spec(), full), tmp_path / "full",
              progress=False)
    torch.manual_seed(2)
    run_stage(drawing_from_global_generator(tiny_pcfg_spec(), again), tmp_path / "again",
              progress=False)
    assert again == full
    assert len(set(v for _, v in full)) == len(full)  # real draws, not a constant

    spec = drawing_from_global_generator(tiny_pcfg_spec(), killed)
    run_stage(spec, tmp_path / "killed", progress=False, stop_after=5)  # last checkpoint: 4
    torch.manual_seed(3)
    run_stage(spec, tmp_path / "killed", progress=False, resume=True)
    expected = dict(full)
    first = [("eval", 0), ("batch", 0), ("batch", 1), ("batch", 2), ("eval", 3), ("batch", 3),
             ("batch", 4)]
    assert [k for k, _ in killed] == first + [("batch", 4), ("batch", 5), ("eval", 6)]
    assert all(value == expected[key] for key, value in killed)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))

    seeded = []
    run_stage(drawing_from_global_generator(tiny_pcfg_spec(**{"train.seed": 7}), seeded),
              tmp_path / "seed7", progress=False)
    assert [v for _, v in seeded] != [v for _, v in full]


# ------------------------------------------------------------------------- train_or_reuse
def test_train_or_reuse_reuses_a_finished_run_without_touching_it(tmp_path):
    spec = tiny_pcfg_spec()
    records, seconds = train_or_reuse(spec, tmp_path, progress=False)
    assert seconds > 0 and [r["step"] for r in records] == [0, 3, 6]
    run = RunDir(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()}
    again, seconds = train_or_reuse(tiny_pcfg_spec(), tmp_path, progress=False)
    assert seconds == 0.0 and again == records
    assert {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()} == mtimes
    # a new run (not a reuse) of the same directory is refused, naming it
    with pytest.raises(ConfigError, match=str(tmp_path)):
        run_stage(spec, tmp_path, progress=False)


def test_train_or_reuse_resumes_a_killed_run_to_the_uninterrupted_weights(tmp_path):
    full, _ = train_or_reuse(tiny_pcfg_spec(), tmp_path / "full", progress=False)
    run_stage(tiny_pcfg_spec(), tmp_path / "killed", progress=False, stop_after=3)
    assert not RunDir(tmp_path / "killed").is_finished(6)
    resumed, seconds = train_or_reuse(tiny_pcfg_spec(), tmp_path / "killed", progress=False)
    assert seconds > 0
    assert without_seconds(resumed) == without_seconds(full)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))
    assert (RunDir(tmp_path / "killed").provenance()["state_dict_sha256"]
            == RunDir(tmp_path / "full").provenance()["state_dict_sha256"])


@pytest.mark.parametrize("stop_after", [None, 3], ids=["finished", "killed"])
def test_train_or_reuse_refuses_a_checkpointed_run_of_other_configs(tmp_path, stop_after):
    run_stage(tiny_pcfg_spec(), tmp_path, progress=False, stop_after=stop_after)
    before = weights(tmp_path)
    with pytest.raises(ConfigError, match=str(tmp_path)):
        train_or_reuse(tiny_pcfg_spec(**{"train.lr": 1e-3}), tmp_path, progress=False)
    assert_same_weights(before, weights(tmp_path))
    assert RunDir(tmp_path).read_config()["train"]["lr"] != 1e-3
