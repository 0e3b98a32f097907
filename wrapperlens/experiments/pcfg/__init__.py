"""The PCFG experiment (paper §3-5, App. C): pretrain on the PCFG task mixture, fine-tune on one
question with a spurious correlation, reverse fine-tune, and analyse the pretrained / fine-tuned
pair.

- `stages`: `PCFGRun` (fills `wrapperlens.experiment.ExperimentRun`), `resolve_configs`,
  `saved_run`, `load_run`;
- `presets`: paper, cpu, demo, tiny; `grid_config`: the grid section of a preset;
- `grid`: the reproduction's grid as sweep jobs and their results; `claims`: claims 1-7;
  `report_plots`: Figs. 5-9 of the report;
- `pairs`: a run or a pretrained / fine-tuned pair opened for analysis, and its inputs;
  `analysis`, `analysis_options`: the analysis tools on run directories;
- `scratch_baseline`: the Scr.+FT baseline of reverse fine-tuning.
"""
