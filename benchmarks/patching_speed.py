"""Activation patching and attribution patching against TransformerLens, measured in one run.

A full layer x position sweep of `resid_pre` patching (clean -> corrupted inputs of one model, the
setting of `transformer_lens.patching.get_act_patch_resid_pre`, and pretrained -> "fine-tuned"
across two models) with

- `transformer_lens.patching.get_act_patch_resid_pre` (its tqdm bar switched off) after a
  `run_with_cache` of the source run: the reference, and
- `wrapperlens.analysis.activation_patching` (caching both runs included),

checks that the results agree to 1e-5 and prints the speed ratio. Then attribution patching:
Spearman rank correlation of its node estimates with the exact effects of the sweep, and its time
against both exact sweeps.

The default shape is the `cpu` preset's model, context and vocabulary (a stand-in of 3 x 128 with
71 positions and 100 tokens if the preset cannot be loaded); flags override it. Timings are the
best of `--repeats` runs of wall-clock time, the methods taking turns. Compare ratios only
within one run: a machine shared with other jobs gives noisy absolute times.

    python benchmarks/patching_speed.py                       # cpu preset shape
    python benchmarks/patching_speed.py --layers 3 --d-model 128 --seq 71 --vocab 100
    python benchmarks/patching_speed.py --device cuda
    python benchmarks/patching_speed.py --run runs/ft     # a trained fine-tuned run + its parent

With `--run`, the models are a trained fine-tuning run and the pretrained run it started from,
on real PCFG prompts ("count a" cut after `<art>`); the clean -> corrupted pair is the same
strings asked "count a" and "count b", and the metric is the logit difference between the
count-a and count-b answers at the last position.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import transformer_lens.patching as tl_patching

from wrapperlens.analysis import (
    ActivationPatcher,
    PatchingConfig,
    attribution_patching,
    logit_difference,
)
from wrapperlens.analysis.localisation import spearman  # ties share their average rank
from wrapperlens.models import ModelConfig, build_model

tl_patching.tqdm = lambda iterable, **kwargs: iterable  # the reference without its progress bar


def preset_shape() -> tuple[ModelConfig, int, int, str]:
    """(model config, n_ctx, d_vocab, description) of the `cpu` preset, or the stand-in."""
    try:
        from tasks.data import PCFGTask
        from wrapperlens.presets import get_preset

        preset = get_preset("cpu", "pcfg")
        task = PCFGTask(preset.task)
        return preset.model, task.n_ctx, len(task.vocab), "cpu preset"
    except Exception as error:  # noqa: BLE001 - any failure means: use the stand-in
        print(f"(cpu preset unavailable: {error!r}; using the 3 x 128 stand-in)")
        return ModelConfig(n_layers=3, d_model=128, n_heads=4), 71, 100, "stand-in"


def timed(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int, device: str
) -> dict[str, tuple[float, torch.Tensor]]:
    """Best wall-clock time of `repeats` calls of each function, and its last result.

    The functions take turns within each repeat, so a load that comes and goes on a shared
    machine hits them alike.
    """
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best[name] = (min(best[name][0], time.perf_counter() - start), result)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int)
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--seq", type=int, help="sequence length (default: the preset's n_ctx)")
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patches-per-forward", type=int, default=0, help="0 = automatic")
    parser.add_argument("--finetune-noise", type=float, default=0.05,
                        help="relative weight noise of the 'fine-tuned' stand-in")  # fmt: skip
    parser.add_argument("--run", help="a trained finetune run directory (its parent is used too)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        return trained_scenarios(args)

    shape, n_ctx, d_vocab, origin = preset_shape()
    shape = ModelConfig(
        n_layers=args.layers or shape.n_layers,
        d_model=args.d_model or shape.d_model,
        n_heads=args.heads or shape.n_heads,
        init_seed=0,
    )
    n_pos, d_vocab = args.seq or n_ctx, args.vocab or d_vocab
    n_ctx = max(n_ctx, n_pos)
    model = build_model(shape, n_ctx=n_ctx, d_vocab=d_vocab)
    # A "fine-tuned" stand-in: the same weights plus a little noise.
    finetuned = build_model(shape, n_ctx=n_ctx, d_vocab=d_vocab)
    finetuned.load_state_dict(model.state_dict())
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in finetuned.parameters():
            scale = args.finetune_noise * param.std() if param.numel() > 1 else 0.0
            param.add_(torch.randn(param.shape, generator=noise) * scale)
    if args.device != "cpu":
        model, finetuned = model.to(args.device), finetuned.to(args.device)

    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(0, d_vocab, (args.batch, n_pos), generator=generator)
    # A minimal pair: the same prompts with the token at one position (the middle) resampled.
    one_token = clean.clone()
    one_token[:, n_pos // 2] = (clean[:, n_pos // 2] + 1 + torch.randint(
        0, d_vocab - 1, (args.batch,), generator=generator)) % d_vocab  # fmt: skip
    random = torch.randint(0, d_vocab, (args.batch, n_pos), generator=generator)
    clean, one_token, random = (t.to(args.device) for t in (clean, one_token, random))
    metric = logit_difference(1, 2)  # at the last position, averaged over the batch
    print(
        f"{origin}: {shape.n_layers} layers x d_model {shape.d_model} x {shape.n_heads} heads, "
        f"{n_pos} positions, vocab {d_vocab}, batch {args.batch}; device {args.device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; best of {args.repeats}"
    )
    print(f"sweep: resid_pre, {shape.n_layers} x {n_pos} = {shape.n_layers * n_pos} patches, "
          "metric = logit difference at the last position")  # fmt: skip

    scenarios = {
        "clean -> corrupted, one model, prompts differing at one position":
            (model, clean, model, one_token),
        "clean -> corrupted, one model, unrelated random prompts": (model, clean, model, random),
        "pretrained -> fine-tuned stand-in, two models, same prompts":
            (model, clean, finetuned, clean),
    }  # fmt: skip
    run_scenarios(scenarios, metric, args)


def run_scenarios(scenarios, metric, args) -> None:
    """Time and compare every (source, source tokens, target, target tokens) scenario."""
    summary = []
    for title, (source, source_tokens, target, target_tokens) in scenarios.items():
        print(f"\n== {title}")

        def reference() -> torch.Tensor:
            _, cache = source.run_with_cache(source_tokens)
            return tl_patching.get_act_patch_resid_pre(target, target_tokens, cache, metric)

        def ours(patches_per_forward: int) -> torch.Tensor:
            patcher = ActivationPatcher(
                target, target_tokens, source_model=source, source_tokens=source_tokens
            )
            config = PatchingConfig("resid_pre", patches_per_forward=patches_per_forward)
            return patcher.sweep(metric, config)

        def attribution() -> torch.Tensor:
            return attribution_patching(
                target, target_tokens, metric, "resid_pre",
                source_model=source, source_tokens=source_tokens,
            )  # fmt: skip

        times = timed(
            {
                "reference": reference,
                "one": lambda: ours(1),
                "auto": lambda: ours(args.patches_per_forward),
                "attribution": attribution,
            },
            args.repeats,
            args.device,
        )
        (t_ref, expected), (t_one, single) = times["reference"], times["one"]
        (t_auto, result), (t_attr, estimate) = times["auto"], times["attribution"]
        error = max((result - expected).abs().max().item(), (single - expected).abs().max().item())
        print(f"TransformerLens get_act_patch_resid_pre   {t_ref:8.3f} s")
        print(f"wrapperlens, one patch per forward        {t_one:8.3f} s   {t_ref / t_one:5.2f}x")
        label = f"wrapperlens, patches_per_forward={args.patches_per_forward or 'auto'}"
        print(f"{label:<42}{t_auto:8.3f} s   {t_ref / t_auto:5.2f}x")
        verdict = "identical (<= 1e-5)" if error <= 1e-5 else "MISMATCH (> 1e-5)"
        print(f"max |wrapperlens - TransformerLens|       {error:.2e}  {verdict}")

        with torch.no_grad():
            baseline = metric(target(target_tokens))
        effect = expected - baseline
        t_exact = min(t_one, t_auto)
        print(f"attribution patching                      {t_attr:8.3f} s   "
              f"1/{t_exact / t_attr:.0f} of wrapperlens's sweep, 1/{t_ref / t_attr:.0f} of "
              "TransformerLens's")  # fmt: skip
        rho, rho_abs = spearman(estimate, effect), spearman(estimate.abs(), effect.abs())
        print(f"Spearman(attribution, exact effect)       {rho:.3f} signed, "
              f"{rho_abs:.3f} by magnitude")  # fmt: skip
        speedup = t_ref / min(t_one, t_auto)
        summary.append((title, speedup, error, t_ref / t_attr, t_exact / t_attr, rho))

    print("\n== summary (speed-up of the best wrapperlens setting; attribution time as a fraction)")
    for title, speedup, error, attr_vs_ref, attr_vs_ours, rho in summary:
        print(f"{speedup:5.2f}x  err {error:.0e}  attribution 1/{attr_vs_ref:.0f} of TL, "
              f"1/{attr_vs_ours:.0f} of ours, Spearman {rho:.3f}  | {title}")


def trained_scenarios(args) -> None:
    """The sweep on a trained pretrained / fine-tuned pair and real PCFG prompts."""
    from edge_attribution import count_prompts  # this folder's sibling: the same prompts

    run, finetuned, pretrained, clean, corrupted, metric = count_prompts(args.run, args.batch)
    ft = run.finetune_data
    cfg = finetuned.cfg
    print(f"trained run {args.run} (parent {run.parent}): {cfg.n_layers} layers x d_model "
          f"{cfg.d_model} x {cfg.n_heads} heads, {clean.shape[1]} positions, batch {args.batch}; "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; best of {args.repeats}")
    print(f"metric: logit[count {ft.pretrain_operand}] - logit[count {ft.operand}] at <art>")
    scenarios = {
        f"clean -> corrupted, fine-tuned model, 'count {ft.pretrain_operand}' -> "
        f"'count {ft.operand}' prompts": (finetuned, clean, finetuned, corrupted),
        "pretrained -> fine-tuned, two trained models, same prompts":
            (pretrained, clean, finetuned, clean),
    }  # fmt: skip
    run_scenarios(scenarios, metric, args)

if __name__ == "__main__":
    main()
