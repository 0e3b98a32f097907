"""The experiments built on wrapperlens: PCFG stages, their analyses, the Scr.+FT baseline, the
reproduction's grid, and the compiled models' stages and grid.

Every name below is imported from its module the first time it is read. Reached through their
modules only: `reproduce.reproduce` (the function has its module's name), `pcfg.answer_accuracy`
(`wrapperlens.analysis.answer_accuracy` is another function), `pcfg.STAGES` and
`pcfg.SECTION_TYPES` (each experiment has its own, as `compiled_runs`), the compiled grid's
`plan`, `preset_grid`, `train_job`, `prune_job` and `prune_run` (the PCFG names are these), and the
presets of `pcfg_presets` and `compiled_presets` (reached as `wrapperlens.get_preset(name)` and
`get_preset(name, "compiled")`).
"""

from wrapperlens.lazy_exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    # The PCFG stages (pretrain, fine-tune, reFT): configs, runs and saved runs.
    "pcfg": ("PCFGRun", "resolve_configs", "load_run", "saved_run"),
    # PCFG runs for analysis: open a run or a pretrained / fine-tuned pair, draw its inputs.
    "pcfg_pairs": (
        "LoadedRun", "Inputs", "open_run", "open_pair", "open_pretrained",
        "require_finetune", "question_inputs",
        "accuracy_evaluator", "make_metric", "ft_answers",
    ),
    # How each analysis tool analyses a run (one options class per tool).
    "pcfg_analysis_options": (
        "DIRECTIONS", "METRICS", "PruneOptions", "ProbeOptions", "PatchOptions",
        "AttributeOptions", "AttentionOptions", "WrapperMapOptions", "default_of",
    ),
    # The analysis tools on PCFG run directories: prune, probe, patch, attribute, attention,
    # wrapper map; JSON / PNG / HTML out.
    "pcfg_analysis": (
        "prune_run", "probe_run", "patch_run", "attribute_run", "attention_run",
        "wrapper_map_run",
    ),
    # The reproduction: its grid (as sweep jobs), the claims' rules, the report.
    "grid_config": ("GridConfig", "Cell", "parse_cell"),
    "grid": (
        "GridJob", "preset_grid", "plan", "collect", "train_job", "prune_job", "probe_job",
        "attention_job", "SEED_ROLES", "COUNT_A_NATURAL",
    ),
    "claims": ("Claim", "CLAIMS", "evaluate_claims", "claim_record", "decide"),
    "reproduce": ("rebuild_report", "claims_table"),
    "report": ("write_report", "report_page", "REPORT_NAME"),
    # The compiled models (docs/compiled.md): their stages, grid, claims 8-12, and the optional
    # cross-check against Tracr (`pip install -e ".[tracr]"`).
    "compiled_runs": (
        "CompileConfig", "CompiledFinetuneConfig", "CompiledRun", "resolve_compiled",
        "saved_compiled_run", "load_compiled_run", "run_compiled_stage", "add_noise", "EVAL_SETS",
    ),
    "compiled_grid": ("reproduce_compiled", "table3", "readout_job"),
    "compiled_claims": ("COMPILED_CLAIMS", "evaluate_compiled_claims"),
    "tracr_bridge": (
        "INSTALL_HINT", "TracrMissingError", "compile_with_tracr", "hooked_from_tracr",
        "run_tracr_hooked", "to_tracr", "tracr_forward", "tracr_token_ids",
    ),
    # The Scr.+FT baseline of reverse fine-tuning and its comparison with reFT.
    "scratch_baseline": (
        "REFT_METRIC", "SCRATCH_METRIC", "ScratchBaseline", "swapped_prior", "find_pretrain_run",
        "scratch_pretrain_overrides", "scratch_finetune_overrides", "run_scratch_baseline",
        "compare_reft_with_scratch",
    ),
})
