"""The experiments built on wrapperlens, one room each, every room with the same module names.

| module | PCFG (`pcfg/`) | compiled models (`compiled/`) |
|---|---|---|
| `stages` | `PCFGRun`: pretrain, finetune, reft | `CompiledRun`: compile, finetune, reft |
| `presets` | paper, cpu, demo, tiny | paper, cpu, tiny |
| `grid` | the reproduction's grid as sweep jobs | Table 3's grid as sweep jobs |
| `claims` | claims 1-7 | claims 8-12 |
| `analysis` | prune, probe, patch, attribute, attention, wrapper map of a run | read-outs and single-weight pruning |

Each `stages` module fills the experiment core (`wrapperlens.experiment`: stage rules, one
resolver, one reader); each `grid` module gives the one reproduction loop
(`wrapperlens.reproduction`) its setting. TinyStories (`tinystories/`) fills the same core from
its own package. The rooms are imported explicitly (`wrapperlens.experiments.pcfg.stages`):
this package imports nothing on its own.
"""
