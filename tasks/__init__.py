"""The procedurally defined tasks of the paper (§4, App. B-C): PCFG grammar, task families, data.

Modules, bottom to top: `vocab` (the tokens), `grammar` (PCFGs and the paper's), `pcfg_sampler`
(sampling derivations and windows), `families` (the five task families and their labels),
`config` (the data configs), `correlation` (spurious correlations in fine-tuning strings) and
`data` (task batches and streams); `compiled_tasks` holds the compiled models' programs and
fine-tuning data, over the RASP subset of `tasks.rasp`.

Every name below is imported from its module the first time it is read (PEP 562), so
`import tasks` imports neither numpy nor torch. This package imports nothing of wrapperlens.
"""

import importlib as _importlib
from typing import Any as _Any

# Public name -> the module that defines it, grouped by module.
_MODULE_OF = {name: module for module, names in {
    # The token vocabulary.
    "vocab": (
        "Vocabulary", "SPECIAL_TOKENS", "PAD", "SOS", "EOS", "SOT", "EOT", "ART", "NULL_OPERAND",
        "NO_ANSWER",
    ),
    # Probabilistic context-free grammars.
    "grammar": ("Production", "Rule", "Grammar", "PAPER_RULES", "paper_grammar", "derives"),
    # Sampling derivations and the windows cut from them.
    "pcfg_sampler": (
        "WindowDraw", "sample_derivations", "sample_windows", "sample_window_source",
        "MAX_FLAT_TREES",
    ),
    # The five task families and their labels.
    "families": (
        "FAMILIES", "NO_OCCURRENCE", "TaskFamily", "count_in_window", "count_pairs_in_window",
        "index_of_occurrence", "index_of_pair_occurrence", "token_at_offset",
    ),
    # The data configs of pretraining and fine-tuning.
    "config": ("PRIORS", "PCFGTaskConfig", "FinetuneDataConfig", "parse_prior", "parse_alias"),
    # Spurious correlations injected into fine-tuning strings.
    "correlation": ("inject_count_correlation", "inject_index_correlation", "has_correlation"),
    # The compiled models' programs and fine-tuning data (Counter, Max-identifier).
    "compiled_tasks": ("PROGRAMS", "CompiledTaskConfig", "CompiledTask"),
    # Task batches, questions and streams.
    "data": ("TaskBatch", "Question", "PCFGTask", "PCFGStream", "freeze"),
}.items() for name in names}

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> _Any:
    """Import a public name's module on first access (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public names beside what the package already holds."""
    return sorted({*globals(), *__all__})
