"""Planning a setting's grid: the jobs, who builds them, and the check before any job runs.

An experiment gives the reproduction loop (`wrapperlens.reproduction`) a `Setting`: its
`plan(preset, overrides)` builds `GridJob`s with a `Planner` (training jobs name the
experiment's run class, analyses a job function), and its claims, seeds, figures and tables.
`check_configs` resolves every training job's configs in memory, parents first, so a bad key or
value stops a sweep before its first job starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import ConfigError
from wrapperlens.experiment import PLANNED, ExperimentRun, resolve_stage
from wrapperlens.sweeps import Job

__all__ = ["GridJob", "Planner", "Setting", "check_configs"]


@dataclass(frozen=True)
class GridJob:
    """A job of a setting's grid with what the results group it by.

    Attributes:
        job: The sweep job.
        kind: "run" for a training job, else the analysis kind ("prune", "probe", ...).
        stage: A run's label ("pretrain", "scratch_finetune", ...); for an analysis, the key of
            the run it analyses.
        params: Typed grid parameters (prior, family, c_tr, eta, seed, ...).
        run_class: The experiment of a training job (None for analyses).
    """

    job: Job
    kind: str
    stage: str
    params: Mapping[str, Any] = field(default_factory=dict)
    run_class: type[ExperimentRun] | None = None


class Planner:
    """Builds a setting's jobs: `train` for a stage of `run_class`, `analysis` for a job function.

        plan = Planner(PCFGRun, "tiny")
        pt = plan.train("pretrain/seed=0", "pretrain", overrides={"train.seed": 0},
                        params={"seed": 0})
        ft = plan.train("finetune/seed=0", "finetune", parent=pt, eta="M", params={"seed": 0})
        plan.analysis("prune/seed=0", "prune", ft, "wrapperlens.experiments.pcfg.grid:prune_job")
        jobs = plan.ordered()
    """

    def __init__(self, run_class: type[ExperimentRun], preset: str) -> None:
        self.run_class, self.preset = run_class, preset
        self.jobs: list[GridJob] = []

    def train(self, key: str, stage: str, *, parent: str | None = None, eta: str | None = None,
              overrides: Mapping[str, Any] | None = None, label: str | None = None,
              params: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
              inputs: Mapping[str, str] | None = None) -> str:
        """A training job of `stage` (from the run of job `parent`); returns its key.

        `extra`: keyword arguments of the experiment's resolver (its `adjust`), e.g. a
        protocol; `inputs`: name -> key of a job whose value's directory the resolver gets
        under that name (e.g. prepared data).
        """
        cls = self.run_class
        inputs = dict(inputs or {})
        args = {"stage": stage, "preset": self.preset, "eta": eta,
                "overrides": dict(overrides or {}),
                "parent": {"$value": parent} if parent else None}
        if extra:
            args["extra"] = dict(extra)
        if inputs:
            args["inputs"] = {name: {"$value": k} for name, k in inputs.items()}
        after = ((parent,) if parent else ()) + tuple(inputs.values())
        target = f"{cls.__module__}:{cls.__qualname__}.train_job"
        self.jobs.append(GridJob(Job(key, target, args, after), "run", label or stage,
                                 dict(params or {}), cls))
        return key

    def analysis(self, key: str, kind: str, run: str | Mapping[str, str] | None, target: str,
                 args: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None) -> str:
        """An analysis job `target` ("module:function") of the run of job `run` (its value as
        the argument `run`), of several (`{name: key}`: the argument `runs`), or of none."""
        if run is None:
            refs, after, label = {}, (), ""
        elif isinstance(run, str):
            refs, after, label = {"run": {"$value": run}}, (run,), run
        else:
            refs = {"runs": {name: {"$value": k} for name, k in run.items()}}
            after, label = tuple(run.values()), ",".join(run.values())
        self.jobs.append(GridJob(Job(key, target, {**refs, **(args or {})}, after), kind, label,
                                 dict(params or {})))
        return key

    def ordered(self) -> list[GridJob]:
        """The jobs, those that wait for nothing first (no core idles at the sweep's end)."""
        return sorted(self.jobs, key=lambda g: bool(g.job.after))


@dataclass(frozen=True)
class Setting:
    """What an experiment gives the loop (its `grid` module builds one).

    Attributes:
        name: "pcfg", "compiled", ...; tags its runs and analyses in results.json.
        plan: `plan(preset, overrides)` -> the setting's `GridJob`s.
        claims: `claims(view)` -> claim records (`wrapperlens.claims.claim_record`), where
            `view` is the setting's part of the results (its runs, analyses, seeds).
        seed_roles: Stage -> what seed s varies there (shown beside every spread).
        figures: Report figure builders, each `build(view)` -> `wrapperlens.report_plots.Figure`.
        tables: `tables(view)` -> named derived tables written to results.json (Table 3).
        finish_run: `finish_run(record)` adds derived metrics to a run's record in place
            (before the claims and the report read it).
        metrics: Prefixes of the logged metrics a run's `curve` and `final` keep.
        seeds: `seeds(preset, overrides)` -> the number of seeds the grid runs.
    """

    name: str
    plan: Callable[[str, Mapping[str, Any]], list[GridJob]]
    claims: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    seeds: Callable[[str, Mapping[str, Any]], int]
    seed_roles: Mapping[str, str] = field(default_factory=dict)
    figures: tuple[Callable, ...] = ()
    tables: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    finish_run: Callable[[dict[str, Any]], None] | None = None
    metrics: tuple[str, ...] = ("acc/",)


def check_configs(planned: Sequence[GridJob]) -> None:
    """Resolve every training job's configs in memory, parents first (nothing is written).

    Raises:
        ConfigError: naming the job and the bad key or value.
    """
    resolved: dict[str, ExperimentRun] = {}
    for g in _parents_first(planned):
        if g.kind != "run":
            continue
        args = g.job.args
        parent = resolved[args["parent"]["$value"]] if args["parent"] else None
        given = {**args.get("extra", {}), **{name: PLANNED for name in args.get("inputs", {})}}
        try:
            resolved[g.job.key] = resolve_stage(g.run_class, args["stage"], args["preset"],
                                                parent, args["eta"], args["overrides"], **given)
        except (ConfigError, CheckpointError) as e:
            raise ConfigError(f"job {g.job.key}: {e}") from e


def _parents_first(planned: Sequence[GridJob]) -> list[GridJob]:
    done: set[str] = set()
    out: list[GridJob] = []
    pending = list(planned)
    while pending:
        ready = [g for g in pending if all(k in done for k in g.job.after)]
        if not ready:
            raise ValueError(f"jobs wait for each other: {[g.job.key for g in pending]}")
        out += ready
        done |= {g.job.key for g in ready}
        pending = [g for g in pending if g.job.key not in done]
    return out
