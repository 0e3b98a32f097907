"""Analysis tools that work through TransformerLens hooks on any HookedTransformer.

Every name below is imported from its module the first time it is read, so `import
wrapperlens.analysis` is cheap; each name is listed under the module that defines it (a module
that re-exports a name from elsewhere does not export it again here). Two names are reached
through their module only: the function `wrapper_map.wrapper_map`, whose name is its module's,
and `read_metrics`, which is `wrapperlens.read_metrics`.
"""

from wrapperlens.lazy_exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    # Metrics of the logits (logit difference, answer probability) for patching and attribution.
    "logit_metrics": ("Metric", "TokenIds", "logit_difference", "answer_probability"),
    # One sequence position per sample.
    "positions": ("Positions", "resolve_positions", "gather_positions"),
    # Checks that a source run can be spliced into a target run.
    "run_pair": (
        "ARCHITECTURE_FIELDS", "check_same_architecture", "check_tokens", "resolve_source",
    ),
    # The forward from a patched activation that activation patching runs on.
    "partial_forward": ("ENTRY_POINTS", "RowEdit", "SuffixForward", "suffix_unsupported_reason"),
    # Activation patching between two runs.
    "patching": ("Patch", "PatchingConfig", "ActivationPatcher", "activation_patching"),
    # Edge attribution (EAP, EAP-IG) against exact edge patching; circuits and faithfulness.
    "edges": (
        "EdgeGraph", "EdgeScores", "FaithfulnessCurve", "edge_hooks", "exact_edge_patching",
        "eap_scores", "eap_ig_scores", "top_edges", "circuit", "faithfulness_curve",
    ),
    # Two circuits edge by edge: kept, gained, lost, reweighted, as a table and a graph.
    "circuit_diff": ("EDGE_STATUSES", "EdgeChange", "CircuitDiff", "diff_circuits",
                     "plot_circuit_diff"),
    # Attribution patching: every patch's first-order estimate at once.
    "attribution": ("attribution_patching", "attribution_scores"),
    # A heatmap of a patching or attribution result.
    "effect_plots": ("plot_effect",),
    # Writing a matplotlib figure (every plot above ends there).
    "figures": ("save_figure",),
    # Head and neuron ablation through hooks.
    "ablation": (
        "AblationHook", "mean_activations", "head_ablation_hooks", "neuron_ablation_hooks",
        "ablated",
    ),
    # The units of g·w pruning, their scores and zeroing, and sweeps over K of them.
    "pruning_units": (
        "ELIGIBLE_PRESETS", "PruneConfig", "PruneUnit", "PruneScores", "PruneSweep",
        "eligible_parameters", "sum_per_unit", "pruned", "sorted_ks", "evaluate_prefixes",
    ),
    # Single-step g·w pruning: the gradient scores, the top-K sweep and its plot.
    "pruning": (
        "LossFn", "answer_loss", "answer_accuracy", "pruning_scores", "prune_sweep",
        "plot_prune_sweep",
    ),
    # The random-unit control of a pruning sweep.
    "pruning_control": ("RandomPruneSweep", "random_prune_sweep"),
    # The residual stream at the probe points B0..BL.
    "residual_points": (
        "residual_hook_names", "residual_at_positions", "residual_mean_last", "check_points",
    ),
    # Linear probes trained together, one per probe point.
    "linear_probes": ("ProbeConfig", "PROBE_PRESETS", "train_probes", "standardize", "probe_split"),
    # Per-layer probe accuracy of a model.
    "probing": (
        "ProbeReport", "probe_accuracy_by_layer", "probe_features_by_layer", "plot_probe_accuracy",
    ),
    # Attention patterns as a self-contained HTML page.
    "attention_views": ("attention_patterns", "attention_page", "write_attention_html"),
    # Reverse fine-tuning curves and iterations to a threshold.
    "reft_curves": (
        "ReftCurve", "accuracy_curve", "iterations_to_threshold", "curves_to_threshold",
        "plot_reft_curves",
    ),
    # Relative weight change of a component between a pretrained model and its fine-tuned copy.
    "weight_change": ("component_parameters", "weight_changes"),
    # Every localisation method as one score per head and neuron, and ranking metrics.
    "localisation": (
        "LOCALISATION_METHODS", "UNIT_COMPONENTS", "unit_scores", "precision_at_k", "auroc",
        "spearman", "top_units",
    ),
    # Where in the network fine-tuning's change lives.
    "wrapper_map": (
        "KINDS", "KIND_COMPONENTS", "SCORES", "WrapperMapConfig", "WrapperMap", "plot_wrapper_map",
    ),
})
