"""`report.html`: the results of `wrapperlens reproduce` as one self-contained page.

`write_report(out_dir, results, figures)` turns the results dict (the content of `results.json`,
`wrapperlens.results`) into `out_dir/report.html`, written atomically; `figures` gives each
setting's figure builders. The page opens offline: plots are PNG data URIs
(`report_plots`), and the attention views, HTML pages written with
`wrapperlens.analysis.attention_views`, are inlined with their circuitsvis bundle, which goes in
the page head once however many views there are. Nothing on the page is fetched from the network.

Sections, in order: the header (settings, preset, seeds and what they vary, run counts, every
failed, missing or skipped run with its error); the claims table (docs/claims.md) with the
measured mean and min-max over seeds next to the chance floor; each setting's plots (PCFG: the
paper's Figs 5-9); the attention views; the circuit diffs (a pretrained / fine-tuned pair's
edges kept, gained, lost and reweighted, `wrapperlens.analysis.circuit_diff`, with its picture);
the tables a setting draws (the known-wrapper leaderboard, docs/wrappers.md); a collapsed table of every run's final accuracies and floors.

Every piece of text from the results is escaped; a figure or view whose data is missing shows a
note saying so instead of failing the page.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from wrapperlens.report_plots import render_png
from wrapperlens.results import RESULTS_FILE, RESULTS_FORMAT, setting_view

__all__ = ["write_report", "report_page", "REPORT_NAME"]

REPORT_NAME = "report.html"
STATUS_CLASSES = {"reproduced": "ok", "not reproduced": "bad", "inconclusive": "warn",
                  "undefined": "none", "not covered": "none", "finished": "ok", "failed": "bad",
                  "missing": "bad", "skipped": "none"}
RUN_STATUSES = ("finished", "failed", "missing", "skipped")

_log = logging.getLogger(__name__)
_HEAD = re.compile(r"<head\b[^>]*>(?P<head>.*?)</head>", re.DOTALL | re.IGNORECASE)
_BODY = re.compile(r"<body\b[^>]*>(?P<body>.*)</body>", re.DOTALL | re.IGNORECASE)
_ASSET = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)


def write_report(out_dir: str | os.PathLike, results: Mapping,
                 figures: Mapping[str, Sequence[Callable]] | None = None) -> Path:
    """Write `out_dir/report.html` from `results` (atomically) and return its path.

    Args:
        out_dir: The reproduction's output directory; attention views' paths are relative to it.
        results: The results dict of `results.json` (`wrapperlens.results`).
        figures: Setting -> its figure builders (`Setting.figures`), each called with the
            setting's part of the results.
    """
    out_dir = Path(out_dir)
    page = report_page(results, out_dir, figures)
    path = out_dir / REPORT_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    # The temporary file sits next to the target, so os.replace is a rename: a reader sees the
    # old page or the new one. (wrapperlens.checkpoints.atomic_write does the same, but importing
    # it loads transformer_lens, ~10 s, for a page that needs none of it.)
    fd, tmp = tempfile.mkstemp(prefix=f".{REPORT_NAME}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the page is for anyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def report_page(results: Mapping, out_dir: str | os.PathLike = ".",
                figures: Mapping[str, Sequence[Callable]] | None = None) -> str:
    """The report as one HTML string (see the module docstring for its sections)."""
    if results.get("format") != RESULTS_FORMAT:  # anything else may be missing: notes say so
        raise ValueError(f"{RESULTS_FILE}: key 'format' is {results.get('format')!r}; this "
                         f"report reads format {RESULTS_FORMAT}")
    assets: list[str] = []
    attention = _attention_section(Path(out_dir), results.get("analyses") or [], assets)
    body = [_header(results), _claims_section(results.get("claims") or []),
            _figures_section(results, figures or {}), attention,
            _circuit_section(Path(out_dir), results.get("analyses") or []),
            _tables_section(results.get("tables") or {}),
            _runs_section(results.get("runs") or []), _footer(results)]
    return _PAGE.format(title=_e(f"wrapperlens reproduction: {results.get('preset', '?')}"),
                        assets="\n".join(assets), style=_STYLE, body="\n".join(body))


def _e(value) -> str:
    """Escaped text of any value (None as an em dash)."""
    return "—" if value is None else html.escape(str(value), quote=True)


def _num(value) -> str:
    """A number as the report prints it: 3 decimals, whole numbers past 100, '—' when absent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"


def _badge(status) -> str:
    return f'<span class="badge {STATUS_CLASSES.get(status, "none")}">{_e(status)}</span>'


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _counts(records: Iterable[Mapping], statuses: Iterable[str] = RUN_STATUSES) -> str:
    counts = Counter(r.get("status") for r in records)
    names = list(statuses) + sorted(str(s) for s in counts if s not in statuses)
    return " · ".join(f"{_e(s)} {counts.get(s, 0)}" for s in names)


def _header(results: Mapping) -> str:
    runs, analyses = results.get("runs") or [], results.get("analyses") or []
    roles = "".join(f"<dt>{_e(setting)}: {_e(stage)}</dt><dd>{_e(what)}</dd>"
                    for setting, stages in (results.get("seed_roles") or {}).items()
                    for stage, what in stages.items())
    seeds = ", ".join(f"{k} {v}" for k, v in (results.get("seeds") or {}).items())
    facts = (f"<dt>settings</dt><dd>{_e(', '.join(results.get('settings') or []))}</dd>"
             f"<dt>preset</dt><dd>{_e(results.get('preset'))}</dd>"
             f"<dt>seeds per cell</dt><dd>{_e(seeds)}</dd>"
             f"<dt>executor</dt><dd>{_e(results.get('executor'))}</dd>"
             f"<dt>wall time</dt><dd>{_duration(results.get('wall_seconds'))}</dd>"
             f"<dt>runs</dt><dd>{_counts(runs)}</dd>"
             f"<dt>analyses</dt><dd>{_counts(analyses)}</dd>")
    return (f"<h1>{_e('Reproduction of Jain et al. 2024: ' + str(results.get('preset', '?')))}"
            f"</h1><dl class='facts'>{facts}</dl>"
            f"<h3>What each seed varies</h3><dl class='facts'>{roles or '<dd>not stated</dd>'}</dl>"
            + _problems(runs, "runs") + _problems(analyses, "analyses"))


def _problems(records: list[Mapping], what: str) -> str:
    """Failed and missing records, listed open; skipped ones in a collapsed list."""
    bad = [r for r in records if r.get("status") in ("failed", "missing")]
    skipped = [r for r in records if r.get("status") == "skipped"]

    def items(rows):
        return "".join(f"<li>{_badge(r.get('status'))} <code>{_e(r.get('key'))}</code>: "
                       f"<span class='error'>{_e(r.get('error') or 'no error recorded')}</span></li>"
                       for r in rows)

    parts = []
    if bad:
        parts.append(f"<h3 class='problem'>{what} failed or missing: {len(bad)} (the results "
                     f"below lack them)</h3><ul>{items(bad)}</ul>")
    if skipped:
        parts.append(f"<details><summary>{what} skipped: {len(skipped)}</summary>"
                     f"<ul>{items(skipped)}</ul></details>")
    return "".join(parts)


def _measured(claim: Mapping) -> str:
    values = [v for v in claim.get("values") or [] if _num(v) != "—"]
    mean, spread = claim.get("mean"), claim.get("spread")
    if _num(mean) == "—":
        return "—"
    text = _num(mean)
    if isinstance(spread, (list, tuple)) and len(spread) == 2:
        text += f" ({_num(spread[0])}–{_num(spread[1])})"
    return f"{text}<br><small>n = {len(values)}</small>"


def _seeds_vary(claim: Mapping) -> str:
    vary = claim.get("seeds_vary")
    return f"<br><small>seeds vary: {_e(vary)}</small>" if vary else ""


def _claims_section(claims: list[Mapping]) -> str:
    if not claims:
        return "<h2>Claims</h2><p class='note'>No claims in the results.</p>"
    rows = "".join(
        f"<tr class='claim'><td>{_e(c.get('id'))}</td><td>{_e(c.get('title'))}</td>"
        f"<td>{_e(c.get('paper'))}</td><td>{_e(c.get('rule'))}</td>"
        f"<td>{_e(c.get('quantity'))}{_seeds_vary(c)}</td>"
        f"<td class='num'>{_measured(c)}</td><td class='num'>{_num(c.get('floor'))}</td>"
        f"<td>{_badge(c.get('status'))}</td><td>{_e(c.get('note'))}</td></tr>"
        for c in claims)
    head = "".join(f"<th>{h}</th>" for h in ("#", "claim", "paper", "rule", "quantity",
                                             "measured: mean (min–max)", "chance floor",
                                             "status", "note"))
    return (f"<h2>Claims</h2><p>The paper's claims (docs/claims.md), each measured on every seed; "
            f"the spread is min–max over seeds.</p>"
            f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def _figures_section(results: Mapping, figures: Mapping[str, Sequence[Callable]]) -> str:
    parts = ["<h2>Figures</h2>"]
    for setting in results.get("settings") or []:
        view = setting_view(results, setting)
        parts += [_figure(build, view) for build in figures.get(setting, ())]
    return "\n".join(parts)


def _figure(build, results: Mapping) -> str:
    """One figure as <figure>, or a note saying why it is not drawn."""
    try:
        figure = build(results)
        uri = render_png(figure) if figure.panels else None
    except Exception as error:  # a malformed record must not cost the rest of the report
        _log.warning("report: %s failed", build.__name__, exc_info=True)
        return (f"<h3>{_e(build.__doc__.splitlines()[0])}</h3>"
                f"<p class='note'>Not drawn: {_e(repr(error))}</p>")
    if uri is None:
        return f"<h3>{_e(figure.title)}</h3><p class='note'>Not drawn: {_e(figure.note)}.</p>"
    return (f"<figure><h3>{_e(figure.title)}</h3><img alt='{_e(figure.title)}' src='{uri}'>"
            f"<figcaption>{_e(figure.caption)}</figcaption></figure>")


def _attention_section(out_dir: Path, analyses: list[Mapping], assets: list[str]) -> str:
    """Every attention view inlined; its head scripts and styles go once into `assets`."""
    views = [a for a in analyses if a.get("kind") == "attention"]
    if not views:
        return "<h2>Attention views</h2><p class='note'>No attention analyses in the results.</p>"
    parts = ["<h2>Attention views</h2>"]
    for view in views:
        result = view.get("result") or {}
        title = f"<h3>{_e(result.get('label') or view.get('key'))}</h3>"
        if view.get("status") != "finished":
            parts.append(title + f"<p class='note'>{_badge(view.get('status'))} "
                                 f"{_e(view.get('error') or 'no error recorded')}</p>")
            continue
        parts.append(title + _inline_view(out_dir, result.get("html"), assets))
    return "\n".join(parts)


def _inline_view(out_dir: Path, relative, assets: list[str]) -> str:
    path = out_dir / str(relative)
    if not relative or not path.is_file():
        return f"<p class='note'>Attention view file not found: {_e(relative)}</p>"
    text = path.read_text(encoding="utf-8")
    head, body = _HEAD.search(text), _BODY.search(text)
    if body is None:  # a fragment (circuitsvis local_src): self-contained as it is
        return f"<div class='attention'>{text}</div>"
    for asset in _ASSET.finditer(head["head"] if head else ""):
        if asset[0] not in assets:
            assets.append(asset[0])
    return f"<div class='attention'>{body['body']}</div>"


def _circuit_section(out_dir: Path, analyses: list[Mapping]) -> str:
    """Every circuit diff: its picture, counts, agreement with exact patching and edge table."""
    diffs = [a for a in analyses if a.get("kind") == "circuit"]
    if not diffs:
        return ""
    parts = ["<h2>Circuit diffs</h2><p class='note'>Edges of the pretrained and the fine-tuned "
             "model's circuits (each its top edges by |score|): kept, reweighted (sign flip or a "
             "factor beyond the ratio), gained by fine-tuning, lost (docs/edges.md).</p>"]
    for diff in diffs:
        result = diff.get("result") or {}
        parts.append(f"<h3>{_e(diff.get('key'))}</h3>")
        if diff.get("status") != "finished":
            parts.append(f"<p class='note'>{_badge(diff.get('status'))} "
                         f"{_e(diff.get('error') or 'no error recorded')}</p>")
            continue
        counts = ", ".join(f"{_e(n)} {_e(s)}" for s, n in (result.get("counts") or {}).items())
        agree = result.get("spearman_vs_exact") or {}
        agreement = "; ".join(f"{_e(m)} {_num(v)}" for m, v in agree.items())
        parts.append(f"<p>{_e(result.get('method'))} scores of <code>{_e(result.get('metric'))}"
                     f"</code>, top {_e(result.get('top_n'))} of {_e(result.get('edges'))} edges:"
                     f" {counts}." + (f" Spearman with exact edge patching: {agreement}."
                                      if agreement else "") + "</p>")
        parts.append(_png(out_dir, result.get("png"), "circuit diff"))
        rows = "".join(f"<tr><td><code>{_e(r.get('edge'))}</code></td><td>{_num(r.get('before'))}"
                       f"</td><td>{_num(r.get('after'))}</td><td>{_e(r.get('status'))}</td></tr>"
                       for r in result.get("rows") or [])
        parts.append("<details><summary>Edges</summary><table><tr><th>edge</th><th>pretrained"
                     f"</th><th>fine-tuned</th><th>status</th></tr>{rows}</table></details>")
    return "\n".join(parts)


def _table_cell(value) -> str:
    """A leaderboard cell: a spread {"mean", "min", "max"}, a rate {"count", "n"} or a value."""
    if isinstance(value, Mapping) and "mean" in value:
        return f"{_num(value['mean'])} ({_num(value['min'])}–{_num(value['max'])})"
    if isinstance(value, Mapping) and "rate" in value:
        return f"{_e(value['count'])}/{_e(value['n'])}"
    return _num(value) if isinstance(value, (int, float)) else _e(value)


def _tables_section(tables: Mapping) -> str:
    """Every table that says how it is drawn ({"title", "note", "columns": [[key, heading]],
    "rows"}), e.g. the known-wrapper leaderboard (docs/wrappers.md)."""
    drawn = [t for t in tables.values() if isinstance(t, Mapping) and "columns" in t]
    parts = []
    for table in drawn:
        head = "".join(f"<th>{_e(h)}</th>" for _, h in table["columns"])
        rows = "".join("<tr>" + "".join(f"<td class='num'>{_table_cell(row.get(k))}</td>"
                                        for k, _ in table["columns"]) + "</tr>"
                       for row in table.get("rows") or [])
        parts.append(f"<h2>{_e(table.get('title'))}</h2><p>{_e(table.get('note'))}</p><table>"
                     f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return "\n".join(parts)


def _png(out_dir: Path, relative, alt: str) -> str:
    """A PNG written by an analysis, inlined as a data URI (or a note if it is missing)."""
    path = out_dir / str(relative)
    if not relative or not path.is_file():
        return f"<p class='note'>Picture not found: {_e(relative)}</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _finals(run: Mapping) -> str:
    final, floors = run.get("final") or {}, run.get("floors") or {}
    cells = [f"<code>{_e(m)}</code> {_num(v)}"
             + (f" <small>(floor {_num(floors[m])})</small>" if m in floors else "")
             for m, v in sorted(final.items()) if m.startswith("acc")]
    return "<br>".join(cells) or "—"


def _runs_section(runs: list[Mapping]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(r.get('key'))}</code></td><td>{_e(r.get('stage'))}</td>"
        f"<td>{_badge(r.get('status'))}</td><td class='num'>{_num(r.get('seconds'))}</td>"
        f"<td>{_finals(r)}</td></tr>" for r in runs)
    head = "".join(f"<th>{h}</th>" for h in ("run", "stage", "status", "seconds",
                                             "final accuracy (chance floor)"))
    return (f"<h2>Every run</h2><details><summary>{len(runs)} runs: final accuracies and chance "
            f"floors</summary><table class='runs'><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _footer(results: Mapping) -> str:
    return (f"<footer>Built by wrapperlens from {RESULTS_FILE} (format "
            f"{_e(results.get('format', RESULTS_FORMAT))}) in this directory.</footer>")


_STYLE = """
body { font-family: sans-serif; margin: 24px; max-width: 1500px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left; }
td.num { text-align: right; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
.badge { padding: 1px 6px; border-radius: 4px; white-space: nowrap; font-size: 12px; }
.badge.ok { background: #c8ecc9; } .badge.bad { background: #f6c6c6; }
.badge.warn { background: #fbe3a6; } .badge.none { background: #e2e2e2; }
.note, .problem { color: #a33; } .error { font-family: monospace; white-space: pre-wrap; }
figure { margin: 16px 0; } figure img { max-width: 100%; }
figcaption { font-size: 13px; color: #555; }
.attention { border: 1px solid #ddd; padding: 8px; margin-bottom: 16px; overflow-x: auto; }
.attention h1 { font-size: 1.1em; }
footer { margin-top: 32px; font-size: 12px; color: #666; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{assets}
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
