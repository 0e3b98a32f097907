"""Sampling: the cached sampler equals a full-recompute reference; seeds; stopping at EOS."""

import pytest
import torch

from tinystories.generation import encode_prompts, generated_story, sample_continuations
from tinystories.tokenizer import TokenizerConfig, train_tokenizer
from wrapperlens.models import ModelConfig, build_model


@pytest.fixture(scope="module", params=["llama", "gpt-neo"])
def model(request):
    model = build_model(ModelConfig(architecture=request.param, n_layers=2, d_model=32,
                                    n_heads=2, n_ctx=48), d_vocab=40).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # peaked logits, so greedy continuations differ between prompts
    return model


def _prompts():
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(2, 40, (n,), generator=gen).tolist() for n in (3, 11, 6, 1)]


def test_cached_greedy_sampling_equals_recomputing_each_prefix(model):
    cached = sample_continuations(model, _prompts(), 15, eos_id=0, pad_id=1, temperature=0.0)
    reference = sample_continuations(model, _prompts(), 15, eos_id=0, pad_id=1, temperature=0.0,
                                     use_cache=False)
    assert cached == reference
    # Batching does not change a row: each prompt alone gives the same continuation.
    for prompt, expected in zip(_prompts(), cached):
        assert sample_continuations(model, [prompt], 15, 0, 1, temperature=0.0) == [expected]
    # The greedy continuation is the argmax of the model's own next-token logits.
    prompt, continuation = _prompts()[1], cached[1]
    if continuation:
        logits = model(torch.tensor([prompt + continuation[:-1]]))
        assert logits[0, len(prompt) - 1 :].argmax(-1).tolist() == continuation


def test_sampling_is_seeded_and_stops_at_eos(model):
    a = sample_continuations(model, _prompts(), 12, eos_id=0, pad_id=1, seed=5)
    b = sample_continuations(model, _prompts(), 12, eos_id=0, pad_id=1, seed=5)
    assert a == b and all(len(c) <= 12 for c in a)
    free = sample_continuations(model, _prompts(), 12, eos_id=-1, pad_id=1, temperature=0.0)
    row = max(range(len(free)), key=lambda i: len(set(free[i])))
    eos = free[row][len(free[row]) // 2]  # a token the greedy continuation produces
    stopped = sample_continuations(model, _prompts(), 12, eos_id=eos, pad_id=1, temperature=0.0)
    for full, cut in zip(free, stopped):
        expected = full[: full.index(eos)] if eos in full else full
        assert cut == expected
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_continuations(model, _prompts(), 0, eos_id=0, pad_id=1)


def test_prompts_end_before_the_story_space_and_stories_decode_back():
    texts = ["Features: Twist\nStory: Once upon a time, a dog ran.", "Story: The end."]
    tokenizer = train_tokenizer(iter(texts * 5), TokenizerConfig(vocab_size=300))
    prompts = encode_prompts(tokenizer, ["Features: Twist\nStory: "])
    full = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert prompts[0][0] == tokenizer.bos_token_id
    assert full[: len(prompts[0]) - 1] == prompts[0][1:]  # the prompt is a token prefix
    rest = full[len(prompts[0]) - 1 :]
    assert generated_story(tokenizer, rest) == "Once upon a time, a dog ran."
