"""Does a small LM trained on the offline story source follow its feature instructions?

Trains a 2-layer, d_model 64 HookedTransformer for 500 steps (batch 32, AdamW 3e-3) on 4000
story-source records, each record one BOS-aligned sequence (padded, loss masked), with a BPE
tokenizer of 1024 tokens. Then, for 48 held-out featureless stories, it gives the instruction with
Features set to [], [Twist], [BadEnding] or [MoralValue] plus the story up to its last paragraph,
greedily generates the ending and counts endings carrying each feature's trace
(`detect_features`). A model that learned the instruction writes a twist only when asked.

Not a test (about 3 minutes on one CPU thread). Measured once on a shared 2-core machine:
final loss 0.28; endings with the asked-for trace 29/48 for each of Twist, BadEnding and
MoralValue, and 0/48 for every feature when not asked (no cross-talk). Packing records into
128-token windows instead (the same model, 400 steps) learned no instruction following: the
Features line and the ending (~200 tokens apart) rarely share a window, so training windows must
hold whole records.

Run: python benchmarks/story_source_learnability.py
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

from tinystories.instruct import format_prompt
from tinystories.protocols import with_text
from tinystories.story_source import StorySourceConfig, detect_features, story_source_dataset
from tinystories.tokenizer import TokenizerConfig, encode_texts, pad_batch, train_tokenizer
from wrapperlens.models import ModelConfig, build_model


def main(steps: int = 500, n_stories: int = 4000, n_eval: int = 48) -> None:
    torch.set_num_threads(1)
    start = time.time()
    data = with_text(story_source_dataset(StorySourceConfig(n_stories=n_stories, seed=0)))
    tokenizer = train_tokenizer(iter(data["text"]), TokenizerConfig(vocab_size=1024))
    sequences = encode_texts(tokenizer, data["text"], add_bos=True, add_eos=True)
    print(f"tokens per record: mean {np.mean([len(s) for s in sequences]):.0f}, "
          f"max {max(map(len, sequences))}")
    tokens, mask = pad_batch(sequences, tokenizer.pad_token_id)
    shape = ModelConfig(n_layers=2, d_model=64, n_heads=4)
    model = build_model(shape, n_ctx=tokens.shape[1], d_vocab=len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(tokens), (32,), generator=generator)
        x, m = tokens[idx], mask[idx]
        logits = model(x)
        loss = F.cross_entropy(logits[:, :-1][m[:, 1:]], x[:, 1:][m[:, 1:]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    model.eval()
    held_out = story_source_dataset(StorySourceConfig(n_stories=200, seed=99))
    plain = [r for r in held_out if not r["features"]][:n_eval]
    for asked in ([], ["Twist"], ["BadEnding"], ["MoralValue"]):
        hits = {f: 0 for f in ("Twist", "BadEnding", "MoralValue")}
        for record in plain:
            record = {**record, "prompt_features": asked}
            body = record["story"].rsplit("\n\n", 1)[0] + "\n\n"
            ids = torch.tensor([encode_texts(tokenizer, [format_prompt(record) + body])[0]])
            with torch.no_grad():
                for _ in range(40):
                    next_id = model(ids)[0, -1].argmax()
                    if next_id.item() == tokenizer.eos_token_id:
                        break
                    ids = torch.cat([ids, next_id.view(1, 1)], 1)
            ending = tokenizer.decode(ids[0]).rsplit("\n\n", 1)[-1]
            for feature in detect_features(ending):
                hits[feature] = hits.get(feature, 0) + 1
        print(f"Features: {asked} -> endings with each trace (of {len(plain)}): {hits}")


if __name__ == "__main__":
    main()
