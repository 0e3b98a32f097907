"""TinyStories training stages: pretrain, delete (F / F+R / F+MM) and reverse fine-tune.

| stage | starts from | trains on (prepared protocol, train split) | default LR |
|---|---|---|---|
| pretrain | random init | `all` ("Present in PT"), or `filter` ("Not in PT" control) | preset |
| delete | a pretrain run | `filter` (F), `filter_randomise` (F+R), `filter_mix_match` (F+MM) | η_M |
| reft | a delete run, or the control | `reft`: Twist stories only | preset (1e-5) |

(Paper App. F; docs/paper-settings.md §3.) Deletion and reFT use a constant learning rate,
as the paper's code.

`resolve_story_run` combines a preset, a parent run and overrides into a `StoryRun`, and
`StoryRun.spec(out)` is the stage spec the run engine trains (`wrapperlens.stages.run_stage`,
`train_or_reuse`), exactly as for the PCFG stages:

    run = resolve_story_run("delete", "cpu", parent="runs/pt", protocol="F+R", eta="M")
    model, records = run_stage(run.spec("runs/del"), "runs/del")

A run directory (`wrapperlens.runs.RunDir`) holds the engine's files; this module's part of
`config.json` is the stage, preset, parent, prepared data, tokenizer, protocol, η and the config
sections, and the evaluator adds `generations/`. A stage finds the prepared data and the
tokenizer through its parent's config unless given. Any HookedTransformer run directory can be a
parent, e.g. a GPT-Neo checkpoint imported with `import_gpt_neo_run` (the public TinyStories
models).

Metrics logged (see `tinystories.evaluation`): `twist_loss`, `other_loss` at every evaluation;
`twist_score`, `twist_oracle` and `gen_tokens` at the generation steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from wrapperlens.config import ConfigError, apply_overrides, sections_from_dict, to_dict
from wrapperlens.models import ModelConfig, build_model
from wrapperlens.presets import Preset, get_preset
from wrapperlens.runs import RunDir
from wrapperlens.stages import StageSpec
from wrapperlens.training import TrainConfig

__all__ = ["STAGES", "SECTION_TYPES", "StoryRun", "resolve_story_run", "read_story_run",
           "load_story_model", "run_tokenizer", "import_gpt_neo_run"]

STAGES = ("pretrain", "delete", "reft")
SECTION_TYPES = {"model": ModelConfig, "batches": BatchConfig, "train": TrainConfig,
                 "eval": EvalConfig}
DELETION_PROTOCOLS = ("filter", "filter_randomise", "filter_mix_match")


@dataclass
class StoryRun:
    """The resolved configs of one stage.

    Attributes:
        stage: "pretrain", "delete" or "reft".
        preset: The preset the defaults came from.
        sections: {"model" (pretrain only), "batches", "train", "eval"} config objects.
        prepared: Prepared-data directory (`tinystories.prepare.prepare_stories`).
        tokenizer: Tokenizer directory.
        protocol: The prepared protocol trained on.
        parent: Run directory the weights come from (None for pretraining).
        eta: "M" or "S" for deletion runs.
    """

    stage: str
    preset: str
    sections: dict[str, Any]
    prepared: str
    tokenizer: str
    protocol: str
    parent: str | None = None
    eta: str | None = None

    @property
    def train_config(self) -> TrainConfig:
        return self.sections["train"]

    def spec(self, out: str | Path) -> StageSpec:
        """This stage for the run engine; the evaluator writes generations to `out/generations`."""
        return _spec(self, out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage, "preset": self.preset, "parent": self.parent,
            "prepared": self.prepared, "tokenizer": self.tokenizer, "protocol": self.protocol,
            "eta": self.eta,
        }
        out.update({name: to_dict(cfg) for name, cfg in self.sections.items()})
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], source: str = "config") -> "StoryRun":
        sections = sections_from_dict(SECTION_TYPES, d, source)
        try:
            return cls(d["stage"], d["preset"], sections, d["prepared"], d["tokenizer"],
                       d["protocol"], d.get("parent"), d.get("eta"))
        except KeyError as e:
            raise CheckpointError(f"{source}: missing key {e}") from e


def read_story_run(run_dir: str | Path) -> dict[str, Any]:
    """The raw `config.json` of a run directory (any stage, including "import")."""
    return RunDir(run_dir).read_config()


def _parent_paths(parent: Path) -> tuple[str | None, str | None]:
    cfg = read_story_run(parent)
    return cfg.get("prepared"), cfg.get("tokenizer")


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
    """Combine a preset, a parent run and `section.key` overrides into one stage's configs.

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
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
    p = get_preset(preset, EXPERIMENT) if isinstance(preset, str) else preset
    sections: dict[str, Any] = {"batches": p.batches, "eval": p.eval}
    if stage == "pretrain":
        if parent is not None:
            raise ConfigError("pretrain starts from random weights: it takes no parent run")
        protocol = protocol or "all"
        if protocol not in ("all", "filter"):
            raise ConfigError(
                f"pretrain protocol must be 'all' or 'filter' (control), got {protocol!r}"
            )
        sections.update(model=p.model, train=p.pretrain)
    else:
        if parent is None:
            raise ConfigError(f"{stage} needs a parent run directory (--from)")
        parent_prepared, parent_tokenizer = _parent_paths(Path(parent))
        prepared = prepared or parent_prepared
        tokenizer = tokenizer or parent_tokenizer
        if stage == "delete":
            protocol = ProtocolDataConfig(protocol or "F").protocol
            if protocol not in DELETION_PROTOCOLS:
                raise ConfigError(
                    f"delete protocol must be one of {tuple(PAPER_NAMES)}, got {protocol!r}"
                )
            eta, lr = p.eta("delete", eta)
            sections["train"] = replace(p.delete, lr=lr)
        else:
            protocol = protocol or "reft"
            sections["train"] = p.reft
    if prepared is None or tokenizer is None:
        raise ConfigError(f"{stage} needs the prepared data and the tokenizer directories "
                          "(--data, --tokenizer; a parent run's config gives them)")
    prepared_info(prepared).require(protocol)  # plain stories have no deletion protocols
    sections = apply_overrides(sections, dict(overrides or {}))
    run = StoryRun(stage, p.name, sections, str(Path(prepared).resolve()),
                   str(Path(tokenizer).resolve()), protocol,
                   None if parent is None else str(Path(parent).resolve()), eta)
    _check_generation_steps(run)
    return run


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
                                         pad_id_of(self.tokenizer), batches.layout, batches.seed)
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


def _spec(run: StoryRun, out: str | Path) -> StageSpec:
    stage = _StoryStage(run, Path(out))
    return StageSpec(config=run.to_json(), train=run.train_config, build_model=stage.build_model,
                     batch=stage.batch, evaluate=stage.evaluate,
                     description=f"{run.stage} {run.protocol}")


def run_tokenizer(run_dir: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a run directory (from its config, or saved inside it)."""
    return load_tokenizer(read_story_run(run_dir)["tokenizer"])


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
    run.write_config({
        "stage": "import", "parent": None, "source": str(name_or_dir),
        "tokenizer": str(out.resolve()),
        "prepared": None if prepared is None else str(Path(prepared).resolve()),
        "n_ctx": model.cfg.n_ctx,
    })
    run.save_model(model)
    if Path(str(name_or_dir)).is_dir():
        save_tokenizer(load_tokenizer(name_or_dir), out)  # the original, not TL's BOS copy
    else:
        save_tokenizer(tokenizer, out)
    run.write_provenance(model)
    return model
