"""Token merging for Stable Diffusion ("ToMe for SD", Bolya & Hoffman 2023, arXiv 2303.17604).

Before each selected self-attention (``attn1`` of the U-Net's transformer blocks) the most
redundant tokens are averaged into similar ones, attention runs on the fewer tokens, and its
output is copied back to every original position. Attention is quadratic in the token count, so
merging half the tokens at the finest resolution saves much of the U-Net's time at SD sizes.

Unlike the levers of :mod:`ddcore.models.speedups` this **changes the images** (slightly): the
option that uses it must be part of the stage key, so a set made with it is never mistaken for
one made without.

The destinations are a fixed grid (the top-left token of every 2x2 window), not tomesd's random
choice: the same seeds give the same images, and every sample of a batch is merged on its own,
so an image does not depend on what it is batched with. It applies only where the processor
sees (B, N, C) self-attention tokens whose count matches the level's latent grid; elsewhere the
original processor runs unchanged. It wraps whatever processor is installed (SDPA by default),
and LoRA layers on the projections keep working since they live in the ``Attention`` module.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

Merge = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def bipartite_merge(metric: torch.Tensor, h: int, w: int, r: int) -> tuple[Merge, Merge]:
    """``(merge, unmerge)`` for (B, h*w, C) tokens: ``merge`` folds the ``r`` source tokens most
    similar (cosine of ``metric``) to a destination into it, giving (B, h*w - r, C) ordered
    ``[unmerged sources, destinations]``; ``unmerge`` maps such a tensor back to (B, h*w, C)."""
    B, N, _ = metric.shape
    device = metric.device
    rows = torch.arange(0, h - h % 2, 2, device=device)
    cols = torch.arange(0, w - w % 2, 2, device=device)
    dst_idx = (rows[:, None] * w + cols[None, :]).flatten()
    is_src = torch.ones(N, dtype=torch.bool, device=device)
    is_src[dst_idx] = False
    src_idx = torch.arange(N, device=device)[is_src]
    S = src_idx.numel()
    r = min(r, S)
    if r <= 0 or dst_idx.numel() == 0:
        return _identity, _identity

    m = F.normalize(metric, dim=-1)
    scores = m[:, src_idx] @ m[:, dst_idx].transpose(-1, -2)
    best, best_dst = scores.max(dim=-1)
    # stable: ties break by position, never by the sort's whim
    order = best.argsort(dim=-1, descending=True, stable=True)
    merged_src, kept_src = order[:, :r], order[:, r:]
    merged_dst = best_dst.gather(1, merged_src)
    kept_pos, merged_pos = src_idx[kept_src], src_idx[merged_src]

    def merge(x: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        src, dst = x[:, src_idx], x[:, dst_idx]
        kept = src.gather(1, kept_src[..., None].expand(B, S - r, C))
        moved = src.gather(1, merged_src[..., None].expand(B, r, C))
        dst = dst.scatter_reduce(1, merged_dst[..., None].expand(B, r, C), moved, reduce="mean", include_self=True)
        return torch.cat([kept, dst], dim=1)

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        C = y.shape[-1]
        kept, dst = y[:, : S - r], y[:, S - r :]
        out = y.new_empty(B, N, C)
        out[:, dst_idx] = dst
        out.scatter_(1, kept_pos[..., None].expand(B, S - r, C), kept)
        out.scatter_(1, merged_pos[..., None].expand(B, r, C), dst.gather(1, merged_dst[..., None].expand(B, r, C)))
        return out

    return merge, unmerge


class TokenMergingProcessor:
    """Wraps an attention processor: self-attention runs on merged tokens."""

    def __init__(self, inner: Any, ratio: float, factor: int, latent: dict[str, tuple[int, int]]):
        self.inner, self.ratio, self.factor, self.latent = inner, ratio, factor, latent

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        size = self.latent.get("hw")
        # a mask is laid out for the full token count; merging would misalign it
        if encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3 and size:
            h, w = math.ceil(size[0] / self.factor), math.ceil(size[1] / self.factor)
            N = hidden_states.shape[1]
            if h * w == N:
                merge, unmerge = bipartite_merge(hidden_states, h, w, int(N * self.ratio))
                out = self.inner(attn, merge(hidden_states), None, None, temb, *args, **kwargs)
                return unmerge(out)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def layer_factor(name: str, n_down: int, n_up: int) -> int | None:
    """How much coarser than the latent an attention layer's token grid is, from its name."""
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return 2 ** int(parts[1])
    if parts[0] == "mid_block":
        return 2 ** (n_down - 1)
    if parts[0] == "up_blocks":
        return 2 ** (n_up - 1 - int(parts[1]))
    return None


def apply_token_merging(unet: Any, ratio: float, levels: int = 1) -> Callable[[], None]:
    """Merge ``ratio`` of the tokens in the self-attention (attn1) of the U-Net's transformer blocks at the
    ``levels`` finest attention resolutions; returns a function that restores the original processors and removes the hook."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"generator.token_merging (ToMe's ratio) must be in [0, 1), not {ratio!r}")
    if levels < 1:
        raise ConfigError(f"token merging levels must be at least 1, not {levels!r}")
    if ratio == 0:
        return lambda: None
    processors = unet.attn_processors
    if any(isinstance(p, TokenMergingProcessor) for p in processors.values()):
        raise ConfigError("token merging is already applied to this U-Net")
    factors = {name: layer_factor(name, len(unet.down_blocks), len(unet.up_blocks))
               for name in processors if name.endswith("attn1.processor")}
    factors = {name: f for name, f in factors.items() if f is not None}
    if not factors:
        return lambda: None
    finest = min(factors.values())
    chosen = {name: f for name, f in factors.items() if f < finest * 2**levels}

    latent: dict[str, tuple[int, int]] = {}

    def record(module: Any, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        latent["hw"] = (int(sample.shape[-2]), int(sample.shape[-1]))

    hook = unet.register_forward_pre_hook(record, with_kwargs=True)
    unet.set_attn_processor({name: TokenMergingProcessor(p, ratio, chosen[name], latent) if name in chosen else p
                             for name, p in processors.items()})

    def restore() -> None:
        hook.remove()
        current = unet.attn_processors
        if any(isinstance(p, TokenMergingProcessor) for p in current.values()):
            unet.set_attn_processor({name: p.inner if isinstance(p, TokenMergingProcessor) else p
                                     for name, p in current.items()})

    return restore
