"""TinyStories: data, tokenizer and GPT-Neo checkpoints for the paper's deletion/revival setting.

Modules, bottom to top:

- `hub`: fail fast, with a useful message, when the Hugging Face hub cannot be reached;
- `instruct`: the TinyStories-Instruct record format (parse, format; feature names);
- `data`: load stories from the hub or local files as HF `datasets`, counting malformed records;
- `protocols`: the pretraining, deletion (F, F+R, F+MM) and reFT datasets, and training text;
- `story_source`: an offline stand-in for TinyStories-Instruct with real feature traces;
- `tokenizer`: a byte-level BPE tokenizer (train, save, load, batch);
- `gpt_neo`: GPT-Neo checkpoints as HookedTransformers, and export back to HF;
- `prepare`: the `prepare` and `tokenizer` stages of a run;
- `lm`: story LM shapes (`tiny`, `cpu`, `paper`: the 91M LLaMA-like model) and training batches;
- `generation`: batched, KV-cached sampling from a prompt cut at "Story:";
- `twist_classifier`: the n-gram logistic regression behind the twist generation score;
- `evaluation`: twist loss and generation scores during training;
- `story_probes`: per-layer story-feature probes on story-only text;
- `presets`: every stage's defaults at the `paper`, `cpu` and `tiny` scales;
- `experiments`: the pretrain / delete / reft stages and their run directories;
- `compare`: checkpoint comparison per layer (cosine, relative norm, CKA, weights, probe transfer);
- `pipeline`: everything in one call, with a summary;
- `cli`: `wrapperlens tinystories ...`.
"""

# Installs wrapperlens's guard that keeps other libraries' log levels when TransformerLens is
# imported (see wrapperlens/log_levels.py): tinystories modules import TransformerLens before
# anything of wrapperlens, so the guard has to be in place when this package is imported.
import wrapperlens  # noqa: E402,F401
