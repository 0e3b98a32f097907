"""The shape of a model: an architecture preset (minGPT, LLaMA, GPT-Neo) and a size.

`ModelConfig` is the `model` section of every training run. Its `architecture` picks one row of
`ARCHITECTURES`; the size fields say how big; `build_model` (wrapperlens.models) turns it into a
HookedTransformer:

| architecture | normalisation | positions | MLP (d_mlp = 0) | models |
|---|---|---|---|---|
| `mingpt` | LayerNorm | learned | GELU, 4 · d_model | PCFG (paper App. C.2) |
| `llama` | RMSNorm | rotary | gated SiLU, 8/3 · d_model (llama2.c) | TinyStories (App. F.1) |
| `gpt-neo` | LayerNorm | learned | GELU, 4 · d_model | GPT-Neo-like story LMs |

Normalisation is pre-norm with eps 1e-5; rotary positions rotate the whole head
(rotary_dim = d_head); the llama width is rounded up to a multiple of `multiple_of`.

The architecture's choices can each be overridden (`--model.act_fn=relu`,
`--model.positional=rotary`, ...). `gpt-neo` gives the same TransformerLens config as `mingpt`
(global attention in every layer); the name says which family a run belongs to, and
`tinystories.gpt_neo` imports real GPT-Neo checkpoints with their local attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformer_lens import HookedTransformerConfig

from wrapperlens.config import ConfigError

__all__ = ["ARCHITECTURES", "Architecture", "ModelConfig", "MAX_SIZE", "MAX_BLOCK_PARAMETERS"]

#: Largest value of a size field (n_layers, d_model, n_heads, d_mlp, n_ctx, multiple_of): far
#: above any model trained here, low enough that a corrupted or mistyped size is refused before
#: anything is allocated.
MAX_SIZE = 2**20
#: Largest parameter count of the transformer blocks (n_layers · (4 · d_model² + 3 · d_model ·
#: d_mlp)), for the same reason: 2^36 parameters are 256 GiB of float32.
MAX_BLOCK_PARAMETERS = 2**36


@dataclass(frozen=True)
class Architecture:
    """What an architecture preset decides about a model (the rest is its size).

    Attributes:
        normalization: "LN" (LayerNorm) or "RMS" (RMSNorm); TransformerLens names.
        positional: "standard" (learned absolute positions) or "rotary" (rotary_dim = d_head).
        act_fn: MLP nonlinearity (a TransformerLens activation name).
        gated_mlp: Gated MLP (`act(x W_gate) * (x W_in)`; SwiGLU with "silu").
        llama_width: Default MLP width: llama2.c's 8/3 · d_model rounded up to a multiple of
            `multiple_of` (True), else 4 · d_model.
    """

    normalization: str
    positional: str
    act_fn: str
    gated_mlp: bool
    llama_width: bool


#: minGPT: the PCFG models (paper App. C.2). LLaMA 2 (llama2.c): the paper's TinyStories model
#: (App. F.1). GPT-Neo-like: what the TinyStories checkpoints on the hub are, with global attention
#: in every layer (`tinystories.gpt_neo` imports the real ones, local attention included).
ARCHITECTURES: dict[str, Architecture] = {
    "mingpt": Architecture("LN", "standard", "gelu", gated_mlp=False, llama_width=False),
    "llama": Architecture("RMS", "rotary", "silu", gated_mlp=True, llama_width=True),
    "gpt-neo": Architecture("LN", "standard", "gelu", gated_mlp=False, llama_width=False),
}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder-only HookedTransformer: an architecture preset and a size.

    `architecture` decides the normalisation, positions and MLP; `act_fn`, `normalization`,
    `positional` and `gated_mlp` override one of its choices when set (None: the architecture's).
    `d_vocab` is never part of the shape (the tokenizer or task decides it) and neither is
    `n_ctx` for the procedural tasks (0: `build_model(cfg, n_ctx=...)` gets it from the task).

    Attributes:
        architecture: "mingpt" (pre-LayerNorm, learned positions, GELU MLP of 4 · d_model),
            "llama" (RMSNorm, rotary positions, gated SiLU MLP of 8/3 · d_model) or "gpt-neo"
            (LayerNorm, learned positions, GELU MLP of 4 · d_model); see `ARCHITECTURES`.
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads per block; `d_model` must be divisible by it.
        d_mlp: MLP hidden width; 0 = the architecture's rule.
        n_ctx: Context length; 0 = given by the task at `build_model`.
        multiple_of: Rounding of the llama MLP width (llama2.c: 64 at d_model 768; 16 suits
            small sizes).
        act_fn, normalization, positional, gated_mlp: Overrides of the architecture's choice.
        fused_attention: Use the fused attention kernel when no hook reads the pattern.
        init_seed: Seed of the weight initialisation (a torch.Generator is not threaded through
            TransformerLens's init, so the global RNG is seeded and restored around it).
    """

    architecture: str = "mingpt"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 0
    n_ctx: int = 0
    multiple_of: int = 16
    act_fn: str | None = None
    normalization: str | None = None
    positional: str | None = None
    gated_mlp: bool | None = None
    fused_attention: bool = True
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            hint = " ('gpt' is now 'gpt-neo')" if self.architecture == "gpt" else ""
            raise ValueError(f"model.architecture must be one of {tuple(ARCHITECTURES)}, "
                             f"got {self.architecture!r}{hint}")
        for name in ("n_layers", "d_model", "n_heads", "multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("d_mlp", "n_ctx"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0 (0: see ModelConfig), "
                                 f"got {getattr(self, name)}")
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "multiple_of"):
            if getattr(self, name) > MAX_SIZE:
                raise ValueError(f"model.{name} must be <= {MAX_SIZE}, got {getattr(self, name)}")
        if self.n_layers * self.d_model * (4 * self.d_model + 3 * self.mlp_width) \
                > MAX_BLOCK_PARAMETERS:
            raise ValueError(f"model: {self.n_layers} layers of width {self.d_model} (MLP "
                             f"{self.mlp_width}) exceed {MAX_BLOCK_PARAMETERS} parameters")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}"
            )
        if self.normalization not in (None, "LN", "RMS"):
            raise ValueError(
                f"model.normalization must be 'LN' or 'RMS', got {self.normalization!r}"
            )
        if self.positional not in (None, "standard", "rotary"):
            raise ValueError(
                f"model.positional must be 'standard' or 'rotary', got {self.positional!r}"
            )
        if self.resolved("positional") == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"model: rotary positions need an even head size, got d_model/n_heads = "
                f"{self.d_model}/{self.n_heads}"
            )

    def resolved(self, name: str) -> Any:
        """`act_fn`, `normalization`, `positional` or `gated_mlp`: the override, else the
        architecture's choice."""
        value = getattr(self, name)
        return getattr(ARCHITECTURES[self.architecture], name) if value is None else value

    @property
    def mlp_width(self) -> int:
        """`d_mlp`, or the architecture's rule when it is 0."""
        if self.d_mlp:
            return self.d_mlp
        if not ARCHITECTURES[self.architecture].llama_width:
            return 4 * self.d_model
        hidden = int(2 * 4 * self.d_model / 3)  # llama2.c: 2/3 of 4 · d_model, rounded up
        return self.multiple_of * -(-hidden // self.multiple_of)

    def context_length(self, n_ctx: int | None = None) -> int:
        """The model's n_ctx: `self.n_ctx`, or the task's `n_ctx` when that is 0.

        Raises:
            ConfigError: neither is given, or both are and they differ.
        """
        if n_ctx is None:
            if not self.n_ctx:
                raise ConfigError("model.n_ctx is 0 (the task decides it), but no task n_ctx "
                                  "was given; set model.n_ctx")
            return self.n_ctx
        if self.n_ctx and self.n_ctx != n_ctx:
            raise ConfigError(f"model.n_ctx={self.n_ctx}, but the task's sequences need "
                              f"n_ctx={n_ctx}; leave model.n_ctx at 0 to let the task decide")
        return n_ctx

    def to_hooked_config(
        self, *, d_vocab: int, n_ctx: int | None = None
    ) -> HookedTransformerConfig:
        """The TransformerLens config of this shape for a vocabulary (and a task's n_ctx)."""
        if d_vocab < 2:
            raise ValueError(f"d_vocab must be >= 2, got {d_vocab}")
        d_head = self.d_model // self.n_heads
        positional = self.resolved("positional")
        extra: dict[str, Any] = {"rotary_dim": d_head} if positional == "rotary" else {}
        return HookedTransformerConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=d_head,
            d_mlp=self.mlp_width,
            n_ctx=self.context_length(n_ctx),
            d_vocab=d_vocab,
            act_fn=self.resolved("act_fn"),
            gated_mlp=self.resolved("gated_mlp"),
            normalization_type=self.resolved("normalization"),
            eps=1e-5,  # TransformerLens's default and llama2.c's
            positional_embedding_type=positional,
            attention_dir="causal",
            default_prepend_bos=False,
            seed=None,
            device="cpu",
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
