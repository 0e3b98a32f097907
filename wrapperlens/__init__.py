# Importing TransformerLens raises the `transformers` log level to ERROR for the whole process,
# which hides, e.g., `from_pretrained`'s report of weights it filled with random values. The guard
# (see wrapperlens/log_levels.py) puts every other library's log levels back after each
# TransformerLens import; it is installed here, before any submodule imports TransformerLens, and
# costs no import of TransformerLens itself (light entry points such as the CLI stay light).
from wrapperlens.log_levels import install_transformer_lens_guard as _install_guard

_install_guard()

# The public API. Each name is imported from its submodule the first time it is read
# (`wrapperlens.RunDir`, `from wrapperlens import RunDir`), so `import wrapperlens` itself
# imports neither torch nor TransformerLens.
from wrapperlens.lazy_exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    # The run engine: a run directory (layout, configs, metrics, provenance, links), run ids,
    # saved models.
    "runs": ("RunDir", "run_id", "read_metrics", "load_hooked_model", "save_hooked_model"),
    # One stage runner for every experiment, and reuse of a finished or killed run.
    "stages": ("StageSpec", "run_stage", "train_or_reuse", "resolve_device"),
    # Model shapes: the architecture presets and the one model-shape config.
    "model_config": ("Architecture", "ARCHITECTURES", "ModelConfig"),
    # Building HookedTransformers.
    "models": ("build_model", "hooked_transformer"),
    # The trainer.
    "training": ("TrainConfig", "TrainBatch", "train", "lr_at"),
    # Frozen dataclass configs: (de)serialisation and `section.key=value` overrides.
    "config": ("ConfigError", "apply_overrides", "load_config_file", "to_dict", "from_dict"),
    # Safetensors + JSON checkpoints.
    "checkpoints": ("CheckpointError",),
    # The experiment core: stage rules, one resolver and one reader for every experiment.
    "experiment": ("ExperimentRun", "StageRule", "register_experiment", "experiment_class",
                   "registered_experiments", "read_run", "resolve_stage"),
    # Named scales of every experiment.
    "presets": ("Preset", "get_preset"),
    # The table of model components (hook name, unit, size) that every analysis reads.
    "components": (
        "Component", "Unit", "TABLE", "COMPONENTS", "LINEAR_WEIGHTS", "UNIT_AXES",
        "get_component", "check_patchable", "hook_name", "exists", "check_component",
        "activation_shape", "component_size", "unit_count", "components_with_unit",
        "result_axes", "output_weight", "output_weight_suffix",
    ),
    # The PCFG experiment: resolve a stage's configs, open saved runs.
    "experiments.pcfg.stages": ("PCFGRun", "resolve_configs", "load_run", "saved_run"),
    # Opening a PCFG run (or a pretrained / fine-tuned pair) and its question inputs for analysis.
    "experiments.pcfg.pairs": ("open_run", "open_pair", "question_inputs"),
})
