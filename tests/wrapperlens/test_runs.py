"""RunDir (the run-directory layout), run ids and the weights hash of `wrapperlens.runs`."""

import hashlib
import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import tiny_pcfg_spec
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import ConfigError
from wrapperlens.models import hooked_transformer
from wrapperlens.runs import RunDir, read_metrics, run_id, state_dict_hash
from wrapperlens.stages import run_stage

CONFIG = {"stage": "pretrain", "parent": None, "task": {"seed": 0, "families": ["C", "I"]},
          "train": {"lr": 1e-3, "steps": 5}}


def checkpointed(path, config=CONFIG) -> RunDir:
    """A run directory as a trainer leaves it after its first checkpoint."""
    run = RunDir(path)
    run.write_config(config)
    run.save_state({"rng.torch": torch.get_rng_state()}, {"step": "2"})
    return run


def tiny_model(seed=0):
    return hooked_transformer(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                   n_ctx=8, d_vocab=11, act_fn="gelu"), init_seed=seed)


# ------------------------------------------------------------------------------ configs
def test_write_config_refuses_to_overwrite_a_checkpointed_run_and_names_the_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(CONFIG)
    other = {**CONFIG, "train": {"lr": 3e-3, "steps": 5}}
    run.write_config(other)  # nothing trained yet: a new run may take the directory
    assert run.read_config() == other
    checkpointed(run.path)
    with pytest.raises(ConfigError, match=str(run.path)):
        run.write_config(other)
    assert run.read_config() == CONFIG  # untouched


def test_resume_refuses_differing_configs_and_names_the_differing_keys(tmp_path):
    run = checkpointed(tmp_path / "run")
    changed = {**CONFIG, "train": {"lr": 3e-3, "steps": 5}, "finetune": {"family": "C"}}
    with pytest.raises(ConfigError, match=r"\['finetune', 'train'\]") as info:
        run.write_config(changed, resume=True)
    assert "'task'" not in str(info.value) and str(run.config_file) in str(info.value)
    # the same configs resume, also when they come as tuples (saved as JSON lists)
    run.write_config({**CONFIG, "task": {"seed": 0, "families": ("C", "I")}}, resume=True)
    assert run.read_config() == CONFIG
    with pytest.raises(ConfigError, match="no checkpoint"):
        RunDir(tmp_path / "empty").write_config(CONFIG, resume=True)


def test_a_new_run_drops_the_provenance_of_an_earlier_run(tmp_path):
    """A finished run whose checkpoint was deleted (to save space) may be replaced, but its
    provenance must not stay behind: it would name other weights and mark the new run finished."""
    run = RunDir(tmp_path / "run")
    run_stage(tiny_pcfg_spec(), run, progress=False)
    run.state_file.unlink()
    run_stage(tiny_pcfg_spec(**{"train.lr": 1e-3}), run, progress=False, stop_after=3)
    assert not run.provenance_file.exists() and not run.is_finished(6)


@pytest.mark.parametrize("content, message", [
    (None, "file not found"), ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
])
def test_read_config_of_a_missing_or_garbage_file_names_the_file(tmp_path, content, message):
    run = RunDir(tmp_path / "run")
    if content is not None:
        run.path.mkdir()
        run.config_file.write_text(content)
    with pytest.raises(CheckpointError, match=message) as info:
        run.read_config()
    assert str(run.config_file) in str(info.value)


# ---------------------------------------------------------------------------- ancestors
def test_ancestors_follow_parent_links_and_a_cycle_is_refused(tmp_path):
    pt, ft, reft = (RunDir(tmp_path / n) for n in ("pt", "ft", "reft"))
    pt.write_config({"stage": "pretrain", "parent": None})
    ft.write_config({"stage": "finetune", "parent": str(pt.path)})
    reft.write_config({"stage": "reft", "parent": str(ft.path)})
    assert reft.ancestors() == [ft, pt]
    assert reft.parent() == ft and ft.parent() == pt and pt.parent() is None
    assert pt.ancestors() == [] and reft.stage() == "reft"
    # a relative spelling of the same directory is the same run
    assert RunDir(tmp_path / "ft" / ".." / "pt") == pt

    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    a.write_config({"stage": "finetune", "parent": str(b.path)})
    b.write_config({"stage": "finetune", "parent": str(a.path)})
    with pytest.raises(CheckpointError, match="cycle"):
        a.ancestors()
    c = RunDir(tmp_path / "c")
    c.write_config({"stage": "finetune", "parent": str(c.path)})
    with pytest.raises(CheckpointError, match="cycle"):
        c.ancestors()


# ------------------------------------------------------------------------------ metrics
def test_metrics_truncation_keeps_records_up_to_a_step_and_drops_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in range(6):
        run.append_metrics({"step": step, "loss": 1.0 / (step + 1)})
    with open(run.metrics_file, "a") as f:
        f.write('{"step": 6, "loss": 0.1')  # killed mid-write
    assert [r["step"] for r in run.metrics()] == list(range(6))  # the torn line is ignored
    run.truncate_metrics(3)
    assert [r["step"] for r in read_metrics(run.path)] == [0, 1, 2, 3]
    assert run.metrics()[2] == {"step": 2, "loss": 1.0 / 3}
    run.truncate_metrics(10)  # nothing past the torn line was kept, nothing is invented
    assert run.metrics_file.read_text().count("\n") == 4
    run.truncate_metrics(None)
    assert not run.metrics_file.exists()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        run.metrics()


def test_metrics_refuse_a_torn_line_before_the_last_and_a_record_without_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1, "lo\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"line 2 is not JSON"):
        read_metrics(path)
    path.write_text('{"step": 0}\n{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"line 2 has no integer 'step'"):
        read_metrics(path)


# ------------------------------------------------------------------------------ weights
def test_load_model_round_trip_and_a_missing_or_misshaped_tensor_is_named(tmp_path):
    model = tiny_model()
    run = RunDir(tmp_path / "run")
    run.save_model(model)
    loaded = run.load_model()
    assert not loaded.training
    assert loaded.cfg.to_dict() | {"device": None} == model.cfg.to_dict() | {"device": None}
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    tokens = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    model.eval()
    assert torch.equal(loaded(tokens), model(tokens))

    tensors = load_file(str(run.weights_file))
    del tensors["blocks.0.mlp.W_in"]
    save_file(tensors, str(run.weights_file))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing.*blocks\.0\.mlp\.W_in"):
        run.load_model()
    tensors["blocks.0.mlp.W_in"] = torch.zeros(16, 31)
    save_file(tensors, str(run.weights_file))
    with pytest.raises(CheckpointError, match=r"'blocks\.0\.mlp\.W_in' has shape \(16, 31\)"):
        run.load_model()


# ------------------------------------------------------------------------ weights hash
_SAFETENSORS_DTYPES = {"F32": "torch.float32", "F64": "torch.float64", "F16": "torch.float16",
                       "BF16": "torch.bfloat16", "I64": "torch.int64", "I32": "torch.int32",
                       "BOOL": "torch.bool", "U8": "torch.uint8"}


def hash_of_safetensors_file(path) -> str:
    """The documented weights hash (SHA-256 over `name|dtype|shape|` and the raw bytes, sorted by
    name), computed from the file's own bytes, without torch: 8-byte header length, JSON header
    with each tensor's dtype, shape and byte range, then the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n :]
    h = hashlib.sha256()
    for name in sorted(header):
        entry = header[name]
        begin, end = entry["data_offsets"]
        h.update(f"{name}|{_SAFETENSORS_DTYPES[entry['dtype']]}|{tuple(entry['shape'])}|".encode())
        h.update(data[begin:end])
    return h.hexdigest()


def test_state_dict_hash_matches_an_independent_hash_of_the_saved_file(tmp_path):
    model = tiny_model()
    RunDir(tmp_path).save_model(model)
    expected = hash_of_safetensors_file(tmp_path / "model.safetensors")
    assert state_dict_hash(model.state_dict()) == expected


def test_state_dict_hash_equal_weights_equal_hash_one_element_changed_differs():
    a, b = tiny_model(seed=0).state_dict(), tiny_model(seed=0).state_dict()
    assert state_dict_hash(a) == state_dict_hash(b)
    assert state_dict_hash(dict(reversed(list(a.items())))) == state_dict_hash(a)  # order-free
    changed = {k: v.clone() for k, v in a.items()}
    changed["blocks.0.attn.W_Q"][1, 0, 3] += 1e-6
    assert state_dict_hash(changed) != state_dict_hash(a)
    renamed = {("x." + k if k == "embed.W_E" else k): v for k, v in a.items()}
    assert state_dict_hash(renamed) != state_dict_hash(a)
    reshaped = {k: (v.reshape(-1) if k == "embed.W_E" else v) for k, v in a.items()}
    assert state_dict_hash(reshaped) != state_dict_hash(a)
    assert state_dict_hash(tiny_model(seed=1).state_dict()) != state_dict_hash(a)


# ------------------------------------------------------------------------------ run ids
def test_run_id_is_a_content_hash_of_the_configs():
    same = json.loads(json.dumps(CONFIG), object_pairs_hook=lambda kv: dict(reversed(kv)))
    assert run_id(same) == run_id(CONFIG)  # key order does not matter
    assert run_id({**CONFIG, "train": {"lr": 3e-3, "steps": 5}}) != run_id(CONFIG)
    assert len(run_id(CONFIG)) == 16 and int(run_id(CONFIG), 16) >= 0


def test_runs_of_the_same_configs_get_the_same_run_id_and_a_changed_value_a_new_one(tmp_path):
    specs = {"a": tiny_pcfg_spec(), "b": tiny_pcfg_spec(),
             "lr": tiny_pcfg_spec(**{"train.lr": 1e-3}), "seed": tiny_pcfg_spec(**{"task.seed": 1})}
    ids = {}
    for name, spec in specs.items():
        run_stage(spec, tmp_path / name, progress=False)
        ids[name] = RunDir(tmp_path / name).provenance()["run_id"]
        assert ids[name] == spec.run_id == RunDir(tmp_path / name).run_id()
    assert ids["a"] == ids["b"]
    assert len({ids["a"], ids["lr"], ids["seed"]}) == 3

    # a fine-tune names its parent by content, not by path
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "copy_of_a")
    ft_ids = {}
    for name, parent in [("ft_a", tmp_path / "a"), ("ft_b", tmp_path / "b"),
                         ("ft_copy", tmp_path / "elsewhere" / "copy_of_a"),
                         ("ft_lr", tmp_path / "lr")]:
        run_stage(tiny_pcfg_spec("finetune", parent=parent), tmp_path / name, progress=False)
        ft_ids[name] = RunDir(tmp_path / name).provenance()["run_id"]
        assert RunDir(tmp_path / name).read_config()["parent"] == str(parent)
    assert ft_ids["ft_a"] == ft_ids["ft_b"] == ft_ids["ft_copy"]
    # the parent differs only in train.lr, which a fine-tune does not inherit: the two fine-tunes'
    # own configs are equal up to the parent path, and only the parent's content tells them apart
    def own(name):
        return {k: v for k, v in RunDir(tmp_path / name).read_config().items() if k != "parent"}

    assert own("ft_lr") == own("ft_a")
    assert ft_ids["ft_lr"] != ft_ids["ft_a"]
    assert ft_ids["ft_a"] not in ids.values()
