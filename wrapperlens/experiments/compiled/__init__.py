"""The compiled-models experiment (paper §4, App. B.1, C.1, G; docs/compiled.md): RASP programs
compiled to transformers, noised, fine-tuned and reverse fine-tuned.

- `stages`: `CompiledRun` (fills `wrapperlens.experiment.ExperimentRun`), `resolve_compiled`,
  `saved_compiled_run`, `load_compiled_run`;
- `presets`: paper, cpu, tiny with their grid sections;
- `grid`: Table 3's grid as sweep jobs, `table3`; `claims`: claims 8-12;
- `analysis`: the circuit read-outs and single-weight pruning of a run;
- `tracr_bridge`: the optional cross-check against Tracr (`pip install -e ".[tracr]"`).
"""
