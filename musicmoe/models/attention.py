"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention`` with rotary positions and a KV cache.

No additive attention bias is ever built: padding is a boolean key mask (or ``None`` when a batch has no
padding, which lets SDPA pick its flash kernel), causality is ``is_causal=True``, and positions are either
rotary (applied to queries/keys before SDPA) or a learned table added to the embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) tables (L, head_dim / 2) in float32 for ``positions`` (L,); computed once per pass."""
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def row_rotary_tables(times: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) tables (B, 1, L, head_dim / 2) for per-row positions ``times`` (B, L) (any real values), shaped to
    rotate (B, H, L, D) queries or keys (time-aligned cross-attention)."""
    cos, sin = rotary_tables(times.reshape(-1), head_dim, base)
    shape = (*times.shape, head_dim // 2)
    return cos.view(shape)[:, None], sin.view(shape)[:, None]


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate ``x`` (..., L, D) by the :func:`rotary_tables` ``rope`` (rotate-half convention, float32 math).

    The tables broadcast over the leading dimensions: reshape them to rotate another layout (the self-attention
    rotates queries and keys together, (B, L, 2, H, D), with tables viewed as (L, 1, 1, D / 2)).
    """
    cos, sin = rope
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class KVCache:
    """Keys/values of one self-attention layer, preallocated for ``max_len`` positions."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (B, H, L, D) after the cached positions; return all keys/values so far."""
        new = k.shape[2]
        if self.length + new > self.max_len:
            raise RuntimeError(f"KVCache: {self.length + new} positions exceed the allocated {self.max_len}")
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        assert self.v is not None
        self.k[:, :, self.length:self.length + new] = k
        self.v[:, :, self.length:self.length + new] = v
        self.length += new
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search)."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Self-attention (``cross=False``, fused QKV projection) or cross-attention (``cross=True``)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 cross: bool = False, rotary: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.cross = cross
        self.rotary = rotary
        if cross:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        b, length, _ = x.shape
        return x.view(b, length, n, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def project_kv(self, memory: torch.Tensor,
                   key_rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values (B, H, S, D) of an encoder output (computed once per source); ``key_rope``
        (:func:`row_rotary_tables` of the keys' times) rotates the keys."""
        k, v = self._heads(self.kv_proj(memory), 2)
        if key_rope is not None:
            k = apply_rotary(k, key_rope)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        cross_rope: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` (B, L, d).

        Self-attention: ``rope`` (:func:`rotary_tables` of the L positions) rotates queries/keys when rotary is
        on; with ``cache`` the new keys are appended and the queries attend to every cached position
        (incremental decoding, causal by construction). Cross-attention: keys/values from ``memory_kv``
        (precomputed) or ``memory``; ``cross_rope`` = (query tables, key tables or ``None`` when ``memory_kv`` holds
        rotated keys), both from :func:`row_rotary_tables`, aligns queries and keys in time.
        ``attn_mask`` is boolean, True = may attend, broadcastable to (B, H, L, S).
        """
        b, length, d = x.shape
        if self.cross:
            (q,) = self._heads(self.q_proj(x), 1)
            q_rope, k_rope = cross_rope if cross_rope is not None else (None, None)
            k, v = memory_kv if memory_kv is not None else self.project_kv(memory, k_rope)
            if q_rope is not None:
                q = apply_rotary(q, q_rope)
        else:
            qkv = self.qkv_proj(x)
            if self.rotary:
                if rope is None:
                    raise ValueError("MultiHeadAttention: rotary self-attention needs rotary tables")
                # queries and keys rotated in one pass (fewer kernels), values as they are
                qkv = qkv.view(b, length, 3, self.n_heads, self.head_dim)
                cos, sin = (t[:, None, None, :] for t in rope)
                qk = apply_rotary(qkv[:, :, :2], (cos, sin))
                q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)
                v = qkv[:, :, 2].transpose(1, 2)
            else:
                q, k, v = self._heads(qkv, 3)
            if cache is not None:
                past = cache.length
                k, v = cache.append(k, v)
                if past > 0:
                    if length > 1:  # several new queries after a cached prefix: explicit causal mask
                        q_pos = torch.arange(past, past + length, device=x.device)
                        attn_mask = q_pos[:, None] >= torch.arange(past + length, device=x.device)[None, :]
                    is_causal = False
        if q.dtype != k.dtype:  # under autocast the cached keys may be bf16 while a fresh query is float
            q = q.to(k.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, length, d))
