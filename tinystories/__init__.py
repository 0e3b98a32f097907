"""TinyStories: data, tokenizer and GPT-Neo checkpoints for the paper's deletion/revival setting.

Modules, bottom to top:

- `hub`: fail fast, with a useful message, when the Hugging Face hub cannot be reached;
- `instruct`: the TinyStories-Instruct record format (parse, format; feature names);
- `mojibake`: undo the mojibake of some hub rows (UTF-8 decoded as Windows-1252);
- `data`: load stories from the hub or local files as HF `datasets`, counting malformed records;
- `protocols`: the pretraining, deletion (F, F+R, F+MM) and reFT datasets, and training text;
- `story_source`: an offline stand-in for TinyStories-Instruct with real feature traces;
- `tokenizer`: a byte-level BPE tokenizer (train, save, load, batch);
- `gpt_neo`: GPT-Neo checkpoints as HookedTransformers, and export back to HF;
- `prepare`: the `prepare` and `tokenizer` stages of a run;
- `lm`: training batches of story LMs (their shapes are `wrapperlens.models.ModelConfig`s, see
  `presets`);
- `generation`: batched, KV-cached sampling from a prompt cut at "Story:";
- `twist_classifier`: the n-gram logistic regression behind the twist generation score;
- `evaluation`: twist loss and generation scores during training;
- `story_probes`: per-layer story-feature probes on story-only text;
- `presets`: every stage's defaults at the `paper`, `cpu` and `tiny` scales;
- `experiments`: the pretrain / delete / reft stages and their run directories;
- `compare`: checkpoint comparison per layer (cosine, relative norm, CKA, weights, probe transfer);
- `claims`: claims 17-20, decided from the pipeline's results;
- `pipeline`: everything in one call, with a summary;
- `cli`: `wrapperlens tinystories ...`.

The package exports every module's public names (below), each imported from its module the first
time it is read, so `import tinystories` imports neither torch, TransformerLens nor `datasets`.
Reached through their modules only: the command line (`cli`), the presets (`presets.PAPER`, ...;
or `wrapperlens.get_preset(name, "tinystories")` once `tinystories.presets` is imported), and the
two `PROTOCOLS`: `protocols.PROTOCOLS` (every dataset protocol) and `pipeline.PROTOCOLS` (the
deletion protocols `run_pipeline` runs by default).
"""

# Installs wrapperlens's guard that keeps other libraries' log levels when TransformerLens is
# imported (see wrapperlens/log_levels.py): tinystories modules import TransformerLens before
# anything of wrapperlens, so the guard has to be in place when this package is imported.
import wrapperlens  # noqa: E402,F401

from wrapperlens.lazy_exports import lazy_exports as _lazy_exports  # noqa: E402

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    # Fail fast when the Hugging Face hub cannot be reached.
    "hub": ("HubUnavailableError", "hub_offline_mode", "check_hub_reachable", "hub_unavailable"),
    # The TinyStories-Instruct record format.
    "instruct": (
        "EOT", "ERROR_REASONS", "FEATURES", "PROMPT_FIELDS", "RECORD_FEATURES",
        "canonical_feature", "parse_instruct_record", "plain_story_record", "record_from_json",
        "format_prompt", "format_training_text",
    ),
    # Mojibake repair of hub rows.
    "mojibake": ("repair_mojibake", "repair_record"),
    # Stories from the hub or local files, as HF `datasets` of parsed records.
    "data": ("HUB_DATASETS", "StoryDataConfig", "ParseReport", "load_stories", "parse_records"),
    # The pretraining, deletion and reFT datasets.
    "protocols": (
        "PAPER_NAMES", "TEXT_MODES", "ProtocolDataConfig", "protocol_dataset", "with_text",
        "split_by_story",
    ),
    # The offline stand-in for TinyStories-Instruct.
    "story_source": (
        "StorySourceConfig", "DEFAULT_FEATURE_PROBS", "generate_story", "generate_records",
        "story_source_dataset", "write_story_files", "detect_features",
    ),
    # The BPE tokenizer.
    "tokenizer": (
        "PAD", "TokenizerConfig", "train_tokenizer", "save_tokenizer", "load_tokenizer",
        "encode_texts", "pad_batch", "pack_sequences", "tokenize_dataset",
    ),
    # GPT-Neo checkpoints as HookedTransformers, and back to HF.
    "gpt_neo": (
        "GPT_NEO_ARCHITECTURE", "TINYSTORIES_N_CTX", "TINYSTORIES_MODELS", "gpt_neo_hooked_config",
        "hooked_from_hf_gpt_neo", "load_gpt_neo", "freeze_absent_parameters",
        "hf_gpt_neo_config", "hf_gpt_neo_state_dict", "export_gpt_neo",
    ),
    # The check of an HF GPT-Neo directory before it is loaded.
    "gpt_neo_check": ("check_gpt_neo_dir",),
    # The `prepare` and `tokenizer` stages.
    "prepare": (
        "STORY_SOURCE", "FIELD_SHUFFLE_SEED", "CLASSIFIER_DIR", "PrepareConfig", "PreparedInfo",
        "UnlabelledDataError", "prepare_stories", "prepared_info", "load_prepared",
        "training_texts", "build_run_tokenizer",
    ),
    # Training batches of story LMs, and their loss.
    "lm": (
        "LAYOUTS", "BatchConfig", "pad_id_of", "encode_records", "StoryBatcher", "sequence_loss",
    ),
    # Sampling stories from a prompt.
    "generation": ("encode_prompts", "sample_continuations", "generated_story"),
    # The twist classifier behind the generation score.
    "twist_classifier": (
        "TwistClassifierConfig", "TwistClassifier", "train_twist_classifier",
        "classifier_accuracy", "balanced_sample", "save_classifier", "load_classifier",
    ),
    # Twist loss and generation scores during training.
    "evaluation": (
        "EvalConfig", "StoryEvaluator", "fit_story_classifier", "ensure_story_classifier",
    ),
    # Per-layer story-feature probes.
    "story_probes": (
        "ProbeDataConfig", "StoryProbeInputs", "story_probe_inputs", "probe_story_features",
    ),
    # The pretrain / delete / reFT stages and their run directories.
    "experiments": (
        "STAGES", "SECTION_TYPES", "StageData", "ImportedCheckpoint", "StoryRun",
        "resolve_story_run",
        "read_story_run", "story_data", "load_story_model", "run_tokenizer", "import_gpt_neo_run",
    ),
    # Checkpoint comparison per layer.
    "compare": (
        "comparison_inputs", "residual_activations", "cosine_similarity_by_point",
        "relative_difference_norm", "linear_cka", "weight_change", "probe_transfer",
        "compare_checkpoints", "plot_comparison",
    ),
    # The whole experiment in one call.
    "pipeline": ("run_pipeline", "format_summary"),
    # The pipeline as the reproduction loop's setting.
    "grid": ("preset_with_overrides",),
    # Claims 17-20 and their rules.
    "claims": ("STORY_CLAIMS", "evaluate_story_claims", "EARLY_FRACTION", "MIN_PROBE_GAP",
               "DECODED", "OTHER_FEATURES"),
})
