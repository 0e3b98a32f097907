"""Compiled-model pipelines (paper §4, App. B.1, C.1): compile, fine-tune, reverse fine-tune.

The paper's second setting starts from a model whose capability is known weight by weight: a
RASP program compiled to a transformer (`tasks.rasp`), then fine-tuned. Three stages, run by the
engine of `wrapperlens.stages` like the PCFG ones:

| stage | starts from | model / data | default LR |
|---|---|---|---|
| compile | nothing | the program compiled for `compile.operand` (default O_PT), plus N(0, noise_std) noise | - |
| finetune | a compile run | `finetune.target` "ft": O_FT labels, a fraction C_Tr correlated; "pt": O_PT labels, natural inputs | η_M |
| reft | a finetune run | O_PT labels, natural inputs | η_VS |

The Scr.+FT baseline is a compile run for O_FT (`--compile.operand=b`) fine-tuned to O_PT
(`--finetune.target=pt`). A compile run trains nothing: its directory holds the noisy compiled
weights, one metrics record at step 0 and its provenance, so children open it like any parent.

Every stage logs Acc O_PT and Acc O_FT on C_Te = 1 (`acc/O_PT/cte1`: every input carries the
correlation) and C_Te = 0 (`acc/O_PT/cte0`: none does), read at the last position
(docs/choices.md §14). The loss is the cross-entropy of the answer there: a training row is the
input's token ids followed by the answer's output-class id, which the model never reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformer_lens import HookedTransformer

from tasks.compiled_tasks import CompiledTask, CompiledTaskConfig
from wrapperlens.checkpoints import CheckpointError
from wrapperlens.compiled import compiled_model
from wrapperlens.config import ConfigError, apply_overrides, replace, sections_from_dict, to_dict
from wrapperlens.presets import get_preset
from wrapperlens.runs import RunDir, as_saved
from wrapperlens.stages import StageSpec, train_or_reuse
from wrapperlens.training import TrainBatch, TrainConfig

__all__ = [
    "STAGES", "SECTION_TYPES", "CompileConfig", "CompiledFinetuneConfig", "CompiledRun",
    "resolve_compiled", "saved_compiled_run", "load_compiled_run", "run_compiled_stage",
    "add_noise", "EVAL_SETS",
]

STAGES = ("compile", "finetune", "reft")
#: Metric name -> (operand role, C_Te): the sets every stage is evaluated on (Table 3's columns).
EVAL_SETS = {f"acc/{role}/cte{c}": (role, c) for c in (1, 0) for role in ("O_PT", "O_FT")}


@dataclass(frozen=True)
class CompileConfig:
    """How the starting model is made.

    Attributes:
        operand: What the program is compiled for; "" is the task's O_PT. The Scr.+FT baseline
            compiles for O_FT.
        noise_std: Standard deviation of the Gaussian noise added to every compiled weight
            (paper App. C.1: N(0, 0.001), "to densify them and avoid gradient spikes";
            docs/choices.md §15).
        seed: Seed of the noise.
        scale: Attention logit of a selected key (`tasks.rasp.compile_program`).
    """

    operand: str = ""
    noise_std: float = 1e-3
    seed: int = 0
    scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"compile.noise_std={self.noise_std} must be >= 0")
        if self.scale < 250:
            raise ValueError(f"compile.scale={self.scale}: below 250 the compiled attention is "
                             "not exact in float32")


@dataclass(frozen=True)
class CompiledFinetuneConfig:
    """The fine-tuning data.

    Attributes:
        target: "ft" (train on O_FT answers, the paper's fine-tuning) or "pt" (on O_PT answers,
            natural inputs: the Scr.+FT baseline's fine-tuning).
        c_tr: Fraction of each batch carrying the spurious correlation (C_Tr); the others never
            do. Must be 0 for target "pt".
    """

    target: str = "ft"
    c_tr: float = 1.0

    def __post_init__(self) -> None:
        if self.target not in ("ft", "pt"):
            raise ValueError(f"finetune.target={self.target!r}: expected 'ft' or 'pt'")
        if not 0.0 <= self.c_tr <= 1.0:
            raise ValueError(f"finetune.c_tr={self.c_tr} must be in [0, 1]")
        if self.target == "pt" and self.c_tr:
            raise ValueError(f"finetune.c_tr={self.c_tr} with finetune.target='pt': training on "
                             "the O_PT answer uses natural inputs; set finetune.c_tr=0")


SECTION_TYPES = {"task": CompiledTaskConfig, "compile": CompileConfig, "train": TrainConfig,
                 "finetune": CompiledFinetuneConfig}


def add_noise(model: HookedTransformer, std: float, seed: int) -> HookedTransformer:
    """Add N(0, std) to every parameter in place, in `named_parameters` order, from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * std)
    return model


@dataclass
class CompiledRun:
    """The resolved configs of one compiled-model stage, with the task they describe."""

    stage: str
    sections: dict[str, Any]
    preset: str
    parent: str | None = None

    def __post_init__(self) -> None:
        self.task = CompiledTask(self.sections["task"])
        cfg = self.task.config
        self.compiled_operand = self.sections["compile"].operand or cfg.o_pt
        if self.compiled_operand not in (cfg.o_pt, cfg.o_ft):
            raise ConfigError(f"compile.operand={self.compiled_operand!r}: compile for O_PT "
                              f"{cfg.o_pt!r} or O_FT {cfg.o_ft!r}")
        self.description = self.task.compile(self.compiled_operand, self.sections["compile"].scale)
        self._classes = {v: i for i, v in enumerate(self.description.output_values)}
        ids = self.description.token_ids
        self._letter_ids = np.array([ids[v] for v in self.task.vocab])  # letter index -> id
        self._bos_id = ids[self.description.bos]
        self._eval_letters: dict[int, np.ndarray] = {}
        self._eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def train_config(self) -> TrainConfig | None:
        return self.sections.get("train")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "experiment": "compiled",
                               "preset": self.preset, "parent": self.parent}
        out.update({name: to_dict(cfg) for name, cfg in self.sections.items()})
        return out

    # ---------------------------------------------------------------------------------- data
    def operand(self, role: str) -> str:
        """The operand of "O_PT" or "O_FT" (of the task, whatever the model was compiled for)."""
        return self.task.config.o_pt if role == "O_PT" else self.task.config.o_ft

    def classes(self, letters: np.ndarray, operand: str) -> torch.Tensor:
        """Output-class ids of each row's answer for `operand`."""
        return torch.tensor([self._classes[v] for v in self.task.answers(letters, operand)])

    def token_ids(self, letters: np.ndarray) -> torch.Tensor:
        """BOS, then each letter's embedding row."""
        bos = np.full((len(letters), 1), self._bos_id)
        return torch.from_numpy(np.concatenate([bos, self._letter_ids[letters]], axis=1))

    def batch(self, step: int) -> TrainBatch:
        """Training batch of `step`: token ids + the answer's class id; loss at the last input."""
        cfg, ft = self.train_config, self.sections["finetune"]
        rng = self.task.step_rng(self.stage, step, cfg.seed)
        pt_labels = self.stage == "reft" or ft.target == "pt"
        if pt_labels:
            letters, operand = self.task.natural(rng, cfg.batch_size), self.task.config.o_pt
        else:
            letters, _ = self.task.batch(rng, cfg.batch_size, ft.c_tr)
            operand = self.task.config.o_ft
        tokens = torch.cat([self.token_ids(letters), self.classes(letters, operand)[:, None]], 1)
        mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
        mask[:, -1] = True
        return TrainBatch(tokens, mask)

    def eval_letters(self, c_te: int) -> np.ndarray:
        """The fixed evaluation inputs of C_Te = `c_te` (letter indices), seeded by
        `task.eval_seed`: every analysis of the run reads these."""
        if c_te not in self._eval_letters:
            n = self.train_config.eval_samples if self.train_config else 1000
            rng = self.task.eval_rng(f"cte{c_te}", n)
            self._eval_letters[c_te] = self.task.batch(rng, n, float(c_te))[0]
        return self._eval_letters[c_te]

    def eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Metric name (`EVAL_SETS`) -> (token ids, answer classes); the sets of one C_Te share
        their token tensor."""
        if self._eval_sets is None:
            tokens = {c: self.token_ids(self.eval_letters(c)) for _, c in EVAL_SETS.values()}
            self._eval_sets = {
                name: (tokens[c], self.classes(self.eval_letters(c), self.operand(role)))
                for name, (role, c) in EVAL_SETS.items()}
        return self._eval_sets

    def chance_floors(self) -> dict[str, float]:
        """Per evaluation set: the accuracy of always giving its most common answer."""
        return {name: float(np.bincount(classes.numpy()).max()) / len(classes)
                for name, (_, classes) in self.eval_sets().items()}

    def evaluate(self, model: HookedTransformer, step: int | None = None) -> dict[str, float]:
        """Accuracy of the answer at the last position on every evaluation set (one forward
        pass per C_Te: O_PT and O_FT are read from the same inputs)."""
        predicted: dict[int, torch.Tensor] = {}  # id of a shared token tensor -> predictions
        out = {}
        with torch.no_grad():
            for name, (tokens, classes) in self.eval_sets().items():
                if id(tokens) not in predicted:
                    logits = model(tokens.to(model.cfg.device))[:, -1]
                    predicted[id(tokens)] = logits.argmax(-1).cpu()
                out[name] = (predicted[id(tokens)] == classes).float().mean().item()
        return out

    # -------------------------------------------------------------------------------- models
    def new_model(self) -> HookedTransformer:
        """The compiled model without noise (the architecture of every stage of this run)."""
        return compiled_model(self.description)

    def initial_model(self) -> HookedTransformer:
        """Compile: the compiled weights plus noise. Otherwise: the parent run's weights."""
        model = self.new_model()
        if self.parent is None:
            c = self.sections["compile"]
            return add_noise(model, c.noise_std, c.seed)
        RunDir(self.parent).load_weights_into(model)
        return model

    def spec(self) -> StageSpec:
        """A training stage for the run engine (not `compile`: see `run_compiled_stage`)."""
        if self.stage == "compile":
            raise ConfigError("the compile stage trains nothing; use run_compiled_stage")
        return StageSpec(config=self.to_json(), train=self.train_config,
                         build_model=self.initial_model, batch=self.batch,
                         evaluate=self.evaluate, description=f"{self.stage} [{self.preset}]")


def run_compiled_stage(run: CompiledRun, out: str | Path, *, progress: bool = True,
                       device: str = "cpu") -> tuple[list[dict], float]:
    """Run (or reuse) one stage into `out`: compile writes the noisy compiled model, the others
    train through `wrapperlens.stages.train_or_reuse`. Returns its metrics and the seconds
    spent."""
    if run.stage != "compile":
        return train_or_reuse(run.spec(), out, progress=progress, device=device)
    target = RunDir(out)
    if target.exists() and target.read_config() == as_saved(run.to_json()) \
            and target.is_finished(0):
        return target.metrics(), 0.0
    target.write_config(run.to_json(), resume=target.exists())
    model = run.initial_model().eval()
    target.truncate_metrics(None)
    target.append_metrics({"step": 0, **run.evaluate(model)})
    target.save_model(model)
    target.write_provenance(model, world_size=1, device="cpu")
    return target.metrics(), 0.0


def _sections_from_json(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    try:
        return sections_from_dict(SECTION_TYPES, config, source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def saved_compiled_run(run_dir: str | Path) -> CompiledRun:
    """The CompiledRun saved in `run_dir/config.json` (configs only)."""
    run = RunDir(run_dir)
    config = run.read_config()
    if config.get("stage") not in STAGES or config.get("experiment") != "compiled":
        raise CheckpointError(f"{run.config_file}: not a compiled-model run (stage "
                              f"{config.get('stage')!r}; expected one of {STAGES})")
    return CompiledRun(config["stage"], _sections_from_json(config, str(run.config_file)),
                       config.get("preset", "?"), config.get("parent"))


def load_compiled_run(run_dir: str | Path) -> tuple[CompiledRun, HookedTransformer]:
    """The run of `run_dir` with its latest weights loaded, in eval mode."""
    run = saved_compiled_run(run_dir)
    model = run.new_model()
    RunDir(run_dir).load_weights_into(model)
    return run, model.eval()


def resolve_compiled(stage: str, preset: str = "cpu", parent: str | Path | None = None,
                     eta: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> CompiledRun:
    """The configs of a stage: preset defaults, the parent's configs, then overrides.

    Fine-tuning and reFT inherit `task` and `compile` from their parent (the weights they start
    from); reFT also inherits `finetune`. A stage's learning rate must be below its parent's
    (reFT below fine-tuning, docs/choices.md §34).

    Raises:
        ConfigError: an unknown stage or key, a parent of the wrong stage, an override of what
            the parent fixes, or a reFT learning rate not below the fine-tuning's.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    p = get_preset(preset, "compiled")
    overrides = dict(overrides or {})
    if stage == "compile":
        if parent is not None:
            raise ConfigError("the compile stage starts from nothing: --from is not allowed")
        sections: dict[str, Any] = {"task": p.task, "compile": p.compile}
        return CompiledRun(stage, apply_overrides(sections, overrides), preset)
    if parent is None:
        raise ConfigError(f"{stage} needs --from RUN_DIR (the run it starts from)")
    parent_run = RunDir(parent)
    parent_cfg = parent_run.read_config()
    expected = "compile" if stage == "finetune" else "finetune"
    if parent_cfg.get("stage") != expected or parent_cfg.get("experiment") != "compiled":
        raise ConfigError(f"{stage} starts from a compiled {expected} run, but {parent} is a "
                          f"{parent_cfg.get('stage')!r} run")
    inherited = _sections_from_json(parent_cfg, str(parent_run.config_file))
    fixed = ("task", "compile") + (("finetune",) if stage == "reft" else ())
    locked = [k for k in overrides if k.split(".")[0] in fixed]
    if locked:
        raise ConfigError(f"{locked[0]}: {', '.join(fixed)} are fixed by the parent run "
                          f"{parent}; use --train.seed to vary this stage's data order")
    _, lr = p.eta(stage, eta)
    sections = {"task": inherited["task"], "compile": inherited["compile"],
                "train": replace(p.finetune if stage == "finetune" else p.reft, "train", lr=lr),
                "finetune": inherited["finetune"] if stage == "reft" else p.finetune_data}
    sections = apply_overrides(sections, overrides)
    if stage == "reft" and not sections["train"].lr < inherited["train"].lr:
        raise ConfigError(
            f"train.lr={sections['train'].lr:g} of this reft run is not below "
            f"train.lr={inherited['train'].lr:g} of its parent finetune run {parent}: reFT must "
            "use a smaller learning rate than the fine-tuning it reverses, as in the paper "
            "(docs/choices.md §34)")
    return CompiledRun(stage, sections, preset, str(parent))

