"""The main job: pretrain, fine-tune at each named learning rate, print a summary table.

`wrapperlens reproduce --preset cpu` writes

    OUT/pretrain/            the pretrained run
    OUT/finetune-eta_{L,M,S}/ one fine-tuned run per learning rate
    OUT/summary.json         every final accuracy

and prints Acc O_PT / Acc O_FT at C_Te = 0 and 1 per run. A finished stage (its final
`model.safetensors` and a metrics line at its last step) is reused, so an interrupted job
continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapperlens import distributed
from wrapperlens.checkpoints import write_json
from wrapperlens.config import ConfigError
from wrapperlens.experiments.pcfg import resolve_configs
from wrapperlens.presets import get_preset
from wrapperlens.stages import train_or_reuse

__all__ = ["reproduce"]


def reproduce(
    preset: str,
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the main job and print its table; returns the summary written to `summary.json`.

    Args:
        preset: paper | cpu | tiny.
        out: Output directory.
        overrides: `task.*`, `model.*` (pretraining) and `finetune.*` (fine-tuning data) keys.
        progress: Show progress bars.
        device: Where to train ("cpu", "cuda", "auto").
    """
    out = Path(out)
    overrides = dict(overrides or {})
    bad = [k for k in overrides if k.split(".")[0] not in ("task", "model", "finetune")]
    if bad:
        raise ConfigError(
            f"reproduce: {bad[0]} cannot be set here (only task.*, model.*, finetune.*); "
            "use the pretrain / finetune commands for per-stage training settings"
        )
    pt_over = {k: v for k, v in overrides.items() if not k.startswith("finetune.")}
    ft_over = {k: v for k, v in overrides.items() if k.startswith("finetune.")}
    p = get_preset(preset)
    summary: dict[str, Any] = {"preset": preset, "runs": {}}

    pretrain = resolve_configs("pretrain", preset, overrides=pt_over)
    records, seconds = train_or_reuse(pretrain.spec(), out / "pretrain", progress=progress,
                                      device=device)
    metrics = records[-1]
    summary["runs"]["pretrain"] = {"metrics": metrics, "seconds": seconds}
    rows = [("pretrain", metrics)]
    for eta in p.etas:
        run = resolve_configs("finetune", preset, parent=out / "pretrain", eta=eta, overrides=ft_over)
        records, seconds = train_or_reuse(run.spec(), out / f"finetune-eta_{eta}", progress=progress,
                                          device=device)
        metrics = records[-1]
        summary["runs"][f"finetune-eta_{eta}"] = {
            "lr": run.train_config.lr, "metrics": metrics, "seconds": seconds,
        }
        rows.append((f"finetune eta_{eta} (lr {run.train_config.lr:g})", metrics))
    if not distributed.is_main():
        return summary  # under torchrun, rank 0 writes and prints
    write_json(out / "summary.json", summary)

    pt = summary["runs"]["pretrain"]["metrics"]
    print(f"\nPretraining ({preset} preset, prior {pretrain.sections['task'].prior}), "
          f"accuracy per task family and operand:")
    for key, value in pt.items():
        if key.startswith("acc/"):
            print(f"  {key[4:]:12s} {100 * value:6.1f}%")
    ft = resolve_configs("finetune", preset, parent=out / "pretrain", overrides=ft_over)
    data = ft.finetune_data
    print(f"\nFine-tuning to {data.family} {data.operand} (C_Tr = {data.c_tr}); Acc O_PT is "
          f"{data.family} {data.pretrain_operand}:")
    columns = ["acc/O_PT/cte0", "acc/O_PT/cte1", "acc/O_FT/cte0", "acc/O_FT/cte1"]
    width = max(len(r[0]) for r in rows[1:]) + 2
    print("".ljust(width) + "".join(c[4:].rjust(14) for c in columns))
    for name, metrics in rows[1:]:
        print(name.ljust(width) + "".join(f"{100 * metrics[c]:13.1f}%" for c in columns))
    print(f"\nWritten to {out} (summary.json, one run directory per stage).")
    return summary
