"""PCFG glue of the edge tools: a pretrained / fine-tuned pair's circuits and their diff.

`circuit_run` opens a fine-tuning run and its parent (`wrapperlens.experiments.pcfg.pairs`),
scores every edge of both models on the same "count a" prompts against the same strings asking
"count b" (`wrapperlens.analysis.edges`), diffs the two circuits
(`wrapperlens.analysis.circuit_diff`) and writes ``circuit.json`` and ``circuit.png``:

    circuit_run("runs/ft", "out/circuit", CircuitOptions(top_n=20))

The grid runs it on one pair (`wrapperlens.experiments.pcfg.grid.circuit_job`); the report
shows it (docs/edges.md#circuit-diff).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from tasks.data import Question
from wrapperlens.analysis.circuit_diff import diff_circuits, plot_circuit_diff
from wrapperlens.analysis.edges import eap_ig_scores, eap_scores, exact_edge_patching
from wrapperlens.analysis.figures import save_figure
from wrapperlens.analysis.localisation import spearman
from wrapperlens.analysis.logit_metrics import logit_difference
from wrapperlens.checkpoints import write_json
from wrapperlens.experiments.pcfg.analysis_options import CircuitOptions
from wrapperlens.experiments.pcfg.pairs import open_pair, question_inputs, require_finetune

__all__ = ["circuit_run"]


def circuit_run(
    run_dir: str | Path,
    out: str | Path,
    options: CircuitOptions | None = None,
    *,
    pretrained: str | Path | None = None,
) -> dict[str, Any]:
    """The circuits of the pretrained and the fine-tuned model and their diff, edge by edge.

    Both models are scored (`options.method`) on the same O_PT prompts against the same strings
    asking O_FT, metric = logit[O_PT answer] - logit[O_FT answer] at `<art>`; each circuit is its
    top `options.top_n` edges (`wrapperlens.analysis.circuit_diff`). Writes ``circuit.json``
    (every edge's two scores, the diff's rows and counts, and with `options.compare_exact` the
    Spearman correlation of each model's scores with exact edge patching) and ``circuit.png``.
    """
    o = options or CircuitOptions()
    ft, pt = open_pair(run_dir, pretrained)
    correlation = require_finetune(ft, "circuit")
    inputs = question_inputs(ft, ft.question(), o.samples, 0.0, "analysis/circuit")
    o_ft = Question(correlation.family, correlation.operand, label_operand=correlation.label_of)
    asked_o_ft = torch.from_numpy(
        ft.task.encode(inputs.batch.text, o_ft, ft.task.labels(inputs.batch.text, o_ft)))
    col = inputs.batch.answer_col  # the same strings asking O_FT: the corrupted run
    corrupted, competing = asked_o_ft[:, :col], asked_o_ft[:, col]
    metric = logit_difference(inputs.answers, competing)

    def score(model: HookedTransformer, method: str):
        args = (model.eval(), inputs.tokens, corrupted, metric)
        if method == "exact":
            return exact_edge_patching(*args)
        return eap_scores(*args) if method == "eap" else eap_ig_scores(*args, steps=o.steps)

    before, after = score(pt.model, o.method), score(ft.model, o.method)
    top_n = min(o.top_n, len(before.edges))  # a small model may have fewer edges than asked
    diff = diff_circuits(before, after, top_n=top_n, ratio=o.ratio)
    result: dict[str, Any] = {
        "run": str(run_dir), "pretrained": str(pt.path), "method": o.method, "steps": o.steps,
        "top_n": top_n, "ratio": o.ratio, "samples": o.samples,
        "metric": f"logit[{ft.question().name}] - logit[{o_ft.name}]",
        "edges": list(before.edges), "pretrained_scores": before.values.tolist(),
        "finetuned_scores": after.values.tolist(), "rows": diff.rows(), "counts": diff.counts(),
        "spearman_vs_exact": None,
    }
    if o.compare_exact and o.method != "exact":
        result["spearman_vs_exact"] = {
            name: spearman(scores.values, score(model, "exact").values)
            for name, model, scores in (("pretrained", pt.model, before),
                                        ("finetuned", ft.model, after))}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(plot_circuit_diff(diff, title=f"{o.method} circuits of '{ft.question().name}' "
                                              f"vs '{o_ft.name}', top {top_n}"),
                out / "circuit.png")
    write_json(out / "circuit.json", result)
    return result
