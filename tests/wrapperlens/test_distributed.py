"""Data-parallel training: `torchrun --nproc_per_node 2` (gloo, CPU) against one process.

The end-to-end checks launch the real CLI under `torch.distributed.run` and compare it with one
process trained on the same global batch; the fast checks take the loss normalisation and the
row split apart without launching anything.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from wrapperlens import distributed
from wrapperlens.checkpoints import load_tensors
from wrapperlens.experiments.pcfg.stages import resolve_configs
from wrapperlens.runs import RunDir
from wrapperlens.stages import run_stage
from wrapperlens.training import TrainBatch, TrainConfig, masked_loss, train
from wrapperlens.training import _rows_of_this_rank

STEPS = 80
# An odd global batch (rows 17 + 16 on the two ranks): a rank that divided by its own number of
# targets instead of the global one would weight the halves differently and fail the comparison.
OVERRIDES = {"train.steps": STEPS, "train.batch_size": 33, "train.eval_every": 20,
             "train.checkpoint_every": 10, "train.eval_samples": 40}
CLI_ARGS = ["pretrain", "--preset", "tiny", "--device", "cpu", "--no-progress",
            *(f"--{k}={v}" for k, v in OVERRIDES.items())]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

# Two ranks sum each row-half's gradient and then the halves; one process sums all rows at once.
# The float additions happen in another order, so the weights differ in the last bits: measured
# max |difference| 1.2e-7 after 80 steps (weights of magnitude <= ~1), so atol 1e-5 / rtol 1e-4
# leaves two orders of magnitude of margin while a wrongly normalised or unsynchronised update
# (differences ~1e-3 and up) still fails.
ATOL, RTOL = 1e-5, 1e-4
# The key bias is excluded from the weight-by-weight check: adding b_K shifts every score of a
# query by the same q.b_K, which the softmax cancels, so its true gradient is zero and AdamW turns
# the rounding noise of that zero into lr-sized steps (measured |difference| 1.6e-3, in both
# directions). It changes no output, which the logits comparison below checks.
NOISE_ONLY = ("attn.b_K",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port()), "-m", "wrapperlens", *CLI_ARGS,
            "--out", str(out), *extra]


def run_torchrun(out: Path, *extra: str) -> str:
    proc = subprocess.run(torchrun(out, *extra), env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: ppid
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_weights_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if not k.endswith(NOISE_ONLY):
            torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=lambda m: f"{k}: {m}")


def assert_same_function(run_a: RunDir, run_b: RunDir) -> None:
    """Both models give the same logits on a training batch (this covers every weight, b_K too)."""
    tokens = resolve_configs("pretrain", "tiny", overrides=OVERRIDES).batch(STEPS).tokens[:, :-1]
    with torch.no_grad():
        la, lb = run_a.load_model()(tokens), run_b.load_model()(tokens)
    torch.testing.assert_close(la, lb, atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, stdout of the DDP run): root/single trained in this process, root/ddp by torchrun."""
    root = tmp_path_factory.mktemp("ddp")
    run_stage(resolve_configs("pretrain", "tiny", overrides=OVERRIDES).spec(), root / "single",
              progress=False)
    return root, run_torchrun(root / "ddp")


@pytest.mark.slow
def test_two_torchrun_processes_match_one_process_with_the_same_global_batch(trained):
    root, stdout = trained
    single, ddp = RunDir(root / "single"), RunDir(root / "ddp")
    # rank 0 alone writes: the same files as one process, each metric logged once, one report
    assert sorted(p.name for p in ddp.path.iterdir()) == sorted(p.name for p in single.path.iterdir())
    assert stdout.count("pretrain done") == 1, stdout
    assert ddp.read_config() == single.read_config()
    steps = [r["step"] for r in ddp.metrics()]
    assert steps == [r["step"] for r in single.metrics()] == [0, 20, 40, 60, 80]
    for r_ddp, r_one in zip(ddp.metrics(), single.metrics()):
        assert r_ddp.keys() == r_one.keys()
        for key in r_ddp.keys() - {"step", "seconds"}:
            # losses: the summation order again (measured relative difference 8e-8); accuracies
            # are of argmaxes over 40 samples, so allow one sample to flip on a near-tie
            tol = 1 / OVERRIDES["train.eval_samples"] if key.startswith("acc/") else 1e-5
            assert r_ddp[key] == pytest.approx(r_one[key], rel=tol, abs=tol), (r_ddp["step"], key)
    with safe_open(str(ddp.state_file), framework="pt") as f:
        assert int(f.metadata()["step"]) == STEPS
    assert_weights_close(load_tensors(ddp.weights_file), load_tensors(single.weights_file))
    assert_same_function(ddp, single)
    prov_ddp, prov_one = ddp.provenance(), single.provenance()
    assert prov_ddp["world_size"] == 2 and prov_one["world_size"] == 1
    assert prov_ddp["run_id"] == prov_one["run_id"]  # same configs, same run id


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_sigkilled_torchrun_run_resumes_to_the_uninterrupted_result(trained):
    root, _ = trained
    killed = RunDir(root / "killed")
    proc = subprocess.Popen(torchrun(killed.path), env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not killed.state_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, f"torchrun exited ({proc.returncode}) before a checkpoint"
    # torchrun starts each worker in a session of its own, so killing torchrun's process group
    # leaves the workers training to the end (observed); a crashed machine takes all of them.
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
    with safe_open(str(killed.state_file), framework="pt") as f:
        assert 0 < int(f.metadata()["step"]) < STEPS  # killed mid-run, not after it finished
    assert not killed.provenance_file.exists()

    run_torchrun(killed.path, "--resume")
    ddp, single = RunDir(root / "ddp"), RunDir(root / "single")
    # two ranks add two partial sums, and a + b == b + a in floats: DDP runs are bit-identical
    resumed, uninterrupted = load_tensors(killed.weights_file), load_tensors(ddp.weights_file)
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        assert torch.equal(resumed[k], uninterrupted[k]), k
    assert without_seconds(killed.metrics()) == without_seconds(ddp.metrics())
    assert_weights_close(resumed, load_tensors(single.weights_file))
    assert killed.provenance()["world_size"] == 2


# ----------------------------------------------------------------- without launching torchrun
def fake_rank(monkeypatch, rank: int, world: int = 2) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "rank", lambda: rank)


def test_row_shards_with_the_global_target_count_sum_to_the_full_batch_mean(monkeypatch):
    g = torch.Generator().manual_seed(0)
    vocab, rows, seq = 7, 5, 6  # 5 rows: ranks take 3 and 2
    tokens = torch.randint(0, vocab, (rows, seq), generator=g)
    loss_mask = torch.rand(rows, seq - 1, generator=g) < 0.6  # rows hold different counts
    batch = TrainBatch(tokens, loss_mask)
    # a bigram model in float64, so the comparison is exact up to ~1e-15
    weight = torch.randn(vocab, vocab, generator=g, dtype=torch.float64, requires_grad=True)

    full = F.cross_entropy(weight[tokens[:, :-1]][loss_mask], tokens[:, 1:][loss_mask])
    (full_grad,) = torch.autograd.grad(full, weight)

    shards, losses, grads = [], [], []
    for rank in (0, 1):
        fake_rank(monkeypatch, rank)
        mine = _rows_of_this_rank(batch)
        shards.append(mine.tokens)
        loss = masked_loss(weight[mine.tokens[:, :-1]], mine.tokens, mine.loss_mask,
                           n_targets=int(loss_mask.sum()))
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, weight)[0])
    assert torch.equal(shards[0], tokens[0::2]) and torch.equal(shards[1], tokens[1::2])
    torch.testing.assert_close(losses[0] + losses[1], full, atol=0, rtol=1e-12)
    torch.testing.assert_close(grads[0] + grads[1], full_grad, atol=1e-15, rtol=1e-12)
    # each rank's own mean, averaged, is not the global mean when the counts differ
    local = [masked_loss(weight[s[:, :-1]], s, m) for s, m in
             ((tokens[0::2], loss_mask[0::2]), (tokens[1::2], loss_mask[1::2]))]
    assert abs(float(((local[0] + local[1]) / 2 - full).detach())) > 1e-6


def test_a_global_batch_smaller_than_the_world_is_refused(tmp_path, monkeypatch):
    spec = resolve_configs("pretrain", "tiny", overrides={"train.steps": 2}).spec()
    cfg = TrainConfig(steps=2, batch_size=1, lr=1e-3, eval_every=2, checkpoint_every=2)
    fake_rank(monkeypatch, 0)

    def one_row(step: int) -> TrainBatch:
        b = spec.batch(step)
        return TrainBatch(b.tokens[:1], b.loss_mask[:1])

    with pytest.raises(ValueError, match=r"train\.batch_size=1 is smaller than the 2 "
                                         r"data-parallel processes"):
        train(spec.build_model(), cfg, one_row, tmp_path, progress=False)
