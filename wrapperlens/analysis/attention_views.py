"""Attention patterns as one self-contained HTML page (circuitsvis), for one model or a pair.

A wrapper often shows up in attention: the fine-tuned model's head that read `b` still reads `a`,
or a new head appears (Jain et al. 2024, §3.2, Figs 39-54). This module draws every head of every
layer with circuitsvis's `AttentionHeads` view, models side by side per layer, with an optional
"fine-tuned minus pretrained" difference view for a pair.

Offline rendering: ``str(RenderedHTML)`` / ``cdn_src`` import the circuitsvis bundle from unpkg
and render a blank page without network. ``RenderedHTML.local_src`` inlines the 1.3 MB bundle
instead; this module takes the bundle from the first view's ``local_src`` once, puts it in the page
head as a classic script (which defines the global ``CircuitsVis``), and emits only the small
``CircuitsVis.render(...)`` call for every view, so a page of many views stays ~1.3 MB and opens
with no network at all.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import circuitsvis.attention
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from wrapperlens.components import hook_name

__all__ = ["attention_patterns", "attention_page", "write_attention_html"]

_LOCAL_SRC = re.compile(
    r'^\s*<div id="(?P<id>[^"]+)"[^>]*>\s*<script crossorigin type="module">'
    r"(?P<library>.*)(?P<call>CircuitsVis\.render\(.*?\))\s*</script>\s*$",
    re.DOTALL,
)


def attention_patterns(
    model: HookedTransformer, tokens: Int[Tensor, "pos"], layers: Sequence[int] | None = None
) -> Float[Tensor, "layer head query key"]:
    """Attention patterns of `layers` (default all) on one sequence, from component ``pattern``.

    Returns:
        `[layer, head, query, key]`: layer i is `layers[i]`; float32 on the CPU.
    """
    layers = _check_layers(model, layers)
    names = [hook_name("pattern", l) for l in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens[None].to(model.cfg.device),
            names_filter=lambda n: n in names,
            stop_at_layer=max(layers) + 1,
        )
    return torch.stack([cache[n][0] for n in names]).float().cpu()


def _check_layers(model: HookedTransformer, layers: Sequence[int] | None) -> list[int]:
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    if not layers or any(not 0 <= l < model.cfg.n_layers for l in layers):
        raise ValueError(f"layers must be non-empty and in [0, {model.cfg.n_layers - 1}], "
                         f"got {layers}")
    return layers


def _view(
    pattern: Float[Tensor, "head query key"],
    str_tokens: list[str],
    layer: int,
    min_value: float,
    max_value: float,
    causal: bool = True,
) -> tuple[str, str, str]:
    """(div id, library JS, render call) for one layer's heads, from circuitsvis's local_src.

    `causal` hides the keys after each query (they get no attention); a bidirectional model (the
    compiled ones) attends to them, so they are drawn."""
    rendered = circuitsvis.attention.attention_heads(
        attention=pattern,
        tokens=str_tokens,
        attention_head_names=[f"L{layer}H{h}" for h in range(pattern.shape[0])],
        min_value=min_value,
        max_value=max_value,
        mask_upper_tri=causal,
    )
    match = _LOCAL_SRC.match(rendered.local_src)
    if match is None:
        raise RuntimeError(
            "circuitsvis RenderedHTML.local_src no longer has the layout this module parses "
            f"(circuitsvis {circuitsvis.__version__}); update wrapperlens/analysis/attention_views.py"
        )
    # "</" would end the <script> early if a token contains "</script>"; "<\/" is the same string.
    return match["id"], match["library"], match["call"].replace("</", "<\\/")


def attention_page(
    models: dict[str, HookedTransformer] | HookedTransformer,
    tokens: Int[Tensor, "pos"],
    str_tokens: Sequence[str],
    layers: Sequence[int] | None = None,
    title: str = "Attention patterns",
    show_difference: bool = True,
    max_value: float = 1.0,
) -> str:
    """One self-contained HTML page with every head of every layer, models side by side.

    Args:
        models: One model or {name: model}, e.g. {"pretrained": pt, "fine-tuned": ft}.
        tokens: One token sequence (1-D), shared by every model.
        str_tokens: Display string of each token (same length as `tokens`).
        layers: Layers to draw (default all).
        title: Page heading.
        show_difference: For exactly two models, add a third column: second minus first.
        max_value: Value drawn at full colour (the paper's maps use 0.5).
    """
    models = {"model": models} if isinstance(models, HookedTransformer) else dict(models)
    if not models:
        raise ValueError("models is empty")
    tokens = tokens.flatten() if tokens.ndim == 2 and tokens.shape[0] == 1 else tokens
    if len(str_tokens) != tokens.shape[-1]:
        raise ValueError(f"{len(str_tokens)} str_tokens for {tokens.shape[-1]} tokens")
    first = next(iter(models.values()))
    layers = _check_layers(first, layers)
    patterns = {name: attention_patterns(m, tokens, layers) for name, m in models.items()}
    columns = dict(patterns)
    names = list(patterns)
    if show_difference and len(names) == 2:
        a, b = names
        if patterns[a].shape != patterns[b].shape:
            raise ValueError(f"cannot difference {a!r} and {b!r}: their heads differ in shape")
        columns[f"{b} − {a}"] = patterns[b] - patterns[a]

    library, body = None, []
    for i, layer in enumerate(layers):
        cells = []
        for name, pattern in columns.items():
            diff = name not in patterns
            div_id, js, call = _view(pattern[i], [str(t) for t in str_tokens], layer,
                                     -max_value if diff else 0.0, max_value,
                                     causal=first.cfg.attention_dir == "causal")
            library = library or js
            cells.append(f'<div class="cell"><h3>{html.escape(name)}</h3>'
                         f'<div id="{div_id}"></div><script>{call}</script></div>')
        body.append(f'<h2>Layer {layer}</h2><div class="row" style="grid-template-columns: '
                    f'repeat({len(columns)}, minmax(320px, 1fr))">{"".join(cells)}</div>')
    return _PAGE.format(
        title=html.escape(title),
        library=library,
        models=html.escape(", ".join(names)),
        tokens=html.escape(" ".join(str(t) for t in str_tokens)),
        body="\n".join(body),
    )


def write_attention_html(path: str | Path, *args, **kwargs) -> Path:
    """Write `attention_page(*args, **kwargs)` to `path` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(attention_page(*args, **kwargs), encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; }}
.row {{ display: grid; gap: 24px; align-items: start; }}
.cell {{ min-width: 320px; }}
h3 {{ margin: 4px 0; }}
</style>
<script>{library}</script>
</head>
<body>
<h1>{title}</h1>
<p>Models: {models}. Tokens: <code>{tokens}</code>. Rows are query (attending) tokens,
columns key (attended) tokens; click a head to enlarge it.</p>
{body}
</body>
</html>
"""
