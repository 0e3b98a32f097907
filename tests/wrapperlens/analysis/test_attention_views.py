"""Attention views: patterns against a hand computation, an offline page, a real headless render."""

import math
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from wrapperlens.analysis.attention_views import (
    attention_page,
    attention_patterns,
    write_attention_html,
)
from wrapperlens.models import ModelConfig, build_model

SEQ = 8


def _pair():
    models = {}
    for name, seed in (("pretrained", 1), ("fine-tuned", 2)):
        model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, init_seed=seed),
                            n_ctx=SEQ, d_vocab=10)
        with torch.no_grad():
            for block in model.blocks:
                block.attn.W_Q.mul_(30.0)  # sharp patterns: visible colour in the screenshot
        models[name] = model
    return models, torch.arange(SEQ) % 10, [f"t{i}" for i in range(SEQ)]


def test_patterns_equal_softmax_of_cached_queries_and_keys():
    models, tokens, _ = _pair()
    model = models["pretrained"]
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n.endswith(("q", "k")))
    patterns = attention_patterns(model, tokens)
    assert patterns.shape == (2, 2, SEQ, SEQ)
    causal = torch.ones(SEQ, SEQ).tril().bool()
    for layer in range(2):
        q, k = cache[f"blocks.{layer}.attn.hook_q"][0], cache[f"blocks.{layer}.attn.hook_k"][0]
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
        expected = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        torch.testing.assert_close(patterns[layer], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_patterns(model, tokens, [1])[0], patterns[1])


def test_page_inlines_the_bundle_once_and_loads_nothing_from_the_network():
    models, tokens, str_tokens = _pair()
    page = attention_page(models, tokens, str_tokens[:-1] + ["</script><b>x"])
    assert page.count("var CircuitsVis=") == 1
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "unpkg" not in page
    assert page.count("CircuitsVis.render(") == 2 * 3  # 2 layers x (2 models + difference)
    assert "</script><b>x" not in page  # a token cannot close the script or inject markup
    assert "fine-tuned − pretrained" in page and "<h2>Layer 1</h2>" in page
    single = attention_page(models["pretrained"], tokens, str_tokens, layers=[1])
    assert single.count("CircuitsVis.render(") == 1 and "Layer 0" not in single
    with pytest.raises(ValueError, match="str_tokens"):
        attention_page(models, tokens, str_tokens[:-1])
    with pytest.raises(ValueError, match="layers"):
        attention_page(models, tokens, str_tokens, layers=[2])


def _colourful_pixels(png) -> int:
    """Pixels with a clear hue (attention cells, head labels); text and grid lines are grey."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return int((rgb.max(-1) - rgb.min(-1) > 80).sum())


def _screenshot(html_path, png_path):
    subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}", f"--screenshot={png_path}",
         "--window-size=1200,900", "--virtual-time-budget=5000", f"file://{html_path}"],
        check=True, capture_output=True, timeout=60,
    )


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (apt-get install -y chromium) for a real render")
def test_page_renders_visibly_offline_in_headless_chromium(tmp_path):
    models, tokens, str_tokens = _pair()
    page = write_attention_html(tmp_path / "attention.html", models, tokens, str_tokens)
    # Control: the same page without the render calls shows only headings and text.
    control = tmp_path / "control.html"
    control.write_text(re.sub(r"<script>CircuitsVis\.render\(.*?</script>", "",
                              page.read_text(), flags=re.DOTALL))
    _screenshot(page, tmp_path / "page.png")
    _screenshot(control, tmp_path / "control.png")
    rendered = _colourful_pixels(tmp_path / "page.png")
    blank = _colourful_pixels(tmp_path / "control.png")
    print(f"coloured pixels: rendered {rendered}, control {blank}")
    assert blank < 200, f"control page should have no coloured cells, has {blank} pixels"
    assert rendered > 20_000, f"only {rendered} coloured pixels: the views did not render"
