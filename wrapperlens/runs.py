"""Run directories: the one module that knows their layout.

Every stage of every experiment (PCFG, compiled programs, TinyStories) writes one directory:

| file | written by | holds |
|---|---|---|
| `config.json` | the stage runner, before training | every config that made the run, its stage and `parent` |
| `model.json`, `model.safetensors` | the trainer, at every checkpoint | the TransformerLens config and the latest weights |
| `trainer_state.safetensors` | the trainer, at every checkpoint | weights, optimizer state (AdamW moments or SGD momentum), RNG state and step, in one file |
| `metrics.jsonl` | the trainer, at every evaluation | one JSON record per logged step |
| `provenance.json` | the stage runner, when the run finishes | run id, versions, git commit, hash of the final weights |

`RunDir` opens, writes, checks and links them; no other module spells a file name. A directory
holding only `model.json` + `model.safetensors` is a *model directory* (`load_hooked_model`), so
any analysis can open the output of any trainer without knowing the task that made it.

**Run ids.** `run_id(config)` is a content hash of the canonical JSON of a run's configs, with the
`parent` path replaced by the parent's own run id when it has one, so the id does not depend on
where directories live: two runs of the same configs from the same parent get the same id, and a
sweep can key its runs on it (docs/architecture.md, "Run engine").

**Overwrite rule.** A new run refuses a directory that already holds a checkpointed run; a resumed
run must have exactly the saved configs (`RunDir.write_config`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from wrapperlens.checkpoints import (
    CheckpointError,
    atomic_write,
    hooked_config_from_dict,
    hooked_config_to_dict,
    load_state_dict_checked,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from wrapperlens.config import ConfigError
from wrapperlens.models import hooked_transformer
from wrapperlens.run_records import PROVENANCE_KEYS, check_provenance, parse_metrics

__all__ = [
    "RunDir",
    "run_id",
    "state_dict_hash",
    "read_metrics",
    "save_hooked_model",
    "load_hooked_model",
    "PROVENANCE_KEYS",
]

CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model.json"
MODEL_WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.safetensors"
METRICS_FILE = "metrics.jsonl"
PROVENANCE_FILE = "provenance.json"

# ------------------------------------------------------------------------------- model directories
def save_hooked_model(
    directory: str | os.PathLike, model: HookedTransformer, metadata: dict[str, str] | None = None
) -> None:
    """Write `model.json` and `model.safetensors` for `model` into `directory` (atomic each)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / MODEL_CONFIG_FILE, hooked_config_to_dict(model.cfg))
    save_tensors(directory / MODEL_WEIGHTS_FILE, model.state_dict(), metadata=metadata)


def load_hooked_model(directory: str | os.PathLike) -> HookedTransformer:
    """Rebuild the HookedTransformer saved in `directory` by `save_hooked_model`, in eval mode.

    Raises:
        CheckpointError: a file is missing or corrupt, or the weights do not fit the config
            (a missing, unexpected or mis-shaped tensor); the message names the file and tensor.
    """
    directory = Path(directory)
    cfg_path = directory / MODEL_CONFIG_FILE
    cfg = hooked_config_from_dict(read_json(cfg_path), source=str(cfg_path))
    try:
        model = hooked_transformer(cfg)
    except Exception as e:  # noqa: BLE001 - a config TransformerLens cannot build names the file
        raise CheckpointError(f"{cfg_path}: cannot build the model ({type(e).__name__}: {e})") \
            from e
    RunDir(directory).load_weights_into(model)
    return model.eval()


# ------------------------------------------------------------------------------------- metrics
def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a run's `metrics.jsonl` (pass the file or the run directory), checked
    (`wrapperlens.run_records.parse_metrics`).

    Raises:
        FileNotFoundError: If there is no metrics file.
        CheckpointError (a ValueError): the file is not UTF-8, or a line is not a record; the
            message names the file, the line and the key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics file (is this a run directory?)")
    return parse_metrics(path)


# ----------------------------------------------------------------------------------- provenance
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def as_saved(config: Mapping[str, Any]) -> Any:
    """`config` as it reads back from `config.json` (tuples become lists): what to compare."""
    return json.loads(json.dumps(config))


def run_id(config: Mapping[str, Any]) -> str:
    """Content hash (16 hex digits) of a run's configs: equal configs give equal ids.

    The `parent` entry (a path) is replaced by the parent run's id when the parent directory has
    one, so the id names what was trained, not where it was written.
    """
    keyed = dict(config)
    parent = keyed.get("parent")
    if parent is not None:
        parent_dir = RunDir(parent)
        if parent_dir.provenance_file.is_file():
            keyed["parent"] = {"run_id": parent_dir.provenance()["run_id"]}
    return hashlib.sha256(_canonical(keyed).encode()).hexdigest()[:16]


def state_dict_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_hash(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 of a trainer state: `state_dict_hash` of its tensors and its metadata entries."""
    h = hashlib.sha256(state_dict_hash(tensors).encode())
    h.update(_canonical(dict(metadata)).encode())
    return h.hexdigest()


def _git_commit() -> str | None:
    """The commit of the source tree this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------- RunDir
class RunDir:
    """One run directory: its files, its configs, its metrics, its parent and its weights.

    Args:
        path: The directory (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    # files
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / MODEL_WEIGHTS_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def provenance_file(self) -> Path:
        return self.path / PROVENANCE_FILE

    def exists(self) -> bool:
        """Whether the directory holds a run (its `config.json`)."""
        return self.config_file.is_file()

    def has_checkpoint(self) -> bool:
        """Whether a trainer has checkpointed here (a run to resume or to protect)."""
        return self.state_file.is_file()

    # configs
    def read_config(self) -> dict[str, Any]:
        """The saved `config.json`; a missing or malformed file raises CheckpointError naming it."""
        config = read_json(self.config_file)
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.config_file}: expected a JSON object")
        return config

    def check_config(self, config: Mapping[str, Any], *, resume: bool = False) -> None:
        """Check the overwrite / resume rule without writing anything (every data-parallel rank
        runs it, so all of them stop with the same clear error).

        Raises:
            ConfigError: resuming with configs that differ from the saved ones (the differing
                top-level keys are named), or starting a new run over a checkpointed one.
        """
        config = as_saved(config)
        if resume:
            if not self.has_checkpoint():
                raise ConfigError(f"--resume: {self.path} holds no checkpoint to resume")
            saved = self.read_config()
            if saved != config:
                keys = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise ConfigError(
                    f"--resume: the configs differ from {self.config_file} in {keys}; resume with "
                    "the same preset, --from and overrides (or none: the saved configs are used)"
                )
        elif self.has_checkpoint():
            raise ConfigError(f"{self.path} already holds a run; use --resume or another --out")

    def write_config(self, config: Mapping[str, Any], *, resume: bool = False) -> None:
        """Write `config.json` after `check_config` (a resumed run keeps the saved file)."""
        self.check_config(config, resume=resume)
        if resume:
            return
        # A provenance left by an earlier run (its checkpoint deleted) would describe other
        # weights, and would make this run look finished (`is_finished`) before it is.
        self.provenance_file.unlink(missing_ok=True)
        write_json(self.config_file, as_saved(config))

    def stage(self) -> str | None:
        return self.read_config().get("stage")

    def parent(self) -> RunDir | None:
        """The run this one started from (its config's `parent`), or None.

        A recorded path that holds no run is looked up beside this run too, so a chain of runs
        moved or copied together still links up.
        """
        parent = self.read_config().get("parent")
        if parent is None:
            return None
        recorded, beside = RunDir(parent), RunDir(self.path.parent / Path(parent).name)
        return beside if not recorded.exists() and beside.exists() else recorded

    def ancestors(self) -> list[RunDir]:
        """Parent, grandparent, ... up to the run trained from scratch (or an imported model)."""
        out: list[RunDir] = []
        current = self.parent() if self.exists() else None
        while current is not None:
            if current in out or current == self:
                raise CheckpointError(f"{self.config_file}: the parent links form a cycle")
            out.append(current)
            current = current.parent() if current.exists() else None
        return out

    # metrics
    def metrics(self) -> list[dict]:
        """The records of `metrics.jsonl` (see `read_metrics`)."""
        return read_metrics(self.metrics_file)

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int | None) -> None:
        """Keep the records up to `after_step` (None: drop the file); a resumed run re-logs the
        rest, so a killed run's metrics end exactly like an uninterrupted run's. A file that
        does not read (`read_metrics`) is refused before anything is written."""
        if after_step is None or not self.metrics_file.exists():
            self.metrics_file.unlink(missing_ok=True)
            return
        kept = [r for r in read_metrics(self.metrics_file) if r["step"] <= after_step]
        text = "".join(json.dumps(record) + "\n" for record in kept)  # as append_metrics wrote
        atomic_write(self.metrics_file, lambda tmp: Path(tmp).write_text(text))

    # weights
    def save_model(self, model: HookedTransformer) -> None:
        save_hooked_model(self.path, model)

    def load_model(self) -> HookedTransformer:
        """The latest weights as a HookedTransformer, in eval mode (see `load_hooked_model`)."""
        return load_hooked_model(self.path)

    def load_weights_into(self, model: torch.nn.Module) -> None:
        """Load the latest weights into `model`, checking every tensor's name, shape and dtype,
        and, in a finished run (one with `provenance.json`), their hash against the recorded
        `state_dict_sha256`.

        Raises:
            CheckpointError: a missing, corrupt or mismatching file; the message names it.
        """
        state = load_tensors(self.weights_file)
        if self.provenance_file.is_file():
            recorded = self.provenance()["state_dict_sha256"]
            if state_dict_hash(state) != recorded:
                raise CheckpointError(
                    f"{self.weights_file}: the weights' sha256 differs from the "
                    f"'state_dict_sha256' recorded in {self.provenance_file} (a corrupted or "
                    "replaced weights file)")
        load_state_dict_checked(model, state, source=str(self.weights_file))

    def save_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        """Write `trainer_state.safetensors` with `metadata` and their `state_hash`."""
        save_tensors(self.state_file, tensors,
                     metadata={**metadata, "sha256": state_hash(tensors, metadata)})

    def load_state(self, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors and metadata of `trainer_state.safetensors`, less its `"sha256"` entry.

        A checkpoint written with that entry (`save_state`) is checked against it (`state_hash`),
        so a changed tensor, step or optimizer scalar is refused naming the file; pass
        `verify=False` to check the structure first and call `verify_state` after.
        """
        from safetensors import safe_open

        tensors = load_tensors(self.state_file)
        try:
            with safe_open(str(self.state_file), framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except Exception as e:  # noqa: BLE001 - load_tensors read it, so this is unexpected
            raise CheckpointError(f"{self.state_file}: unreadable metadata ({e})") from e
        self._state_sha256 = metadata.pop("sha256", None)
        if verify:
            self.verify_state(tensors, metadata)
        return tensors, metadata

    def verify_state(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
        """Refuse a trainer state (as `load_state(verify=False)` read it) whose `state_hash`
        differs from the one its file records (CheckpointError naming the file)."""
        recorded = getattr(self, "_state_sha256", None)
        if recorded is not None and recorded != state_hash(tensors, metadata):
            raise CheckpointError(f"{self.state_file}: the tensors or metadata differ from the "
                                  "'sha256' recorded in its metadata (a corrupted checkpoint)")

    # provenance
    def run_id(self) -> str:
        return run_id(self.read_config())

    def provenance(self) -> dict[str, Any]:
        """The saved `provenance.json`.

        Raises:
            CheckpointError: the file is absent or not JSON, lacks a key of `PROVENANCE_KEYS`,
                has a key of neither `PROVENANCE_KEYS` nor `PROVENANCE_EXTRAS`, or a value of
                the wrong type; the message names the file and the key.
        """
        return check_provenance(read_json(self.provenance_file), self.provenance_file)

    def write_provenance(self, model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
        """Record where the finished run came from: run id, versions, commit, weights hash."""
        config = self.read_config()
        record = {
            "run_id": run_id(config),
            "stage": config.get("stage"),
            "package_version": _version("wrapperlens"),
            "git_commit": _git_commit(),
            "torch_version": torch.__version__,
            "transformer_lens_version": _version("transformer-lens"),
            "python_version": platform.python_version(),
            "state_dict_sha256": state_dict_hash(model.state_dict()),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        write_json(self.provenance_file, record)
        return record

    def is_finished(self, steps: int) -> bool:
        """Whether the run completed `steps` steps (last metric record and provenance)."""
        if not (self.metrics_file.is_file() and self.provenance_file.is_file()):
            return False
        records = self.metrics()
        return bool(records) and records[-1]["step"] == steps

