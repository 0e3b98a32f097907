"""The trainer on the tiny PCFG preset: determinism, kill-and-resume, learning, schedules."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from wrapperlens.checkpoints import load_tensors
from wrapperlens.runs import load_hooked_model
from wrapperlens.experiments.pcfg.stages import load_run, resolve_configs
from wrapperlens.stages import run_stage as run_spec


def run_stage(run, out, **kw):
    """Train a resolved PCFG run through the engine."""
    return run_spec(run.spec(), out, **kw)
from wrapperlens.training import TrainConfig, _make_optimizer, lr_at


def tiny_pretrain(**over):
    return resolve_configs("pretrain", "tiny", overrides={"train.steps": 30, "train.eval_every": 15,
                                                          "train.checkpoint_every": 10,
                                                          "train.eval_samples": 50, **over})


def weights(run_dir):
    return load_tensors(run_dir / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_gives_identical_weights_and_a_new_seed_does_not(tmp_path):
    run_stage(tiny_pretrain(), tmp_path / "a", progress=False)
    run_stage(tiny_pretrain(), tmp_path / "b", progress=False)
    run_stage(tiny_pretrain(**{"task.seed": 1}), tmp_path / "c", progress=False)
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["embed.W_E"], weights(tmp_path / "c")["embed.W_E"])


def test_crash_between_checkpoints_then_resume_equals_uninterrupted_run(tmp_path):
    run_stage(tiny_pretrain(), tmp_path / "full", progress=False)
    run = tiny_pretrain()
    run_stage(run, tmp_path / "crash", progress=False, stop_after=27)  # last checkpoint: 20
    state_step = json.loads(
        (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert state_step == 15
    run_stage(run, tmp_path / "crash", resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "crash"))
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(x) for x in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(full) == strip(resumed)


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_equals_uninterrupted_run(tmp_path):
    """A real kill: SIGKILL the CLI process mid-run (possibly mid-write), then --resume."""
    args = [sys.executable, "-m", "wrapperlens", "pretrain", "--preset", "tiny",
            "--train.steps=100", "--train.checkpoint_every=20", "--train.eval_every=50",
            "--train.eval_samples=100", "--no-progress"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    subprocess.run(args + ["--out", str(tmp_path / "full")], check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "trainer_state.safetensors"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    with safe_open(str(state), framework="pt") as f:
        assert 0 < int(f.metadata()["step"]) < 100
    subprocess.run(args + ["--out", str(tmp_path / "killed"), "--resume"], check=True, env=env,
                   capture_output=True)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))


def test_tiny_model_learns_counting_well_above_chance(tmp_path):
    run = resolve_configs("pretrain", "tiny", overrides={"task.families": "C", "train.steps": 300,
                                                         "train.eval_every": 300})
    _, records = run_stage(run, tmp_path, progress=False)
    final = records[-1]
    # counts in an 8-token window take 9 values; the majority class is ~25 %
    assert final["acc/C_a"] > 0.6, final
    assert records[0]["acc/C_a"] < 0.4


def test_finetune_and_reft_runs_log_the_four_accuracies_and_load_back(tmp_path):
    run_stage(tiny_pretrain(), tmp_path / "pt", progress=False)
    ft = resolve_configs("finetune", "tiny", parent=tmp_path / "pt", eta="L",
                         overrides={"train.steps": 20, "train.eval_every": 10})
    assert ft.train_config.lr == 1e-3  # tiny's η_L, below its pretraining rate 3e-3
    _, records = run_stage(ft, tmp_path / "ft", progress=False)
    assert {"acc/O_PT/cte0", "acc/O_PT/cte1", "acc/O_FT/cte0", "acc/O_FT/cte1"} <= records[-1].keys()
    reft = resolve_configs("reft", "tiny", parent=tmp_path / "ft",
                           overrides={"train.steps": 20})
    _, r_records = run_stage(reft, tmp_path / "reft", progress=False)
    assert [r["step"] for r in r_records][:4] == [0, 1, 2, 5]  # log-spaced evaluation
    loaded_run, model = load_run(tmp_path / "reft")
    assert loaded_run.stage == "reft"
    assert loaded_run.evaluate(model) == pytest.approx(
        {k: v for k, v in r_records[-1].items() if k.startswith("acc/")})
    assert load_hooked_model(tmp_path / "reft").cfg.n_layers == 1


def test_lr_schedule_warmup_cosine_and_constant():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_frac=0.2, min_lr_frac=0.01)
    assert lr_at(cfg, 0) == pytest.approx(1 / 20)
    assert lr_at(cfg, 19) == pytest.approx(1.0)
    assert lr_at(cfg, 20) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_at(cfg, 100) == pytest.approx(0.01)
    assert lr_at(TrainConfig(schedule="constant", lr=0.3), 57) == 0.3


@pytest.mark.parametrize("damage", ["drop_moment", "extra", "reshape", "drop_rng"])
def test_resuming_from_a_damaged_trainer_state_names_the_tensor(tmp_path, damage):
    from safetensors.torch import save_file

    from wrapperlens.checkpoints import CheckpointError

    run = tiny_pretrain(**{"train.steps": 20})
    run_stage(run, tmp_path, progress=False, stop_after=10)
    state = tmp_path / "trainer_state.safetensors"
    with safe_open(str(state), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = "optim.blocks.0.mlp.W_in.exp_avg"
    expected = {"drop_moment": key, "extra": "optim.nope.exp_avg", "reshape": key,
                "drop_rng": "rng.torch"}[damage]
    if damage == "drop_moment":
        del tensors[key]
    elif damage == "extra":
        tensors["optim.nope.exp_avg"] = torch.zeros(2)
    elif damage == "reshape":
        tensors[key] = tensors[key].flatten()[:-1].clone()
    else:
        del tensors["rng.torch"]
    save_file(tensors, str(state), metadata=meta)
    with pytest.raises(CheckpointError, match="nope" if damage == "extra" else expected):
        run_stage(run, tmp_path, resume=True, progress=False)


def test_weight_decay_applies_to_the_linear_maps_weights_only_as_in_mingpt():
    model = tiny_pretrain().new_model()
    opt = _make_optimizer(model, TrainConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: sorted(names[id(p)] for p in g["params"])
                for g in opt.param_groups}
    linear = [f"blocks.0.attn.W_{m}" for m in "KOQV"] + ["blocks.0.mlp.W_in",
                                                         "blocks.0.mlp.W_out", "unembed.W_U"]
    assert by_decay[0.1] == sorted(linear)
    assert by_decay[0.0] == sorted(set(names.values()) - set(linear))
    assert {"embed.W_E", "pos_embed.W_pos", "ln_final.w", "unembed.b_U"} <= set(by_decay[0.0])
