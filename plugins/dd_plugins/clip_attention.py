"""open_clip's fused attention as separate q/k/v/out projections, so peft LoRA can target the
query and value projections one by one (the CLIP classifier's LoRA), and back again for export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linears.

    A drop-in for the attention of open_clip's ``ResidualAttentionBlock`` (called as
    ``attn(q, k, v, need_weights=False, attn_mask=mask)[0]``) so that peft LoRA can target the
    query and value projections individually. Same masks as ``nn.MultiheadAttention``: a float
    ``attn_mask`` is added to the scores, a bool one marks positions NOT allowed to attend;
    ``attn_mask`` is ``[L, S]`` or ``[N * num_heads, L, S]``; ``key_padding_mask`` is ``[N, S]``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)

    # ---- conversion

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "PlainMultiheadAttention":
        """A copy of ``mha`` with its weights split exactly (same device, dtype, train mode)."""
        if mha.bias_k is not None or mha.bias_v is not None or mha.add_zero_attn:
            raise ValueError("PlainMultiheadAttention does not support add_bias_kv or add_zero_attn")
        ref = mha.out_proj.weight
        plain = cls(
            mha.embed_dim,
            mha.num_heads,
            dropout=mha.dropout,
            bias=mha.in_proj_bias is not None,
            kdim=mha.kdim,
            vdim=mha.vdim,
            batch_first=mha.batch_first,
            device=ref.device,
            dtype=ref.dtype,
        )
        e = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                q, k, v = mha.in_proj_weight.split(e, dim=0)
            else:
                q, k, v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            plain.q_proj.weight.copy_(q)
            plain.k_proj.weight.copy_(k)
            plain.v_proj.weight.copy_(v)
            if mha.in_proj_bias is not None:
                qb, kb, vb = mha.in_proj_bias.split(e, dim=0)
                plain.q_proj.bias.copy_(qb)
                plain.k_proj.bias.copy_(kb)
                plain.v_proj.bias.copy_(vb)
            plain.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                plain.out_proj.bias.copy_(mha.out_proj.bias)
        plain.requires_grad_(any(p.requires_grad for p in mha.parameters()))
        plain.train(mha.training)
        return plain

    def to_mha(self) -> nn.MultiheadAttention:
        """Fold back into an ``nn.MultiheadAttention`` (exact weights, same batch_first)."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if type(proj) is not nn.Linear:
                raise ValueError(
                    "cannot fold attention back: a projection is wrapped (e.g. by a LoRA adapter); "
                    "merge the adapter first (peft merge_and_unload)"
                )
        ref = self.q_proj.weight
        bias = self.q_proj.bias is not None
        mha = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=bias,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=self.batch_first,
            device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            else:
                mha.q_proj_weight.copy_(self.q_proj.weight)
                mha.k_proj_weight.copy_(self.k_proj.weight)
                mha.v_proj_weight.copy_(self.v_proj.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if bias:
                mha.out_proj.bias.copy_(self.out_proj.bias)
        mha.requires_grad_(ref.requires_grad)
        mha.train(self.training)
        return mha

    # ---- forward

    def _merge_masks(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        n: int,
        length: int,
        source: int,
        dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """One additive float mask broadcastable to [N, H, L, S], or None."""

        def additive(mask: torch.Tensor) -> torch.Tensor:
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
            return mask.to(dtype)

        merged = None
        if attn_mask is not None:
            m = additive(attn_mask)
            if m.dim() == 2:
                m = m.view(1, 1, length, source)
            elif m.dim() == 3:
                m = m.view(n, self.num_heads, length, source)
            else:
                raise ValueError(f"attn_mask must be 2D or 3D, got shape {tuple(attn_mask.shape)}")
            merged = m
        if key_padding_mask is not None:
            kp = additive(key_padding_mask).view(n, 1, 1, source)
            merged = kp if merged is None else merged + kp
        return merged

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, length, _ = query.shape
        source = key.shape[1]
        h, d = self.num_heads, self.head_dim

        q = self.q_proj(query).view(n, length, h, d).transpose(1, 2)
        k = self.k_proj(key).view(n, source, h, d).transpose(1, 2)
        v = self.v_proj(value).view(n, source, h, d).transpose(1, 2)
        mask = self._merge_masks(attn_mask, key_padding_mask, n, length, source, q.dtype)
        causal = bool(is_causal and mask is None)
        p = self.dropout if self.training else 0.0

        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / (d**0.5)
            if mask is not None:
                scores = scores + mask
            elif causal:
                tri = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(tri, float("-inf"))
            attn = scores.softmax(dim=-1)
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if p:
                attn = F.dropout(attn, p=p)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)

        out = self.out_proj(out.transpose(1, 2).reshape(n, length, self.embed_dim))
        if unbatched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _attention_blocks(model: nn.Module):
    from open_clip.transformer import ResidualAttentionBlock

    return [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)]


def use_plain_attention(model: nn.Module) -> int:
    """Replace, in place, every ``nn.MultiheadAttention`` of open_clip's ResidualAttentionBlocks
    with an equivalent :class:`PlainMultiheadAttention`. Returns how many were replaced."""
    count = 0
    for block in _attention_blocks(model):
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = PlainMultiheadAttention.from_mha(block.attn)
            count += 1
    return count


def restore_fused_attention(model: nn.Module) -> int:
    """The inverse of :func:`use_plain_attention` (for export): fold every
    :class:`PlainMultiheadAttention` back into ``nn.MultiheadAttention``. Returns how many."""
    count = 0
    for block in _attention_blocks(model):
        if isinstance(block.attn, PlainMultiheadAttention):
            block.attn = block.attn.to_mha()
            count += 1
    return count
