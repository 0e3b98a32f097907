"""Training tokens/s of wrapperlens's HookedTransformer against a plain-PyTorch GPT of identical
shape (fused `scaled_dot_product_attention`, `F.layer_norm`), same batch, same process
(run by hand: `python benchmarks/train_throughput.py [--steps 8]`).

Each measured step is the trainer's: forward, next-token cross-entropy, backward, gradient clip,
AdamW. The models are timed in alternation, step by step, so drift in the machine's speed hits
both alike; the median step time is reported. Also shown: the same HookedTransformer with the
fused paths switched off (TransformerLens's einsum attention and its LayerNorm), for reference.
Target: HookedTransformer / plain <= 1.15 at the `cpu` and `paper` shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from plain_gpt import PlainGPT  # noqa: E402

from wrapperlens.models import set_fused_attention  # noqa: E402
from wrapperlens.experiments.pcfg.stages import resolve_configs  # noqa: E402

SHAPES = {"cpu": "cpu", "paper": "paper"}


def step(model, opt, tokens, d_vocab):
    start = time.perf_counter()
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, d_vocab), tokens[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's batch")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'preset':7}{'shape':>20}{'seq':>5}{'batch':>6}{'HT tok/s':>11}{'plain tok/s':>13}"
          f"{'HT/plain':>10}{'unfused/plain':>15}")
    for preset in args.presets:
        run = resolve_configs("pretrain", preset)
        mc = run.sections["model"]
        batch = run.batch(0).tokens[: args.batch or run.train_config.batch_size]
        d_vocab = len(run.task.vocab)
        ht = run.new_model()
        unfused = run.new_model()
        set_fused_attention(unfused, False)
        plain = PlainGPT(mc.n_layers, mc.d_model, mc.n_heads, mc.d_mlp or 4 * mc.d_model,
                         run.task.n_ctx, d_vocab)
        models = {"ht": ht, "plain": plain, "unfused": unfused}
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
        times: dict[str, list[float]] = {k: [] for k in models}
        for i in range(args.steps + 1):
            for k, m in models.items():
                t = step(m, opts[k], batch, d_vocab)
                if i:  # the first step warms up allocators and kernels
                    times[k].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        shape = f"{mc.n_layers}x{mc.d_model} ({mc.n_heads}h)"
        print(f"{preset:7}{shape:>20}{batch.shape[1] - 1:>5}{batch.shape[0]:>6}"
              f"{tokens / med['ht']:>11,.0f}{tokens / med['plain']:>13,.0f}"
              f"{med['ht'] / med['plain']:>10.2f}{med['unfused'] / med['plain']:>15.2f}")


if __name__ == "__main__":
    main()
