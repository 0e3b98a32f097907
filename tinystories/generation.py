"""Sampling stories from a story LM, for the generation ("twist") score.

The paper (App. F.2; docs/paper-settings.md#twist-loss-and-generation-score) prompts the model with
instruction blocks that ask for a Twist, cut at "Story: ", samples 350 new tokens at temperature 1.0
without top-k, strips the instruction and asks a classifier whether the story has a twist. The
prompts come from the F+R evaluation set (non-twist records whose Features line was given "Twist"),
so every prompt asks for a twist.

Here the prompt is cut *before* the space of "Story: ": a byte-level BPE merges that space into
the story's first word (" Once"), so a prompt ending in a bare space would be a token sequence the
model never saw in training. `generated_story` strips the space again.

Sampling is batched with TransformerLens's key-value cache: prompts are left-padded, the padding
masked (`attention_mask`), and TransformerLens shifts every row's positions so that its first
real token is position 0, as in training. A row stops at `<|endoftext|>`, after
`max_new_tokens`, or at the model's context. `use_cache=False` selects a slow reference path that
recomputes the whole right-padded prefix at every step (each row reading the logits at its own
last position); the tests check that both give the same greedy continuations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer, TransformerLensKeyValueCache
from transformers import PreTrainedTokenizerBase

from tinystories.tokenizer import pad_batch

__all__ = ["encode_prompts", "sample_continuations", "generated_story"]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """`<|endoftext|>` + each prompt, cut before the trailing space of "Story: ", as token ids.

    Args:
        prompts: Instruction texts ending in "Story: ", e.g. the column of
            `tinystories.protocols.with_text(records, mode="prompt", shuffle_fields_seed=...)`
            (the same field order as the training text of each story).
    """
    ids = tokenizer([p.rstrip(" ") for p in prompts], add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id, *seq] for seq in ids]


def sample_continuations(
    model: HookedTransformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    use_cache: bool = True,
) -> list[list[int]]:
    """Sample a continuation of every prompt (token ids after the prompt, without the EOS).

    Args:
        model: The LM (put in eval mode by the caller; gradients are off here).
        prompts: Token ids per prompt (BOS included).
        max_new_tokens: At most this many new tokens per prompt.
        eos_id: Stop a row when it samples this token.
        pad_id: Filler of the right padding (never read by a row).
        temperature: Softmax temperature; 0 = greedy.
        seed: Seed of a torch.Generator (the global RNG is not touched).
        batch_size: Prompts per forward pass.
        use_cache: Use the key-value cache (fast); False recomputes every prefix (reference).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    n_ctx = model.cfg.n_ctx
    if any(len(p) < 1 or len(p) >= n_ctx for p in prompts):
        raise ValueError(
            f"every prompt needs 1 to {n_ctx - 1} tokens (the model's n_ctx is {n_ctx})"
        )
    generator = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            sample = _sample_chunk_cached if use_cache else _sample_chunk
            out.extend(sample(model, chunk, max_new_tokens, eos_id, pad_id, temperature, generator))
    return out


def _next_ids(last: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    if temperature == 0:
        return last.argmax(-1)
    probs = torch.softmax(last.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _sample_chunk_cached(model, prompts, max_new_tokens, eos_id, pad_id, temperature, generator):
    rows, width = len(prompts), max(len(p) for p in prompts)
    budget = min(max_new_tokens, model.cfg.n_ctx - width)
    tokens = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        tokens[i, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    device = model.cfg.device
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, rows)
    logits = model(tokens.to(device), attention_mask=mask.to(device), past_kv_cache=cache)
    new = torch.zeros((rows, 0), dtype=torch.long)
    done = torch.zeros(rows, dtype=torch.bool)
    for _ in range(max(budget, 0)):
        next_ids = _next_ids(logits[:, -1].cpu(), temperature, generator)
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        new = torch.cat([new, next_ids[:, None]], dim=1)
        done |= next_ids == eos_id
        if bool(done.all()):
            break
        one = torch.ones(rows, 1, dtype=torch.long, device=device)
        logits = model(next_ids[:, None].to(device), attention_mask=one, past_kv_cache=cache)
    out = []
    for row in new.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append(row)
    return out


def _sample_chunk(model, prompts, max_new_tokens, eos_id, pad_id, temperature, generator):
    rows = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts])
    start_lengths = lengths.clone()
    cap = min(int(lengths.max()) + max_new_tokens, model.cfg.n_ctx)
    tokens, _ = pad_batch(prompts, pad_id, max_len=cap)
    tokens = F.pad(tokens, (0, cap - tokens.shape[1]), value=pad_id)  # room for the new tokens
    done = torch.zeros(rows, dtype=torch.bool)
    arange = torch.arange(rows)
    device = model.cfg.device
    while True:
        done |= (lengths >= cap) | (lengths - start_lengths >= max_new_tokens)
        if bool(done.all()):
            break
        current = int(lengths[~done].max())
        logits: Float[Tensor, "row pos vocab"] = model(tokens[:, :current].to(device))
        last = logits[arange, (lengths - 1).clamp_max(current - 1)].float().cpu()
        next_ids = _next_ids(last, temperature, generator)
        active = ~done
        tokens[arange[active], lengths[active]] = next_ids[active]
        lengths[active] += 1
        done |= active & (next_ids == eos_id)
    out = []
    for i in range(rows):
        new = tokens[i, start_lengths[i] : lengths[i]].tolist()
        if new and new[-1] == eos_id:
            new = new[:-1]
        out.append(new)
    return out


def generated_story(tokenizer: PreTrainedTokenizerBase, continuation: Sequence[int]) -> str:
    """The story text of a continuation (decoded, surrounding whitespace stripped)."""
    return tokenizer.decode(list(continuation), skip_special_tokens=True).strip()
