"""Sweeps: many jobs, each run once, locally (one process per job) or as Ray tasks.

A sweep is a list of `Job`s. A job names a function by import path (`"pkg.module:function"`),
its JSON arguments and the jobs it waits for; the function runs in a worker process and returns
a JSON value. A training job's function trains one stage into the directory of its run id
(`wrapperlens.runs.run_id`) with `wrapperlens.stages.train_or_reuse`, so a finished run is never
recomputed and a killed one resumes from its last checkpoint; an argument written
`{"$value": KEY}` is replaced by the value job KEY returned (e.g. the directory of the parent
run), so a child names its parent before the parent has run.

    jobs = [Job("pt", "wrapperlens.experiments.pcfg.grid:train_job", {...}),
            Job("ft", "wrapperlens.experiments.pcfg.grid:train_job", {"parent": {"$value": "pt"}, ...},
                after=("pt",))]
    outcomes = run_sweep(jobs, "out/jobs", LocalExecutor(workers=2))

`run_sweep` starts every job whose dependencies finished, as many at once as the executor has
workers, and writes each outcome to `JOBS_DIR/<key>.json` as soon as it is known. A job that
raises is recorded as "failed" with its error and traceback, the jobs that depend on it as
"skipped", and every other job still runs. Run again, a sweep reruns failed and unfinished jobs
only: a job whose recorded outcome is "finished" with the same target and arguments is not
started again (a training job would only find its run finished anyway).

Executors (`make_executor`):

- `InlineExecutor`: one job at a time in this process (debugging, tests).
- `LocalExecutor`: a pool of `workers` processes (default: one per core), each with
  `threads` torch threads. Fine-tuning outcomes move with float summation order, so the thread
  count is part of a result's provenance: the default is one thread per job, which is also the
  fastest use of a small CPU (two one-thread jobs on two cores train twice as fast as one job
  on both).
- `RayExecutor`: the same jobs as Ray tasks (`pip install wrapperlens[ray]`), on a local Ray
  instance or the cluster at `address`; every node must see the output directory at the same
  path (a shared filesystem) and have wrapperlens installed.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import math
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrapperlens.checkpoints import CheckpointError, read_json, write_json
from wrapperlens.config import ConfigError

__all__ = [
    "Job",
    "Outcome",
    "InlineExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "run_sweep",
    "recorded_outcomes",
    "execute",
]

#: Outcome statuses. "skipped": a job it depends on did not finish.
STATUSES = ("finished", "failed", "skipped")


@dataclass(frozen=True)
class Job:
    """One unit of a sweep.

    Attributes:
        key: Stable, unique name ("finetune/C/prior=L/c_tr=1/eta=M/seed=0"); names its outcome
            file, so it may hold letters, digits and `/ = . _ + -` only.
        target: `"package.module:function"`, called as `function(**args)` in a worker.
        args: JSON-serialisable keyword arguments; `{"$value": KEY}` stands for job KEY's value.
        after: Keys of the jobs that must finish first.
    """

    key: str
    target: str
    args: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.=+\-]+(/[A-Za-z0-9_.=+\-]+)*", self.key):
            raise ValueError(f"job key {self.key!r}: use letters, digits and / = . _ + - only")
        if ":" not in self.target:
            raise ValueError(f"job {self.key}: target {self.target!r} is not 'module:function'")
        object.__setattr__(self, "after", tuple(self.after))


@dataclass(frozen=True)
class Outcome:
    """What became of a job: its status, its value (finished) or its error (failed, skipped)."""

    key: str
    status: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    def to_json(self, job: Job) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "value": self.value, "error": self.error,
                "seconds": self.seconds, "target": job.target, "args": dict(job.args)}


def _resolve_args(args: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    def sub(v: Any) -> Any:
        if isinstance(v, Mapping) and set(v) == {"$value"}:
            return values[v["$value"]]
        if isinstance(v, Mapping):
            return {k: sub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v
    return {k: sub(v) for k, v in args.items()}


def execute(target: str, args: Mapping[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Run one job's function (in a worker); never raises: failures come back as data."""
    start = time.perf_counter()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        module, name = target.split(":")
        function: Any = importlib.import_module(module)
        for attribute in name.split("."):  # "module:function" or "module:Class.method"
            function = getattr(function, attribute)
        value = function(**args)
        return {"status": "finished", "value": value, "seconds": time.perf_counter() - start}
    except Exception as e:  # noqa: BLE001 - a failed job is recorded, the sweep goes on
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        return {"status": "failed", "error": error, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------- executors
class InlineExecutor:
    """Runs each job at once, in this process."""

    workers = 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def submit(self, target: str, args: Mapping[str, Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(execute(target, args, self.threads))
        return future

    def wait_any(self, pending: Iterable[Any]) -> list[Any]:
        return list(pending)  # all done already

    def result(self, handle: Any) -> dict[str, Any]:
        return handle.result()

    def close(self) -> None:
        pass


class LocalExecutor(InlineExecutor):
    """A pool of `workers` processes (spawned, so no state is inherited), `threads` each."""

    def __init__(self, workers: int | None = None, threads: int | None = 1) -> None:
        super().__init__(threads)
        self.workers = workers or os.cpu_count() or 1
        self._pool = cf.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, target: str, args: Mapping[str, Any]) -> cf.Future:
        return self._pool.submit(execute, target, dict(args), self.threads)

    def wait_any(self, pending: Iterable[Any]) -> list[Any]:
        done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
        return list(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Jobs as Ray tasks of `threads` CPUs each; `address` None starts (or joins) a local Ray."""

    def __init__(self, address: str | None = None, threads: int = 1, workers: int | None = None):
        try:
            import ray
        except ImportError as e:
            raise ConfigError(
                "--executor ray needs Ray: pip install 'wrapperlens[ray]'"
            ) from e
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=workers if address is None else None,
                     include_dashboard=False, log_to_driver=False)
        self.threads = threads
        self.workers = workers or int(ray.cluster_resources().get("CPU", 1)) // threads
        self._task = ray.remote(num_cpus=threads)(execute)

    def submit(self, target: str, args: Mapping[str, Any]) -> Any:
        return self._task.remote(target, dict(args), self.threads)

    def wait_any(self, pending: Iterable[Any]) -> list[Any]:
        done, _ = self._ray.wait(list(pending), num_returns=1)
        return done

    def result(self, handle: Any) -> dict[str, Any]:
        return self._ray.get(handle)

    def close(self) -> None:
        pass  # the caller owns the Ray instance (ray.shutdown())


def make_executor(name: str = "local", *, workers: int | None = None, threads: int = 1,
                  address: str | None = None) -> InlineExecutor | RayExecutor:
    """"inline", "local" or "ray" (see the module docstring)."""
    if name == "inline":
        return InlineExecutor(threads)
    if name == "local":
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(address, threads, workers)
    raise ConfigError(f"--executor {name!r}: expected local, ray or inline")


# ------------------------------------------------------------------------------------ sweep
def _check_graph(jobs: Sequence[Job]) -> dict[str, Job]:
    by_key: dict[str, Job] = {}
    for job in jobs:
        if job.key in by_key:
            raise ValueError(f"two jobs share the key {job.key!r}")
        by_key[job.key] = job
    for job in jobs:
        unknown = [k for k in job.after if k not in by_key]
        if unknown:
            raise ValueError(f"job {job.key} waits for unknown jobs {unknown}")
    return by_key


def _outcome_file(jobs_dir: Path, key: str) -> Path:
    return jobs_dir / f"{key}.json"


#: The keys of an outcome file (`Outcome.to_json`).
OUTCOME_KEYS = ("key", "status", "value", "error", "seconds", "target", "args")


def _read_outcome(path: Path, key: str) -> dict[str, Any]:
    """The outcome recorded in `path` for job `key`, checked against what `Outcome.to_json`
    writes (its `value` is the job's own JSON and is not checked).

    Raises:
        CheckpointError: the file is not JSON, lacks or adds a key, or has a value of the wrong
            type or another job's key; the message names the file and the key.
    """
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    missing = [k for k in OUTCOME_KEYS if k not in saved]
    unknown = sorted(str(k) for k in saved if k not in OUTCOME_KEYS)
    if missing or unknown:
        raise CheckpointError(f"{path}: " + "; ".join(
            ([f"missing keys {missing}"] if missing else [])
            + ([f"unknown keys {unknown}"] if unknown else [])))
    seconds = saved["seconds"]
    checks = {
        "key": saved["key"] == key,
        "status": saved["status"] in STATUSES,
        "error": (saved["error"] is None) if saved["status"] == "finished"
        else isinstance(saved["error"], str),
        "seconds": isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        and math.isfinite(seconds) and seconds >= 0,
        "target": isinstance(saved["target"], str),
        "args": isinstance(saved["args"], dict),
    }
    for name, ok in checks.items():
        if not ok:
            raise CheckpointError(f"{path}: invalid {name!r} {saved[name]!r}"
                                  + (f" (job {key!r})" if name == "key" else ""))
    return saved


def _recorded(jobs_dir: Path, job: Job) -> Outcome | None:
    """The finished outcome recorded for this very job (same target and args), if any."""
    path = _outcome_file(jobs_dir, job.key)
    if not path.exists():
        return None
    saved = _read_outcome(path, job.key)
    if saved["status"] != "finished" or saved["target"] != job.target:
        return None
    if saved["args"] != json.loads(json.dumps(dict(job.args))):  # tuples read back as lists
        return None
    return Outcome(job.key, "finished", saved["value"], None, saved["seconds"])


def recorded_outcomes(jobs: Sequence[Job], jobs_dir: str | os.PathLike) -> dict[str, Outcome]:
    """The outcomes recorded in `jobs_dir` for `jobs` (any status; jobs never run are absent)."""
    out = {}
    for job in jobs:
        path = _outcome_file(Path(jobs_dir), job.key)
        if path.exists():
            saved = _read_outcome(path, job.key)
            out[job.key] = Outcome(job.key, saved["status"], saved["value"], saved["error"],
                                   saved["seconds"])
    return out


def run_sweep(
    jobs: Sequence[Job],
    jobs_dir: str | os.PathLike,
    executor: InlineExecutor | RayExecutor,
    *,
    common: Mapping[str, Any] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Run `jobs` (dependencies first, up to `executor.workers` at once); returns every outcome.

    Each outcome is written to `jobs_dir/<key>.json` as soon as it is known, so an interrupted
    sweep keeps what finished; `on_outcome` is called with each (a progress bar). `common`
    keyword arguments go to every job without being part of what it is (the output directory,
    the device): a sweep moved elsewhere, or continued on a GPU, keeps its finished jobs.
    """
    by_key = _check_graph(jobs)
    jobs_dir = Path(jobs_dir)
    outcomes: dict[str, Outcome] = {}
    running: dict[Any, Job] = {}
    started_keys: set[str] = set()  # submitted to the executor (running or done)

    def record(outcome: Outcome, write: bool = True) -> None:
        outcomes[outcome.key] = outcome
        if write:
            write_json(_outcome_file(jobs_dir, outcome.key), outcome.to_json(by_key[outcome.key]))
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        while len(outcomes) < len(by_key):
            started = False
            for job in jobs:
                if job.key in outcomes or job.key in started_keys:
                    continue
                if len(running) >= executor.workers:
                    break
                deps = [outcomes.get(k) for k in job.after]
                if any(d is not None and d.status != "finished" for d in deps):
                    bad = next(d for d in deps if d is not None and d.status != "finished")
                    record(Outcome(job.key, "skipped", error=f"{bad.key} {bad.status}"))
                    started = True
                    continue
                if any(d is None for d in deps):
                    continue
                saved = _recorded(jobs_dir, job)
                if saved is not None:
                    record(saved, write=False)
                    started = True
                    continue
                values = {k: o.value for k, o in outcomes.items() if o.status == "finished"}
                args = {**(common or {}), **_resolve_args(job.args, values)}
                running[executor.submit(job.target, args)] = job
                started_keys.add(job.key)
                started = True
            if running:
                for handle in executor.wait_any(running):
                    job = running.pop(handle)
                    r = executor.result(handle)
                    record(Outcome(job.key, r["status"], r.get("value"), r.get("error"),
                                   r.get("seconds", 0.0)))
            elif not started:
                raise RuntimeError(f"jobs wait for each other: {sorted(set(by_key) - set(outcomes))}")
    finally:
        executor.close()
    return {job.key: outcomes[job.key] for job in jobs}
