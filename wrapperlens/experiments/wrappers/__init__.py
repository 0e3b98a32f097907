"""The known-wrapper benchmark (docs/wrappers.md): pairs whose wrapper is known by construction,
negative controls, and every localisation method scored against them.

- `units`: which units a wrapper is made of, drawn how; `stages`: `WrapperRun` (a PCFG run whose
  fine-tuning may train only those units);
- `presets`: cpu, tiny, paper; `grid_config`: the benchmark section of a preset;
- `grid`: the benchmark as sweep jobs (the reproduction loop's setting `wrappers`);
- `analysis`: every method's ranking of one pair, scored; `leaderboard`: the tables.
"""
