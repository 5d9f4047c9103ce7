"""Multi-codebook outputs: the MusicGen-style delay pattern and the depth sub-decoder.

* ``delay``: codebook ``q`` is shifted right by ``q`` steps, so one decoder step predicts code ``q`` of frame
  ``t - q`` for every ``q`` with ``Q`` parallel heads; a frame is complete ``Q - 1`` steps after its first code.
  ``apply_delay``/``revert_delay`` convert between the frame layout (B, T, Q) and the delayed one
  (B, T + Q - 1, Q); positions before a codebook's start hold BOS, positions after its end hold PAD.
* ``subdecoder``: the main decoder runs one step per frame; ``DepthDecoder``, a small causal Transformer over
  the ``Q`` codebooks of one frame, predicts code ``q`` from the main hidden state (position 0) and the
  frame's codes ``< q`` (positions 1..q).
"""

from __future__ import annotations

import torch
from torch import nn

from musicmoe.models.config import ModelConfig
from musicmoe.models.frozen import own_storage
from musicmoe.models.layers import SelfAttentionBlock
from musicmoe.models.vocab import ModalitySpec


def apply_delay(tokens: torch.Tensor, bos: torch.Tensor | int, pad: torch.Tensor | int) -> torch.Tensor:
    """(B, T, Q) frames -> (B, T + Q - 1, Q) delayed: ``out[:, p, q] = tokens[:, p - q, q]``.

    ``bos``/``pad`` (scalars or per-row (B,)) fill the positions before/after each codebook's stream.
    """
    b, t, q = tokens.shape
    dev = tokens.device
    src = torch.arange(t + q - 1, device=dev)[:, None] - torch.arange(q, device=dev)[None, :]  # (P, Q)
    gathered = tokens.gather(1, src.clamp(0, t - 1)[None].expand(b, -1, -1))
    bos_t = torch.as_tensor(bos, device=dev).reshape(-1, 1, 1)
    pad_t = torch.as_tensor(pad, device=dev).reshape(-1, 1, 1)
    out = torch.where(src[None] < 0, bos_t, gathered)
    return torch.where(src[None] >= t, pad_t, out)


def revert_delay(delayed: torch.Tensor, length: int) -> torch.Tensor:
    """(B, P, Q) delayed -> (B, length, Q) frames: ``out[:, t, q] = delayed[:, t + q, q]``."""
    b, p, q = delayed.shape
    if length + q - 1 > p:
        raise ValueError(f"revert_delay: {p} delayed positions hold fewer than {length} frames of {q} codebooks")
    idx = torch.arange(length, device=delayed.device)[:, None] + torch.arange(q, device=delayed.device)[None, :]
    return delayed.gather(1, idx[None].expand(b, -1, -1))


class DepthDecoder(nn.Module):
    """Predicts the ``Q`` codes of a frame autoregressively from the main decoder's hidden state."""

    no_weight_decay = ("pos_emb",)

    def __init__(self, spec: ModalitySpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.codebooks = spec.codebooks
        self.table_size = spec.table_size
        dim = cfg.subdecoder_dim
        self.in_proj = nn.Linear(cfg.d_model, dim, bias=cfg.bias)
        self.code_emb = nn.Embedding(max(spec.codebooks - 1, 1) * spec.table_size, dim)
        self.pos_emb = nn.Parameter(torch.zeros(spec.codebooks, dim))
        self.layers = nn.ModuleList(
            SelfAttentionBlock(dim, cfg.subdecoder_heads, 4 * dim, cfg.dropout, cfg.attn_dropout, cfg.activation,
                               cfg.bias, cfg.norm_eps, rotary=False)
            for _ in range(cfg.subdecoder_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head_weight = nn.Parameter(torch.empty(spec.codebooks, spec.table_size, dim))
        self.head_bias = nn.Parameter(torch.zeros(spec.codebooks, spec.table_size))
        self.register_buffer("code_offsets", torch.arange(max(spec.codebooks - 1, 1)) * spec.table_size,
                             persistent=False)

    def _run(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Hidden states (N, q + 1, dim) for main states ``h`` (N, d) and codes ``prefix`` (N, q)."""
        x = self.in_proj(h)[:, None, :]
        if prefix.shape[1] > 0:
            codes = self.code_emb(prefix + self.code_offsets[: prefix.shape[1]])
            x = torch.cat([x, codes.to(x.dtype)], dim=1)
        pos = self.pos_emb if x.shape[1] == self.pos_emb.shape[0] else self.pos_emb[: x.shape[1]]  # (whole: no
        x = x + pos.to(x.dtype)                                                      # zero-filled slice gradient)
        for layer in self.layers:
            x = layer(x, is_causal=True)
        return self.norm(x)

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (N, Q, V + 4) for the frame ``codes`` (N, Q) given main states ``h`` (N, d)."""
        x = self._run(h, codes[:, : self.codebooks - 1])
        return torch.einsum("nqd,qvd->nqv", x, self.head_weight.to(x.dtype)) + self.head_bias.to(x.dtype)

    def next_logits(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (N, V + 4) of code ``q = prefix.shape[1]`` given the frame's codes ``prefix`` (N, q)."""
        q = prefix.shape[1]
        x = self._run(h, prefix)[:, -1]
        return x @ own_storage(self.head_weight[q]).to(x.dtype).T + self.head_bias[q].to(x.dtype)
