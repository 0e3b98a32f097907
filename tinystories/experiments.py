"""TinyStories training stages: pretrain, delete (F / F+R / F+MM) and reverse fine-tune.

| stage | starts from | trains on (prepared protocol, train split) | default LR |
|---|---|---|---|
| pretrain | random init | `all` ("Present in PT"), or `filter` ("Not in PT" control) | preset |
| delete | a pretrain run | `filter` (F), `filter_randomise` (F+R), `filter_mix_match` (F+MM) | η_M |
| reft | a delete run, or the control | `reft`: Twist stories only | preset (1e-5) |

(Paper App. F; docs/paper-settings.md#the-tinystories-setting.) Deletion and reFT use a constant
learning rate, as the paper's code.

`StoryRun` fills the experiment core (`wrapperlens.experiment`) like the PCFG and compiled
stages: `resolve_story_run` combines a preset, a parent run and overrides into a `StoryRun`, and
`StoryRun.spec(out)` is the stage spec the run engine trains (`wrapperlens.stages.run_stage`,
`train_or_reuse`). Seeds mean what they mean everywhere: `train.seed` orders the batches,
`model.init_seed` draws the initial weights.

    run = resolve_story_run("delete", "cpu", parent="runs/pt", protocol="F+R", eta="M")
    model, records = run_stage(run.spec("runs/del"), "runs/del")

A run directory (`wrapperlens.runs.RunDir`) holds the engine's files; its `config.json` names the
experiment, stage, preset, parent and η, then the sections (`data`: prepared data, tokenizer,
protocol; `model` for pretraining; `batches`, `train`, `eval`), and the evaluator adds
`generations/`. A stage finds the prepared data and the
tokenizer through its parent's config unless given. Any HookedTransformer run directory can be a
parent, e.g. a GPT-Neo checkpoint imported with `import_gpt_neo_run` (the public TinyStories
models).

Metrics logged (see `tinystories.evaluation`): `twist_loss`, `other_loss` at every evaluation;
`twist_score`, `twist_oracle` and `gen_tokens` at the generation steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from tinystories.evaluation import EvalConfig, StoryEvaluator, ensure_story_classifier
from tinystories.gpt_neo import GPT_NEO_ARCHITECTURE, freeze_absent_parameters, load_gpt_neo
from tinystories.lm import BatchConfig, StoryBatcher, encode_records, pad_id_of
from tinystories.prepare import prepared_info, training_texts
from tinystories.protocols import PAPER_NAMES, ProtocolDataConfig
from tinystories.presets import EXPERIMENT
from tinystories.tokenizer import load_tokenizer, save_tokenizer
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.config import ConfigError, from_dict, to_dict
from wrapperlens.experiment import PLANNED, ExperimentRun, StageRule, register_experiment
from wrapperlens.models import ModelConfig, build_model
from wrapperlens.presets import Preset, get_preset
from wrapperlens.runs import RunDir
from wrapperlens.stages import StageSpec
from wrapperlens.training import TrainConfig

__all__ = ["STAGES", "SECTION_TYPES", "StageData", "ImportedCheckpoint", "StoryRun", "resolve_story_run",
           "read_story_run", "story_data", "load_story_model", "run_tokenizer",
           "import_gpt_neo_run"]

STAGES = ("pretrain", "delete", "reft")
DELETION_PROTOCOLS = ("filter", "filter_randomise", "filter_mix_match")


@dataclass(frozen=True)
class StageData:
    """What a stage trains on (the `data` section).

    Attributes:
        prepared: The prepared-data directory (`tinystories.prepare.prepare_stories`).
        tokenizer: The tokenizer directory.
        protocol: The prepared protocol trained on: pretrain "all" ("Present in PT") or "filter"
            (the "Not in PT" control); delete "filter", "filter_randomise", "filter_mix_match"
            (F, F+R, F+MM); reft "reft" (Twist stories only).
    """

    prepared: str | None = None
    tokenizer: str | None = None
    protocol: str = "all"


@dataclass(frozen=True)
class ImportedCheckpoint:
    """Where the weights of an "import" run came from (its `checkpoint` section).

    Attributes:
        source: The hub name or local HF directory of the GPT-Neo checkpoint.
        n_ctx: The context length it was imported with.
    """

    source: str = ""
    n_ctx: int = 0


SECTION_TYPES = {"data": StageData, "checkpoint": ImportedCheckpoint, "model": ModelConfig, "batches": BatchConfig,
                 "train": TrainConfig, "eval": EvalConfig}
_COMMON = {"batches": "batches", "eval": "eval"}


@register_experiment
class StoryRun(ExperimentRun):
    """One TinyStories stage (fills `wrapperlens.experiment.ExperimentRun`: `setup`, `adjust`,
    `new_model`, `initial_model`, `spec`; the evaluator needs the run directory for its
    generations, so the batches and evaluation are built by `spec(out)`).

    Attributes (besides the base's): `prepared`, `tokenizer`, `protocol` (the `data` section).
    """

    name = EXPERIMENT
    # No learning-rate rule: App. F revives at 1e-5 after deleting at η_S = 1e-5.
    stage_rules = (
        StageRule("pretrain", sections={"model": "model", "train": "pretrain", **_COMMON}),
        StageRule("delete", parents=("pretrain", "import"), eta=True, lr_below_parent=False,
                  sections={"train": "delete", **_COMMON}),
        StageRule("reft", parents=("delete", "pretrain", "import"), lr_below_parent=False,
                  sections={"train": "reft", **_COMMON}),
        StageRule("import", trains=False),  # a GPT-Neo checkpoint (`import_gpt_neo_run`)
    )
    section_types = SECTION_TYPES

    def setup(self) -> None:
        data = self.sections.get("data") or StageData()
        self.prepared, self.tokenizer, self.protocol = data.prepared, data.tokenizer, data.protocol
        if self.rule.trains:
            _check_generation_steps(self)

    @classmethod
    def adjust(cls, rule, preset, sections, parent_config, *, prepared=None, tokenizer=None,
               protocol=None, data=None):
        """The `data` section: the prepared data and tokenizer (given, or the parent's; `data`
        is a sweep's prepare-job directory holding both) and the protocol of the stage."""
        if data is not None:
            prepared, tokenizer = (data, data) if data == PLANNED else (
                str(Path(data) / "prepared"), str(Path(data) / "tokenizer"))
        inherited = (parent_config or {}).get("data") or {}
        prepared = prepared or inherited.get("prepared")
        tokenizer = tokenizer or inherited.get("tokenizer")
        if rule.stage == "pretrain":
            protocol = protocol or "all"
            if protocol not in ("all", "filter"):
                raise ConfigError(f"pretrain protocol must be 'all' or 'filter' (control), got "
                                  f"{protocol!r}")
        elif rule.stage == "delete":
            protocol = ProtocolDataConfig(protocol or "F").protocol
            if protocol not in DELETION_PROTOCOLS:
                raise ConfigError(f"delete protocol must be one of {tuple(PAPER_NAMES)}, got "
                                  f"{protocol!r}")
        else:
            protocol = protocol or "reft"
        if prepared is None or tokenizer is None:
            raise ConfigError(f"{rule.stage} needs the prepared data and the tokenizer "
                              "directories (--data, --tokenizer; a parent run's config gives "
                              "them)")
        if prepared != PLANNED:
            prepared_info(prepared).require(protocol)  # plain stories have no deletion protocols
            prepared, tokenizer = str(Path(prepared).resolve()), str(Path(tokenizer).resolve())
        return {"data": StageData(prepared, tokenizer, protocol), **sections}

    def spec(self, out: str | Path | None = None) -> StageSpec:
        """This stage for the run engine; the evaluator writes generations to `out/generations`."""
        if out is None:
            raise ConfigError("a TinyStories stage needs its run directory: spec(out)")
        stage = _StoryStage(self, Path(out))
        return StageSpec(config=self.to_json(), train=self.train_config,
                         build_model=stage.build_model, batch=stage.batch,
                         evaluate=stage.evaluate, description=f"{self.stage} {self.protocol}")

    def new_model(self) -> HookedTransformer:
        """Pretraining: the model section's architecture (vocabulary of the tokenizer); else the
        architecture of the parent run's weights."""
        if self.stage == "pretrain":
            return build_model(self.sections["model"], d_vocab=len(load_tokenizer(self.tokenizer)))
        return RunDir(self.parent).load_model()

    def chance_floors(self) -> dict[str, float]:
        return {}


def read_story_run(run_dir: str | Path) -> dict[str, Any]:
    """The raw `config.json` of a run directory (any stage, including "import")."""
    return RunDir(run_dir).read_config()


def story_data(run_dir: str | Path) -> StageData:
    """The `data` section of a run directory (its prepared data, tokenizer and protocol)."""
    config = read_story_run(run_dir)
    try:
        return from_dict(StageData, config.get("data", {}), "data")
    except ConfigError as e:
        raise CheckpointError(f"{RunDir(run_dir).config_file}: {e}") from e


def resolve_story_run(
    stage: str,
    preset: str | Preset = "cpu",
    *,
    parent: str | Path | None = None,
    prepared: str | Path | None = None,
    tokenizer: str | Path | None = None,
    protocol: str | None = None,
    eta: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StoryRun:
    """Combine a preset, a parent run and `section.key` overrides into one stage's configs
    (`wrapperlens.experiment.resolve_stage` with `StoryRun.stage_rules`).

    Args:
        stage: One of `STAGES`.
        preset: "paper", "cpu", "tiny", or a TinyStories `Preset` (e.g. from `with_overrides`).
        parent: Run directory to start from (delete, reft).
        prepared, tokenizer: Override the directories inherited from the parent (required for
            pretraining).
        protocol: pretrain: "all" (default) or "filter" (the control); delete: "F", "F+R",
            "F+MM" (or the protocol names); reft: "reft" (default).
        eta: delete: "M" (default) or "S"; `--train.lr` overrides it.
        overrides: {"train.lr": 1e-4, ...}; sections: model (pretrain), batches, train, eval.
            `train.seed` varies the data order, `model.init_seed` the initial weights.
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
    return StoryRun.resolve(stage, preset, parent, eta, overrides, prepared=prepared,
                            tokenizer=tokenizer, protocol=protocol)


def _generation_steps(run: StoryRun) -> list[int]:
    steps = run.train_config.steps
    if run.stage == "pretrain":
        return [steps]
    return sorted({s for s in run.sections["eval"].generation_steps if s <= steps} | {steps})


def _check_generation_steps(run: StoryRun) -> None:
    missing = sorted(set(_generation_steps(run)) - run.train_config.eval_steps())
    if missing:
        tc = run.train_config
        raise ConfigError(
            f"eval.generation_steps {missing} are not evaluation steps of train (steps={tc.steps}, "
            f"eval_every={tc.eval_every}, log_spaced_eval={tc.log_spaced_eval}); make them "
            "multiples of train.eval_every"
        )


def _prepare_loaded(model: HookedTransformer) -> HookedTransformer:
    if model.cfg.original_architecture == GPT_NEO_ARCHITECTURE:
        freeze_absent_parameters(model)  # GPT-Neo has no q/k/v or unembedding biases
    return model


def load_story_model(run_dir: str | Path) -> HookedTransformer:
    """The latest weights of a run directory (GPT-Neo's absent biases frozen), in eval mode."""
    return _prepare_loaded(RunDir(run_dir).load_model()).eval()


def _initial_model(run: StoryRun, tokenizer: PreTrainedTokenizerBase) -> HookedTransformer:
    if run.stage == "pretrain":
        return build_model(run.sections["model"], d_vocab=len(tokenizer))
    model = load_story_model(run.parent)
    if model.cfg.d_vocab < len(tokenizer):
        raise CheckpointError(
            f"{run.parent}: the model's vocabulary ({model.cfg.d_vocab}) is smaller than the "
            f"tokenizer's ({len(tokenizer)}) in {run.tokenizer}"
        )
    return model


class _StoryStage:
    """The data, model and evaluation of one resolved stage, built on first use (a reused
    run never tokenises its data)."""

    def __init__(self, run: StoryRun, out: Path) -> None:
        self.run, self.out = run, out
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._batcher: StoryBatcher | None = None
        self._evaluate: Any = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.run.tokenizer)
        return self._tokenizer

    def build_model(self) -> HookedTransformer:
        model = _initial_model(self.run, self.tokenizer)
        self.n_ctx = model.cfg.n_ctx  # the engine builds the model before drawing batch 0
        return model

    def batch(self, step: int):
        if self._batcher is None:
            run, batches = self.run, self.run.sections["batches"]
            texts = training_texts(run.prepared, run.protocol, "train",
                                   shuffle_fields=batches.shuffle_fields)
            sequences, _ = encode_records(self.tokenizer, texts, self.n_ctx + 1,
                                          add_eos=batches.layout == "records")
            self._batcher = StoryBatcher(sequences, run.train_config.batch_size, self.n_ctx,
                                         pad_id_of(self.tokenizer), batches.layout,
                                         run.train_config.seed)
        return self._batcher(step)

    def evaluate(self, model: HookedTransformer, step: int) -> dict[str, float]:
        if self._evaluate is None:
            run = self.run
            preset = get_preset(run.preset, EXPERIMENT)
            classifier, _ = ensure_story_classifier(run.prepared, preset.classifier)
            evaluator = StoryEvaluator(run.prepared, self.tokenizer, model.cfg.n_ctx,
                                       run.sections["eval"], classifier,
                                       shuffle_fields=run.sections["batches"].shuffle_fields)
            self._evaluate = evaluator.callback(_generation_steps(run), self.out)
        return self._evaluate(model, step)


def run_tokenizer(run_dir: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a run directory (from its config, or saved inside it)."""
    tokenizer = story_data(run_dir).tokenizer
    if tokenizer is None:
        raise CheckpointError(f"{RunDir(run_dir).config_file}: no data.tokenizer")
    return load_tokenizer(tokenizer)


def import_gpt_neo_run(
    name_or_dir: str | Path, out: str | Path, n_ctx: int | None = None,
    prepared: str | Path | None = None,
) -> HookedTransformer:
    """Import a GPT-Neo checkpoint (hub name or local HF directory) as a run directory.

    The run directory holds the HookedTransformer, the checkpoint's tokenizer and a
    `config.json` of stage "import", so it can be the parent of `delete` or `reft` (give
    `prepared` here or `--data` there).
    """
    out = Path(out)
    model = load_gpt_neo(name_or_dir, n_ctx=n_ctx, with_tokenizer=True)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError(f"{name_or_dir}: no tokenizer beside the checkpoint; a run needs one")
    run = RunDir(out)
    data = StageData(None if prepared is None else str(Path(prepared).resolve()),
                           str(out.resolve()), "all")
    checkpoint = ImportedCheckpoint(str(name_or_dir), model.cfg.n_ctx)
    run.write_config({"experiment": EXPERIMENT, "stage": "import", "preset": None,
                      "parent": None, "data": to_dict(data), "checkpoint": to_dict(checkpoint)})
    run.save_model(model)
    if Path(str(name_or_dir)).is_dir():
        save_tokenizer(load_tokenizer(name_or_dir), out)  # the original, not TL's BOS copy
    else:
        save_tokenizer(tokenizer, out)
    run.write_provenance(model)
    return model
