"""Test-wide settings: no hub access, and jaxtyping shapes checked at run time with beartype."""

import os

# Tests never touch the model hub; set before transformers / datasets / huggingface_hub import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# The test models are tiny: one intra-op thread is faster than two (no cross-thread reductions)
# and keeps timings sane when the 2-core machine is shared.
torch.set_num_threads(1)
