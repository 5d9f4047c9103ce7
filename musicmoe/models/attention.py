"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention`` with rotary positions and a KV cache.

No additive attention bias is ever built: padding is a boolean key mask (or ``None`` when a batch has no
padding, which lets SDPA pick its flash kernel), causality is ``is_causal=True``, and positions are either
rotary (applied to queries/keys before SDPA) or a learned table added to the embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Rope:
    """Rotary tables of one pass, full head width: ``cos`` (..., L, D) holds each pair's cosine on both halves,
    ``sin`` (..., L, D) its sine with the rotate-half signs (-sin on the first half, +sin on the second), so that
    ``rotate(x) = x * cos + swap_halves(x) * sin``. Made in float32 once per pass; :meth:`tables` converts them to
    the compute dtype once per dtype (bf16 parameters or autocast), not once per layer."""

    __slots__ = ("cos", "sin", "_by_dtype")

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.cos, self.sin = cos, sin
        self._by_dtype: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype == self.cos.dtype:
            return self.cos, self.sin
        if dtype not in self._by_dtype:
            self._by_dtype[dtype] = (self.cos.to(dtype), self.sin.to(dtype))
        return self._by_dtype[dtype]


def _angles_to_rope(angles: torch.Tensor) -> Rope:
    cos, sin = angles.cos(), angles.sin()
    return Rope(torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1))


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float) -> Rope:
    """:class:`Rope` tables (L, head_dim) for ``positions`` (L,); computed once per pass."""
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    return _angles_to_rope(positions.to(torch.float32)[:, None] * inv_freq[None, :])


def row_rotary_tables(times: torch.Tensor, head_dim: int, base: float) -> Rope:
    """:class:`Rope` tables (B, 1, L, head_dim) for per-row positions ``times`` (B, L) (any real values), shaped to
    rotate (B, H, L, D) queries or keys (time-aligned cross-attention)."""
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, device=times.device, dtype=torch.float32) / half)
    return _angles_to_rope(times.to(torch.float32)[:, None, :, None] * inv_freq)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    """``cat(x2, x1)`` of the last dimension's halves: one copy kernel, no slices (so no slice backward)."""
    half = x.shape[-1] // 2
    return x.unflatten(-1, (2, half)).flip(-2).flatten(-2)


class _Rotate(torch.autograd.Function):
    """``x * cos + swap(x) * sin``: three kernels forward; backward ``g * cos + swap(g * sin)``, three kernels (the
    rotation's transpose is the rotation by the opposite angle)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return torch.addcmul(x * cos, _swap_halves(x), sin)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return torch.addcmul(_swap_halves(g * sin), g, cos), None, None


def _rotate_qk_(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, length: int, heads: int) -> None:
    """Rotate, in place, the query and key thirds of a fused projection (B * L or B, L, 3 * H * D)."""
    qk = qkv.view(-1, length, 3, heads, qkv.shape[-1] // (3 * heads))[:, :, :2]
    swapped = _swap_halves(qk)
    qk.mul_(cos).addcmul_(swapped, sin)


class _RotateQK(torch.autograd.Function):
    """Rotates the query and key thirds of a fused self-attention projection (B * L, 3 * H * D) in place (values
    untouched): no slice of the projection, so no zero-filled gradient copies; backward writes the three gradient
    parts into one new tensor. The projection must not be a view (an ``addmm`` output), or autograd would rebase
    the view's history and copy the whole base."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, length: int, heads: int) -> torch.Tensor:
        _rotate_qk_(qkv, cos, sin, length, heads)
        ctx.mark_dirty(qkv)
        ctx.save_for_backward(cos, sin)
        ctx.shape = (length, heads)
        return qkv

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        cos, sin = ctx.saved_tensors
        length, heads = ctx.shape
        g5 = g.reshape(-1, length, 3, heads, g.shape[-1] // (3 * heads))
        out = torch.empty_like(g5)
        torch.addcmul(_swap_halves(g5[:, :, :2] * sin), g5[:, :, :2], cos, out=out[:, :, :2])
        out[:, :, 2].copy_(g5[:, :, 2])
        return out.view(g.shape), None, None, None, None


def apply_rotary(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate ``x`` (..., L, D) by the :class:`Rope` ``rope`` (rotate-half convention, in ``x``'s dtype); the
    tables broadcast over the leading dimensions."""
    cos, sin = rope.tables(x.dtype)
    if torch.compiler.is_compiling():  # traced: plain operations (the compiler fuses them; autograd derives them)
        return torch.addcmul(x * cos, _swap_halves(x), sin)
    return _Rotate.apply(x, cos, sin)


def rotary_qkv(proj: nn.Linear, x: torch.Tensor, rope: Rope, heads: int) -> torch.Tensor:
    """The fused self-attention projection of ``x`` (B, L, d) -> (B, L, 3 * d) with its queries and keys rotated
    by the position tables (L, D) of :func:`rotary_tables`: one ``addmm`` whose output is rotated in place."""
    b, length, d = x.shape
    flat = x.reshape(b * length, d)
    qkv = torch.mm(flat, proj.weight.t()) if proj.bias is None else torch.addmm(proj.bias, flat, proj.weight.t())
    cos, sin = rope.tables(qkv.dtype)
    cos, sin = cos[:, None, None, :], sin[:, None, None, :]
    if torch.compiler.is_compiling() or not (torch.is_grad_enabled() and qkv.requires_grad):
        # no autograd record needed (inference), or traced (the compiler functionalizes the in-place update)
        _rotate_qk_(qkv, cos, sin, length, heads)
        return qkv.view(b, length, -1)
    return _RotateQK.apply(qkv, cos, sin, length, heads).view(b, length, -1)


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


class DecodeClock:
    """The device-side position of a static decoder cache, shared by its layers: ``pos`` (a 1-element long
    tensor, advanced in place after each decoding call) and, during a call, ``current`` (the L new positions) and
    ``mask`` (L, max_len): which cached positions each new query may see. Nothing here is read back to the host,
    and every call has the same shapes, so a compiled decoding step is traced once."""

    def __init__(self, max_len: int, device) -> None:
        self.max_len = max_len
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.key_pos = torch.arange(max_len, device=device)
        self.current = self.pos
        self.mask = self.key_pos[None, :] <= self.pos[:, None]

    def start(self, length: int) -> torch.Tensor:
        """Positions (L,) of the ``length`` new entries; also sets ``current`` and ``mask``."""
        self.current = self.pos + torch.arange(length, device=self.pos.device)
        self.mask = self.key_pos[None, :] <= self.current[:, None]
        return self.current

    def advance(self, length: int) -> None:
        self.pos.add_(length)


class StaticKVCache:
    """Keys/values of one self-attention layer in buffers of ``max_len`` positions, zero-filled and written at the
    :class:`DecodeClock`'s device-side position; attention reads the whole buffers with the clock's mask (static
    shapes, no host sync; same outputs as :class:`KVCache`, whose views grow by one position per step)."""

    def __init__(self, clock: DecodeClock, batch: int, heads: int, head_dim: int, dtype, device) -> None:
        self.clock = clock
        shape = (batch, heads, clock.max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def write(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (B, H, L, D) at the clock's current positions; all keys, values and the mask."""
        idx = self.clock.current
        self.k.index_copy_(2, idx, k.to(self.k.dtype))
        self.v.index_copy_(2, idx, v.to(self.v.dtype))
        return self.k, self.v, self.clock.mask

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search)."""
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
        """``n`` (B, H, L, D) views of a fused (B, L, n * d) projection; split before the transpose, so that the
        backward's ``stack`` writes the (B, L, n, H, D) layout of the projection (no further copy)."""
        b, length, _ = x.shape
        return tuple(t.transpose(1, 2) for t in x.view(b, length, n, self.n_heads, self.head_dim).unbind(2))

    def project_kv(self, memory: torch.Tensor, key_rope: Rope | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values (B, H, S, D) of an encoder output (computed once per source); ``key_rope``
        (:func:`row_rotary_tables` of the keys' times) rotates the keys."""
        return self.split_kv(self.kv_proj(memory), key_rope)

    def split_kv(self, kv: torch.Tensor, key_rope: Rope | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, S, D) of a (B, S, 2 * d) key/value projection; ``key_rope`` rotates the keys."""
        k, v = self._heads(kv, 2)
        if key_rope is not None:
            k = apply_rotary(k, key_rope)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: Rope | None = None,
        memory: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | StaticKVCache | None = None,
        cross_rope: tuple[Rope, Rope | None] | None = None,
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
            if self.rotary:
                if rope is None:
                    raise ValueError("MultiHeadAttention: rotary self-attention needs rotary tables")
                qkv = rotary_qkv(self.qkv_proj, x, rope, self.n_heads)  # queries and keys rotated in place
            else:
                qkv = self.qkv_proj(x)
            q, k, v = self._heads(qkv, 3)
            if isinstance(cache, StaticKVCache):
                k, v, attn_mask = cache.write(k, v)
                is_causal = False
            elif cache is not None:
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
