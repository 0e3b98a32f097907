"""The PCFG report's plots: the paper's Figs 5-9 from the PCFG part of a results dict.

Each `fig*` function turns the runs or analyses of `results.json` into a
`wrapperlens.report_plots.Figure` (panels of series reduced over seeds; no panels and a note
when its data is missing), which the report draws with `render_png`.

Runs are grouped by their ``params`` without ``"seed"``: the runs of one group differ only in the
seed, and their spread over seeds is what the error bars (min-max) show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from wrapperlens.report_plots import COLOURS as _COLOURS
from wrapperlens.report_plots import SPREAD_WORDS, Figure, Panel, Series, spread
from wrapperlens.report_plots import series as _series

__all__ = ["FIGURES", "fig5", "fig6", "fig7", "fig8", "fig9"]

FIG5_METRICS = ("acc/O_FT/cte0", "acc/O_FT/cte1", "acc/O_PT/cte0", "acc/O_PT/cte1")
PT_METRICS = ("acc/O_PT/cte0", "acc/O_PT/natural")  # count a; cte0 first, as the paper plots it
PRUNE_METRICS = ("acc/O_PT/cte0", "acc/O_FT/cte0")
PARAM_ORDER = ("family", "prior", "c_tr", "eta", "lr")  # how a group's label reads


def _finished(records: Iterable[Mapping], **match) -> list[Mapping]:
    return [r for r in records if r.get("status") == "finished"
            and all(r.get(k) == v for k, v in match.items())]


def _params(record: Mapping) -> dict:
    return dict(record.get("params") or {})


def _label(params: Mapping, drop: Iterable[str] = ()) -> str:
    """"eta=M, lr=0.0001" from params, without seed and the keys in `drop`."""
    drop = {"seed", *drop}
    keys = sorted(params, key=lambda k: (PARAM_ORDER.index(k) if k in PARAM_ORDER
                                         else len(PARAM_ORDER), k))
    return ", ".join(f"{k}={params[k]}" for k in keys if k not in drop) or "all"


def _by(records: Iterable[Mapping], keep, drop: Iterable[str] = ()) -> dict[str, list[Mapping]]:
    """Records grouped by the label of `keep(record)`'s params without seed and `drop`."""
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for record in records:
        groups[_label(keep(record), drop)].append(record)
    return dict(sorted(groups.items()))


def _as_x(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floor_line(runs: Sequence[Mapping], metric: str, x_key: str):
    points: dict[float, list] = defaultdict(list)
    for run in runs:
        x = _as_x(_params(run).get(x_key))
        if x is not None:
            points[x].append((run.get("floors") or {}).get(metric))
    line = _series("floor", points)
    return None if line is None else (line.x, line.mean)


def fig5(results: Mapping) -> Figure:
    """Final Acc O_FT / O_PT on C_Te = 0 and 1 against C_Tr, per prior, one line per η (Fig. 5)."""
    runs = [r for r in _finished(results.get("runs") or [], stage="finetune")
            if _as_x(_params(r).get("c_tr")) is not None]
    title = "Fig. 5: final accuracy against the fine-tuning correlation C_Tr"
    caption = (f"Fine-tuning runs, one panel per prior and evaluation set, one line per η; "
               f"{SPREAD_WORDS}; dashed black: chance floor (majority-answer rate).")
    panels = []
    for prior, group in _by(runs, lambda r: {k: v for k, v in _params(r).items()
                                             if k in ("family", "prior")}).items():
        for metric in FIG5_METRICS:
            series = []
            for label, line in _by(group, _params, drop=("c_tr", "prior", "family")).items():
                points: dict[float, list] = defaultdict(list)
                for run in line:
                    points[_as_x(_params(run)["c_tr"])].append((run.get("final") or {}).get(metric))
                if (s := _series(label, points)) is not None:
                    series.append(s)
            if series:
                panels.append(Panel(f"{prior}: {metric}", series, "C_Tr",
                                    floor=_floor_line(group, metric, "c_tr")))
    return Figure(title, caption, panels, "" if panels else "no finished fine-tuning runs")


def _curve_points(runs: Iterable[Mapping], metric: str) -> dict[float, list]:
    points: dict[float, list] = defaultdict(list)
    for run in runs:
        for line in run.get("curve") or []:
            if _as_x(line.get("step")) is not None and metric in line:
                points[float(line["step"])].append(line[metric])
    return points


def _curve_series(groups: Mapping[str, list], metric: str, prefix: str = "", **style):
    found = (_series(prefix + label, _curve_points(runs, metric), band=True, **style)
             for label, runs in groups.items())
    return [s for s in found if s is not None]


def fig6(results: Mapping) -> Figure:
    """Acc O_PT over the fine-tuning steps, per prior and η, one curve per C_Tr (Fig. 6)."""
    runs = _finished(results.get("runs") or [], stage="finetune")
    metric = _curve_metric(runs, PT_METRICS)
    title = "Fig. 6: the pretraining capability (Acc O_PT) during fine-tuning"
    caption = (f"Fine-tuning runs, one panel per prior and η, one curve per C_Tr; metric "
               f"{metric}; {SPREAD_WORDS}.")
    panels = []
    for name, group in _by(runs, _params, drop=("c_tr",)).items():
        series = _curve_series(_by(group, lambda r: {"c_tr": _params(r).get("c_tr")}), metric)
        if series:
            panels.append(Panel(name, series, "fine-tuning step", ylabel=metric))
    return Figure(title, caption, panels, "" if panels else "no fine-tuning curves")


def _curve_metric(runs: Sequence[Mapping], names: Sequence[str]) -> str:
    for name in names:
        if any(name in line for r in runs for line in r.get("curve") or []):
            return name
    return names[0]


def _analysis_groups(results: Mapping, kind: str) -> dict[str, list[Mapping]]:
    """Finished analyses of `kind`, grouped by their run's params without seed (or their key)."""
    params = {r.get("key"): _params(r) for r in (results.get("runs") or [])}
    analyses = [a for a in _finished(results.get("analyses") or [], kind=kind)
                if isinstance(a.get("result"), Mapping)]

    def keep(analysis):
        found = params.get(analysis.get("run"))
        if found is not None:
            return found
        parts = str(analysis.get("key", "")).split("/")
        return {"key": "/".join(p for p in parts[1:] if not p.startswith("seed="))}

    return _by(analyses, keep)


def _indexed_series(label: str, lists: Iterable, x: Sequence, **style) -> Series | None:
    points: dict[float, list] = defaultdict(list)
    for values in lists:
        for i, value in enumerate((values or [])[:len(x)]):
            points[x[i]].append(value)
    return _series(label, points, **style)


def fig7(results: Mapping) -> Figure:
    """Accuracy after pruning the top-k units by g·w against k random units (Fig. 7)."""
    title = "Fig. 7: pruning the units with the largest g·w for the pretraining loss"
    caption = (f"Solid: the top-k units by g·w pruned; dashed: k random units (mean over draws); "
               f"{SPREAD_WORDS}.")
    panels = []
    for name, group in _analysis_groups(results, "prune").items():
        ks = [float(k) for k in (group[0]["result"].get("ks") or [])]
        metrics = sorted({m for a in group for m in (a["result"].get("top") or {})})
        shown = [m for m in PRUNE_METRICS if m in metrics] or metrics
        series = []
        for colour, metric in zip(_COLOURS, shown):
            for part, style in (("top", "-"), ("random", "--")):
                lists = [(a["result"].get(part) or {}).get(metric) for a in group]
                s = _indexed_series(f"{metric} {part}", lists, ks, band=True, linestyle=style,
                                    color=colour)
                series += [s] if s is not None else []
        if series:
            panels.append(Panel(name, series, "units pruned (k)"))
    return Figure(title, caption, panels, "" if panels else "no finished prune analyses")


def fig8(results: Mapping) -> Figure:
    """Linear-probe accuracy of count(a) by layer: pretrained, fine-tuned, random init (Fig. 8)."""
    title = "Fig. 8: linear probes of the pretraining quantity by layer"
    caption = (f"One panel per fine-tuned model; one line per probed model; {SPREAD_WORDS}; "
               f"dashed black: majority-class rate.")
    panels = []
    for name, group in _analysis_groups(results, "probe").items():
        layers = [str(l) for l in group[0]["result"].get("layers") or []]
        x = [float(i) for i in range(len(layers))]
        models = sorted({m for a in group for m in (a["result"].get("models") or {})})
        series = [s for m in models if (s := _indexed_series(
            m, [(a["result"].get("models") or {}).get(m) for a in group], x)) is not None]
        floor = spread(a["result"].get("majority_rate") for a in group)
        if series:
            target = group[0]["result"].get("target", "")
            panels.append(Panel(name, series, "layer", ylabel=f"probe accuracy {target}",
                                floor=None if floor is None else (x, [floor[0]] * len(x)),
                                xticklabels=layers))
    return Figure(title, caption, panels, "" if panels else "no finished probe analyses")


def fig9(results: Mapping) -> Figure:
    """reFT curves of the count-a accuracy against the Scr.+FT baseline, log-x (Fig. 9)."""
    # Counting a on natural strings: the same strings in reFT (O_PT = a) and Scr.+FT (O_FT = a)
    # runs, under one name (`wrapperlens.experiments.pcfg.grid.COUNT_A_NATURAL`).
    metric = "acc/count_a/natural"
    runs = results.get("runs") or []
    reft, scratch = _finished(runs, stage="reft"), _finished(runs, stage="scratch_finetune")
    title = "Fig. 9: reverse fine-tuning (reFT) against Scr.+FT"
    caption = (f"Metric {metric} (count a); solid: reFT runs, one curve per setting; dashed: "
               f"Scr.+FT; x symmetric-log (step 0 drawn linearly); {SPREAD_WORDS}.")
    baseline = _curve_series(_by(scratch, _params), metric, "Scr.+FT ", linestyle="--")
    panels = []
    for name, group in _by(reft, lambda r: {k: v for k, v in _params(r).items()
                                            if k in ("family", "prior")}).items():
        series = _curve_series(_by(group, _params, drop=("family", "prior")), metric, "reFT ")
        if series or baseline:
            panels.append(Panel(name, series + baseline, "step", ylabel=metric, xlog=True))
    if not panels and baseline:
        panels.append(Panel("Scr.+FT only (no finished reFT runs)", baseline, "step",
                            ylabel=metric, xlog=True))
    return Figure(title, caption, panels, "" if panels else "no finished reFT or Scr.+FT runs")


FIGURES = (fig5, fig6, fig7, fig8, fig9)  # the report's plots, in order
