"""TinyStories: data, tokenizer and GPT-Neo checkpoints for the paper's deletion/revival setting.

Modules, bottom to top:

- `hub`: fail fast, with a useful message, when the Hugging Face hub cannot be reached;
- `instruct`: the TinyStories-Instruct record format (parse, format; feature names);
- `data`: load stories from the hub or local files as HF `datasets`, counting malformed records;
- `protocols`: the pretraining, deletion (F, F+R, F+MM) and reFT datasets, and training text;
- `story_source`: an offline stand-in for TinyStories-Instruct with real feature traces;
- `tokenizer`: a byte-level BPE tokenizer (train, save, load, batch);
- `gpt_neo`: GPT-Neo checkpoints as HookedTransformers, and export back to HF;
- `prepare`: the `prepare` and `tokenizer` stages of a run.
"""
