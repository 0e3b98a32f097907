"""The experiment core: what every experiment (PCFG, compiled programs, TinyStories, the next one)
fills, and the one resolver and reader they share.

An experiment is a subclass of `ExperimentRun` that declares

- `name`: its registry name ("pcfg"), written as `"experiment"` into every `config.json`;
- `stage_rules`: one `StageRule` per stage (the stage, the stages it may start from, where each
  config section comes from, which sections it inherits fixed from its parent, whether its
  learning rate is a named η of the preset);
- `section_types`: section name -> frozen config dataclass;

and fills four methods: `new_model()` (the architecture of every stage of the run), `batch(step)`
(the training batch of a step), `evaluate(model, step)` (metrics at evaluation steps) and
`chance_floors()` (the accuracy of always giving each evaluation set's most common answer). The
base does the rest: the stage's configs from a preset, a parent run and overrides (`resolve`),
the stage spec for the run engine (`spec`), `config.json` and back (`to_json`, `read_run`), and
reusing a finished run (`run_or_reuse`).

    run = Toy.resolve("finetune", "tiny", parent="runs/pt", eta="M")  # tests/toy/experiment.py
    run.run_or_reuse("runs/ft")

The registry refuses a second, different experiment under a taken name (as SAELens's registry
of SAE variants does). Seeds mean the same in every experiment: `train.seed` varies a stage's
data order (and any noise it draws), `model.init_seed` the initial weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import ConfigError, apply_overrides, replace, sections_from_dict, to_dict
from wrapperlens.presets import Preset, get_preset
from wrapperlens.runs import RunDir, as_saved, run_id
from wrapperlens.stages import StageSpec, resolve_device, train_or_reuse

__all__ = ["PLANNED", "StageRule", "finetune_chain", "ExperimentRun", "register_experiment",
           "experiment_class", "registered_experiments",
           "read_run", "load_run", "resolve_stage", "check_lr_below_parent"]


#: What a sweep passes for a job's input (e.g. a data directory) when it resolves every job's
#: configs in memory before the first job starts: nothing may be read from it.
PLANNED = "<planned>"


@dataclass(frozen=True)
class StageRule:
    """How one stage of an experiment gets its configs.

    Attributes:
        stage: The stage's name ("pretrain", "finetune", "reft", ...).
        parents: The stages of the run it may start from; empty: it starts from nothing.
        sections: Run section -> the preset section its default comes from
            ({"train": "finetune"}: the stage's `train` is the preset's `finetune`).
        inherits: Sections copied from the parent run and fixed there (overriding one is an
            error: they must match the parent's weights or question).
        eta: The stage's learning rate is a named η of the preset (`--eta L|M|S`); its default
            is the preset's `default_eta` of the section `sections["train"]`.
        trains: False for a stage that only writes its initial model (a compiled model).
        lr_below_parent: Refuse a learning rate not below the parent run's
            (`check_lr_below_parent`).
    """

    stage: str
    parents: tuple[str, ...] = ()
    sections: Mapping[str, str] = field(default_factory=dict)
    inherits: tuple[str, ...] = ()
    eta: bool = False
    trains: bool = True
    lr_below_parent: bool = True


def finetune_chain(first: StageRule, fixed: tuple[str, ...]) -> tuple[StageRule, ...]:
    """The paper's chain of stages: `first` (pretraining, or compiling), fine-tuning from it and
    reFT from the fine-tuning.

    Fine-tuning inherits the sections `fixed` (those its weights depend on), trains with the
    preset's `finetune` section on its `finetune_data` at a named η; reFT inherits those and the
    fine-tuning data (its question), and trains with the preset's `reft` section at a named η.
    """
    return (first,
            StageRule("finetune", parents=(first.stage,), inherits=fixed, eta=True,
                      sections={"train": "finetune", "finetune": "finetune_data"}),
            StageRule("reft", parents=("finetune",), inherits=(*fixed, "finetune"), eta=True,
                      sections={"train": "reft"}))


class ExperimentRun:
    """The resolved configs of one stage of an experiment (fill it; see the module docstring).

    Attributes:
        stage: The stage's name (one of the experiment's `stage_rules`).
        sections: Section name -> frozen config (types checked against `section_types`).
        preset: The preset the defaults came from.
        parent: The run directory this stage starts from (None: from nothing).
        eta: The named learning rate it trains at, if its rule says so.
    """

    name: ClassVar[str]
    stage_rules: ClassVar[tuple[StageRule, ...]]
    section_types: ClassVar[Mapping[str, type]]

    def __init__(self, stage: str, sections: Mapping[str, Any], preset: str,
                 parent: str | None = None, eta: str | None = None) -> None:
        self.rule = self.stage_rule(stage)
        for section, cfg in sections.items():
            expected = self.section_types.get(section)
            if expected is None or not isinstance(cfg, expected):
                raise ConfigError(f"{self.name} {stage}: section {section!r} is "
                                  f"{type(cfg).__name__}, expected "
                                  f"{getattr(expected, '__name__', 'no such section')}")
        self.stage, self.sections, self.preset = stage, dict(sections), preset
        self.parent, self.eta = parent, eta
        self.setup()

    # ------------------------------------------------------------------- what a filling gives
    def setup(self) -> None:
        """Build what the stage needs from its sections (a task, data streams); optional."""

    def new_model(self):
        """The untrained model of this run's architecture."""
        raise NotImplementedError

    def batch(self, step: int):
        """The global training batch of `step` (`wrapperlens.training.TrainBatch`)."""
        raise NotImplementedError

    def evaluate(self, model, step: int | None = None) -> dict[str, float]:
        """Named metrics of `model` on the run's fixed evaluation sets."""
        raise NotImplementedError

    def chance_floors(self) -> dict[str, float]:
        """Per evaluation set: the accuracy of always giving its most common answer."""
        return {}

    # ---------------------------------------------------------------------- what the base does
    @classmethod
    def stage_rule(cls, stage: str) -> StageRule:
        for rule in cls.stage_rules:
            if rule.stage == stage:
                return rule
        raise ConfigError(f"unknown {cls.name} stage {stage!r}; stages: "
                          f"{', '.join(r.stage for r in cls.stage_rules)}")

    @classmethod
    def stages(cls) -> tuple[str, ...]:
        return tuple(r.stage for r in cls.stage_rules)

    @property
    def train_config(self):
        return self.sections.get("train")

    def to_json(self) -> dict[str, Any]:
        """`config.json`: the experiment, stage, preset, parent and η, then every section."""
        out: dict[str, Any] = {"experiment": self.name, "stage": self.stage,
                               "preset": self.preset, "parent": self.parent}
        if self.rule.eta:
            out["eta"] = self.eta
        out.update({name: to_dict(cfg) for name, cfg in self.sections.items()})
        return out

    def initial_model(self):
        """A fresh model, with the parent run's latest weights when there is a parent."""
        model = self.new_model()
        if self.parent is not None:
            RunDir(self.parent).load_weights_into(model)
        return model

    def spec(self, out: str | Path | None = None) -> StageSpec:
        """This stage for the run engine (`wrapperlens.stages.run_stage`)."""
        if not self.rule.trains:
            raise ConfigError(f"the {self.stage} stage trains nothing; use run_or_reuse")
        return StageSpec(config=self.to_json(), train=self.train_config,
                         build_model=self.initial_model, batch=self.batch,
                         evaluate=self.evaluate, description=f"{self.stage} [{self.preset}]")

    def finished_in(self, out: str | Path) -> bool:
        """Whether `out` holds a finished run of exactly these configs (`run_or_reuse` would
        reuse it)."""
        target = RunDir(out)
        steps = self.train_config.steps if self.rule.trains else 0
        return (target.exists() and target.read_config() == as_saved(self.to_json())
                and target.is_finished(steps))

    def run_or_reuse(self, out: str | Path, *, progress: bool = True,
                     device: str = "cpu") -> tuple[list[dict], float]:
        """Train this stage into `out` (reusing a finished run, resuming a killed one), or for a
        stage that trains nothing write its initial model with the step-0 metrics. Returns the
        run's metric records and the seconds spent training."""
        if self.rule.trains:
            return train_or_reuse(self.spec(out), out, progress=progress, device=device)
        target = RunDir(out)
        if self.finished_in(out):
            return target.metrics(), 0.0
        if target.exists() and target.read_config() != as_saved(self.to_json()):
            raise ConfigError(f"{target.path} holds a run with other configs; choose another "
                              "--out")
        target.write_config(self.to_json(), resume=target.exists())
        model = self.initial_model().eval()
        target.truncate_metrics(None)
        target.append_metrics({"step": 0, **self.evaluate(model)})
        target.save_model(model)
        target.write_provenance(model, world_size=1, device="cpu")
        return target.metrics(), 0.0

    @classmethod
    def train_job(cls, out: str, stage: str, preset: str, eta: str | None,
                  overrides: Mapping[str, Any], parent: Mapping[str, Any] | None,
                  device: str = "cpu", extra: Mapping[str, Any] | None = None,
                  inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """A sweep's training job (`wrapperlens.planning.Planner.train`): resolve the stage
        and run it into `out/runs/<run id>`. `parent` is the parent job's value; `extra` goes to
        `adjust` as it is, and each of `inputs` (another job's value) as the path `out/dir`.

        Returns:
            {"dir": the run's directory relative to `out`, "run_id", "seconds" spent training}.
        """
        parent_dir = str(Path(out) / parent["dir"]) if parent else None
        given = {**(extra or {}),
                 **{name: str(Path(out) / value["dir"]) for name, value in (inputs or {}).items()}}
        run = cls.resolve(stage, preset, parent=parent_dir, eta=eta, overrides=overrides, **given)
        rel = f"runs/{run_id(run.to_json())}"
        _, seconds = run.run_or_reuse(Path(out) / rel, progress=False,
                                      device=resolve_device(device))
        return {"dir": rel, "run_id": run_id(run.to_json()), "seconds": seconds}

    # ------------------------------------------------------------------------------ resolving
    @classmethod
    def resolve(cls, stage: str, preset: str | Preset = "cpu", parent: str | Path | None = None,
                eta: str | None = None, overrides: Mapping[str, Any] | None = None,
                **extra: Any) -> ExperimentRun:
        """The configs of a stage: the preset's defaults, the parent run's fixed sections, then
        `section.key` overrides (see `resolve_stage`). `extra` goes to `adjust`."""
        return resolve_stage(cls, stage, preset, parent, eta, overrides, **extra)

    @classmethod
    def adjust(cls, rule: StageRule, preset: Preset, sections: dict[str, Any],
               parent_config: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
        """Hook: change the sections after the preset and the parent gave them and before the
        overrides (an experiment's own arguments, e.g. TinyStories' data directories)."""
        if extra:
            raise ConfigError(f"{cls.name}: unexpected arguments {sorted(extra)}")
        return sections

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str) -> ExperimentRun:
        """The run a saved `config.json` describes (configs only)."""
        stage = config.get("stage")
        if stage not in cls.stages():
            raise CheckpointError(f"{source}: 'stage' {stage!r} is not a {cls.name} stage "
                                  f"({', '.join(cls.stages())})")
        rule = cls.stage_rule(stage)
        missing = [s for s in (*rule.sections, *rule.inherits) if s not in config]
        if missing:
            raise CheckpointError(f"{source}: a {cls.name} {stage} run lacks the sections "
                                  f"{missing}")
        try:
            sections = sections_from_dict(cls.section_types, config, source)
            return cls(stage, dict(sections), config.get("preset", "?"), config.get("parent"),
                       config.get("eta"))
        except ConfigError as e:
            raise CheckpointError(str(e)) from e  # a saved file that does not parse


#: Experiment name -> its run class.
_EXPERIMENTS: dict[str, type[ExperimentRun]] = {}


def register_experiment(cls: type[ExperimentRun]) -> type[ExperimentRun]:
    """Add an experiment to the registry (usable as a class decorator).

    Raises:
        ValueError: another class is registered under the same name, or a rule names a section
            the experiment has no type for.
    """
    known = _EXPERIMENTS.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"experiment {cls.name!r} is already registered ({known.__module__}."
                         f"{known.__qualname__})")
    for rule in cls.stage_rules:
        unknown = (set(rule.sections) | set(rule.inherits)) - set(cls.section_types)
        if unknown:
            raise ValueError(f"experiment {cls.name!r}, stage {rule.stage!r}: no type for "
                             f"sections {sorted(unknown)}")
    _EXPERIMENTS[cls.name] = cls
    return cls


def registered_experiments() -> dict[str, type[ExperimentRun]]:
    """The registered experiments by name (an experiment registers when its module is
    imported: `wrapperlens.experiments.pcfg.stages`, `wrapperlens.experiments.compiled`,
    `tinystories.experiments`)."""
    return dict(_EXPERIMENTS)


def experiment_class(name: str) -> type[ExperimentRun]:
    """The run class of experiment `name`; ConfigError naming the registered ones otherwise."""
    try:
        return _EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; registered: "
                          f"{', '.join(_EXPERIMENTS) or 'none'} (import the experiment's "
                          "package to register it)") from None


def read_run(run_dir: str | Path, expected: type[ExperimentRun] | None = None) -> ExperimentRun:
    """The run saved in `run_dir/config.json` (configs only), of the experiment it names.

    Raises:
        CheckpointError: the file names no registered experiment, another experiment than
            `expected` (or one built on it: a wrappers run is a PCFG run), or does not parse.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    name = config.get("experiment")
    if not isinstance(name, str) or name not in _EXPERIMENTS:
        raise CheckpointError(f"{run.config_file}: 'experiment' is {name!r}; registered "
                              f"experiments: {', '.join(_EXPERIMENTS)}")
    cls = _EXPERIMENTS[name]
    if expected is not None and not issubclass(cls, expected):
        raise CheckpointError(f"{run.config_file}: a {name} run, not a {expected.name} run")
    return cls.from_config(config, str(run.config_file))


def load_run(run_dir: str | Path, expected: type[ExperimentRun] | None = None):
    """`read_run` with the run's latest weights loaded into its model (eval mode)."""
    run = read_run(run_dir, expected)
    model = run.new_model()
    RunDir(run_dir).load_weights_into(model)
    return run, model.eval()


def resolve_stage(cls: type[ExperimentRun], stage: str, preset: str | Preset = "cpu",
                  parent: str | Path | ExperimentRun | None = None, eta: str | None = None,
                  overrides: Mapping[str, Any] | None = None, **extra: Any) -> ExperimentRun:
    """One stage's configs: preset defaults, the parent run's fixed sections, then overrides.

    `parent` is a run directory, or a resolved `ExperimentRun` (a sweep checks every job's
    configs in memory before the first job starts).

    Raises:
        ConfigError: an unknown stage, section, key or η; a parent missing, unexpected, of
            another experiment or of the wrong stage; an override of a section the parent
            fixes; or a learning rate not below the parent's (`check_lr_below_parent`).
    """
    rule = cls.stage_rule(stage)
    p = get_preset(preset, cls.name) if isinstance(preset, str) else preset
    overrides = dict(overrides or {})
    parent_config: Mapping[str, Any] | None = None
    inherited: dict[str, Any] = {}
    if not rule.parents:
        if parent is not None:
            raise ConfigError(f"{stage} starts from nothing: --from is not allowed")
    else:
        if parent is None:
            raise ConfigError(f"{stage} needs --from RUN_DIR (the run it starts from)")
        if isinstance(parent, ExperimentRun):  # a planned run, resolved in memory
            parent_config, parent_file = parent.to_json(), f"the planned {parent.stage} run"
            parent = f"<planned {parent.stage} run>"
        else:
            parent_dir = RunDir(parent)
            parent_config, parent_file = parent_dir.read_config(), str(parent_dir.config_file)
        kind = (parent_config.get("experiment"), parent_config.get("stage"))
        if kind[0] != cls.name or kind[1] not in rule.parents:
            raise ConfigError(f"{stage} starts from a {cls.name} {' or '.join(rule.parents)} "
                              f"run, but {parent} is a {kind[0]} {kind[1]!r} run")
        try:
            inherited = sections_from_dict(cls.section_types, parent_config, parent_file)
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        locked = [k for k in overrides if k.split(".")[0] in rule.inherits]
        if locked:
            fixed = " and ".join(filter(None, [", ".join(rule.inherits[:-1]), rule.inherits[-1]]))
            raise ConfigError(f"{locked[0]}: {fixed} are fixed by the parent run {parent}; use "
                              "--train.seed to vary this stage's data order")
    sections = {name: getattr(p, source) for name, source in rule.sections.items()}
    sections.update({name: inherited[name] for name in rule.inherits})
    eta_name = None
    if rule.eta:
        eta_name, lr = p.eta(rule.sections["train"], eta)
        sections["train"] = replace(sections["train"], "train", lr=lr)
    elif eta is not None:
        raise ConfigError(f"{stage} trains at its preset's learning rate: --eta is not allowed")
    sections = cls.adjust(rule, p, sections, parent_config, **extra)
    sections = apply_overrides(sections, overrides)
    if rule.lr_below_parent and "train" in sections and "train" in inherited:
        check_lr_below_parent(stage, sections["train"].lr, parent_config["stage"],
                              inherited["train"].lr, parent, p.etas)
    return cls(stage, sections, p.name, None if parent is None else str(parent), eta_name)


def check_lr_below_parent(stage: str, lr: float, parent_stage: str, parent_lr: float,
                          parent: str | Path, etas: Mapping[str, float]) -> None:
    """Refuse a stage whose learning rate is not below its parent's.

    The paper fine-tunes one to three decades below the pretraining rate (App. C.2: 1e-3, then
    1e-4 / 1e-5 / 1e-6) and reverse-fine-tunes below the fine-tuning rate (App. D); at or above
    its parent's rate a stage tests something else
    (docs/choices.md#each-stages-learning-rate-is-below-its-parents).
    """
    if lr < parent_lr:
        return
    rule = ("reFT must use a smaller learning rate than the fine-tuning it reverses, as in the "
            "paper" if stage == "reft" else
            f"{stage} must use a smaller learning rate than its {parent_stage} run; the paper "
            "fine-tunes 1-3 decades below pretraining")
    smaller = [name for name, value in etas.items() if value < parent_lr]
    pick = (f"--eta {smaller[0]} or " if smaller else "") + f"--train.lr={parent_lr / 10:g}"
    raise ConfigError(
        f"train.lr={lr:g} of this {stage} run is not below train.lr={parent_lr:g} of its parent "
        f"{parent_stage} run {parent}: {rule} "
        "(docs/choices.md#each-stages-learning-rate-is-below-its-parents); pick a smaller one, "
        f"e.g. {pick}"
    )
