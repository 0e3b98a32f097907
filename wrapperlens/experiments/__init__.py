"""The experiments built on wrapperlens, one room each, every room with the same module names.

| module | PCFG (`pcfg/`) | compiled models (`compiled/`) | known wrappers (`wrappers/`) |
|---|---|---|---|
| `stages` | `PCFGRun`: pretrain, finetune, reft | `CompiledRun`: compile, finetune, reft | `WrapperRun`: pretrain, finetune, localised |
| `presets` | paper, cpu, demo, tiny | paper, cpu, tiny | paper, cpu, tiny |
| `grid` | the reproduction's grid as sweep jobs | Table 3's grid as sweep jobs | the benchmark's pairs and analyses |
| `claims` | claims 1-7 | claims 8-12 | (`leaderboard`: no claim, a table) |
| `analysis` | prune, probe, patch, attribute, attention, wrapper map of a run | read-outs and single-weight pruning | every localisation method on one pair |

Each `stages` module fills the experiment core (`wrapperlens.experiment`: stage rules, one
resolver, one reader); each `grid` module gives the one reproduction loop
(`wrapperlens.reproduction`) its setting. TinyStories (`tinystories/`) fills the same core from
its own package. The rooms are imported explicitly (`wrapperlens.experiments.pcfg.stages`):
this package imports nothing on its own.
"""
