"""What a compiled run's circuit still delivers, and single-weight pruning (paper App. G).

The analyses of the compiled grid (`wrapperlens.experiments.compiled.grid`), as sweep job
functions (JSON arguments, JSON values) and as functions of a run directory:

- `readout_job`: the counting head's attention to `a` and to `b` keys (claim 8), or the
  Max-identifier's sorting accuracy read from its labelled residual dimensions (claim 11);
- `prune_job` / `prune_run`: single-weight g·w pruning against as many random weights (claim 9),
  its gradient taken on inputs held out from the sets it is scored on (`gradient_letters`);
- `attention_view`: the attention patterns on one input as an offline page, with the answer.

Both run on the CPU, whatever the sweep's `device`: the compiled models are small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int

from wrapperlens.experiments.compiled.stages import load_compiled_run

__all__ = ["readout_job", "readout", "prune_job", "prune_run", "gradient_letters",
           "attention_view", "checked_letters", "GRADIENT_SAMPLES"]


#: Inputs of the g·w gradient batch (held out from every evaluation set, `gradient_letters`).
GRADIENT_SAMPLES = 512
#: The name of the gradient batch's stream (`CompiledTask.eval_rng`): not an evaluation set's.
GRADIENT_STREAM = "prune_gradient"


def readout_job(out: str, run: dict, device: str = "cpu") -> dict[str, Any]:
    """What the run's compiled circuit still delivers (claims 8 and 11), on C_Te = 0 inputs.

    Counter: the counting head's (block 0, head 0) attention from the last position to keys
    holding `a` and to keys holding `b` (summed over those keys, mean over inputs).
    Max-identifier: the fraction of positions whose `n_larger` (the sorting step's output, read
    as the argmax of its labelled residual dimensions after the last block) is the true number
    of larger letters. Runs on the CPU, whatever the sweep's `device`.
    """
    return readout(Path(out) / run["dir"])


def readout(run_dir: str | Path) -> dict[str, Any]:
    """`readout_job` of the run in `run_dir`."""
    from wrapperlens.components import hook_name

    compiled_run, model = load_compiled_run(run_dir)
    letters = compiled_run.eval_letters(0)
    tokens = compiled_run.token_ids(letters)
    task = compiled_run.task
    if task.config.program == "counter":
        name = hook_name("pattern", 0)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=name)
        pattern = cache[name][:, 0, -1, 1:].double().numpy()  # [batch, key letters]
        out_ = {}
        for letter in (task.config.o_pt, task.config.o_ft):
            mask = letters == task.vocab.index(letter)
            out_[f"attention_to_{letter}"] = float((pattern * mask).sum(1).mean())
        return out_
    name = hook_name("resid_post", model.cfg.n_layers - 1)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
    labels = compiled_run.description.residual_labels
    dims = [i for i, label in enumerate(labels)
            if label.startswith("n_larger:") and label.split(":")[1].isdigit()]
    values = np.array([int(labels[i].split(":")[1]) for i in dims])
    read = values[cache[name][:, 1:, dims].argmax(-1).numpy()]
    truth = (letters[:, None, :] < letters[:, :, None]).sum(-1)  # keys smaller index = larger
    return {"sorting_accuracy": float((read == truth).mean())}


def prune_job(out: str, run: dict, ks: list[int], random_seed: int,
              random_draws: int = 5, gradient_samples: int = GRADIENT_SAMPLES,
              device: str = "cpu") -> dict[str, Any]:
    """`prune_run` of the grid's run `out/run["dir"]` (on the CPU, whatever the sweep's
    `device`: the compiled models are small)."""
    return prune_run(Path(out) / run["dir"], ks, random_seed, random_draws, gradient_samples)


def gradient_letters(compiled_run, n: int = GRADIENT_SAMPLES
                     ) -> Int[np.ndarray, "rows length"]:
    """The g·w gradient batch of `prune_run`: up to `n` C_Te = 0 inputs (letter indices) that
    are in none of the run's evaluation sets.

    They are drawn from their own stream (`GRADIENT_STREAM`, seeded by `task.eval_seed`), and any
    row equal to a row of the C_Te = 0 or C_Te = 1 evaluation set is dropped, so pruning is
    scored on inputs its gradient never saw (docs/reproduction.md#the-compiled-models-grid).
    """
    task = compiled_run.task
    drawn = task.batch(task.eval_rng(GRADIENT_STREAM, n), n, 0.0)[0]
    scored = {row.tobytes() for c in (0, 1) for row in compiled_run.eval_letters(c)}
    keep = np.array([row.tobytes() not in scored for row in drawn], dtype=bool)
    return drawn[keep]


def prune_run(run_dir: str | Path, ks: list[int], random_seed: int = 0,
              random_draws: int = 5, gradient_samples: int = GRADIENT_SAMPLES
              ) -> dict[str, Any]:
    """Single-weight g·w pruning for the O_PT loss on C_Te = 0 inputs (paper App. G, Fig. 55),
    against pruning as many random weights; every block linear map is eligible.

    The gradient is taken on `gradient_letters` (C_Te = 0 inputs held out from every
    evaluation set); every K is scored on all of the run's evaluation sets
    (`CompiledRun.evaluate`), none of whose rows the gradient saw.

    Returns:
        {"ks": the sorted Ks, "top": metrics after zeroing the top-K weights, per K, "random":
        the mean metrics after zeroing K random weights (`random_draws` nested draws from
        `random_seed`), per K, "weights": the labels of the top-max(K) weights, best first,
        "gradient": {"stream", "rows": inputs in the gradient batch, "dropped": drawn rows
        dropped for being in an evaluation set}}.
    """
    from wrapperlens.analysis.pruning import PruneConfig, answer_loss, prune_sweep
    from wrapperlens.analysis.pruning_control import random_prune_sweep

    compiled_run, model = load_compiled_run(run_dir)
    letters = gradient_letters(compiled_run, gradient_samples)
    tokens = compiled_run.token_ids(letters)
    loss_fn = answer_loss(tokens, tokens.shape[1] - 1,
                          compiled_run.classes(letters, compiled_run.task.config.o_pt))
    config = PruneConfig(granularity="weight")
    evaluate = compiled_run.evaluate
    top = prune_sweep(model, loss_fn, ks, evaluate, config)
    rand = random_prune_sweep(model, ks, evaluate, config, draws=random_draws, seed=random_seed)
    return {"ks": top.ks, "top": top.metrics, "random": rand.metrics,
            "weights": [u.label for u in top.units],
            "gradient": {"stream": GRADIENT_STREAM, "rows": int(len(letters)),
                         "dropped": int(gradient_samples - len(letters))}}


def attention_view(run_dir: str | Path, out: str | Path, letters: str | None = None
                   ) -> dict[str, Any]:
    """The run's attention patterns on one input as an offline HTML page (circuitsvis).

    Args:
        run_dir: A compiled run directory.
        out: The HTML page to write.
        letters: The input letters (at most the task's length; default: the first C_Te = 0
            evaluation input).

    Returns:
        {"letters", "answer": the model's answer at the last position, "truth": the O_PT answer
        (None where it needs the full-length input), "o_pt", "n_layers", "n_heads"}.

    Raises:
        ValueError: `letters` the model cannot read (naming the letters or the length).
    """
    from wrapperlens.analysis.attention_views import write_attention_html

    run, model = load_compiled_run(run_dir)
    d, task = run.description, run.task
    chosen = ([task.vocab[i] for i in run.eval_letters(0)[0]] if letters is None
              else checked_letters(letters, run))
    tokens = torch.tensor(d.encode(chosen))
    with torch.no_grad():
        answer = d.output_values[int(model(tokens[None].to(model.cfg.device))[0, -1].argmax())]
    text = "".join(chosen)
    truth = None  # a Counter counts any prefix; Max-identifier's rank needs the full input
    if task.config.program == "counter" or len(chosen) == task.length:
        indices = np.array([[task.vocab.index(c) for c in chosen]])
        truth = task.answers(indices, task.config.o_pt)[0]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    title = f"{run_dir}: {task.config.program} ({run.stage}), input {text}"
    write_attention_html(out, model, tokens, ["BOS", *chosen], title=title)
    return {"letters": text, "answer": answer, "truth": truth, "o_pt": task.config.o_pt,
            "n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads}


def checked_letters(text: str, run) -> list[str]:
    """The letters of `text`, refused unless the compiled model of `run` can read them."""
    task = run.task
    letters = list(text.strip())
    unknown = sorted({c for c in letters if c not in task.vocab})
    if not letters or unknown:
        raise ValueError(f"--input {text!r}: letters of {''.join(task.vocab)} expected"
                         + (f", got {''.join(unknown)!r}" if unknown else ""))
    if len(letters) > task.length:
        raise ValueError(f"--input has {len(letters)} letters; this model reads at most "
                         f"{task.length} (task.length)")
    if task.config.program == "max_identifier" and len(set(letters)) < len(letters):
        raise ValueError(f"--input {text!r}: Max-identifier inputs are distinct letters")
    return letters
