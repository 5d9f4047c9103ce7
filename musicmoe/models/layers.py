"""Pre-LN Transformer blocks: encoder/depth block (self-attention + FFN) and the MoE decoder block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from musicmoe.models.attention import KVCache, MultiHeadAttention, Rope
from musicmoe.models.config import ModelConfig
from musicmoe.models.moe import FeedForward, GroupedMoE, HardRoutingPlan, MoEStats


class SelfAttentionBlock(nn.Module):
    """``x + attn(LN(x))`` then ``x + FFN(LN(x))``; the encoder layer and the depth-decoder layer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_dropout: float,
                 activation: str, bias: bool, eps: float, rotary: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = MultiHeadAttention(d_model, n_heads, attn_dropout, bias, cross=False, rotary=rotary)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: Rope | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal, rope=rope))
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, and a grouped expert FFN (``moe``) or one shared FFN."""

    def __init__(self, cfg: ModelConfig, moe: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.is_moe = moe
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.self_attn = MultiHeadAttention(d, cfg.n_heads, cfg.attn_dropout, cfg.bias, cross=False,
                                            rotary=cfg.pos_encoding == "rotary")
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.cross_attn = MultiHeadAttention(d, cfg.n_heads, cfg.attn_dropout, cfg.bias, cross=True)
        self.norm3 = nn.LayerNorm(d, eps=cfg.norm_eps)
        if moe:
            self.ffn = GroupedMoE(d, cfg.ffn_dim, cfg.n_groups, cfg.experts_per_modality, cfg.top_k, cfg.dropout,
                                  cfg.activation, cfg.bias, cfg.capacity_factor, cfg.eval_capacity_factor)
        else:
            self.ffn = GroupedMoE(d, cfg.d_ff, 1, 1, 0, cfg.dropout, cfg.activation, cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: Rope | None,
        group: torch.Tensor,
        modality: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        plan: HardRoutingPlan | None = None,
        cross_rope: tuple[Any, Any] | None = None,
    ) -> tuple[torch.Tensor, MoEStats | None]:
        x = x + self.drop(self.self_attn(self.norm1(x), is_causal=True, rope=rope, cache=cache))
        x = x + self.drop(self.cross_attn(self.norm2(x), attn_mask=memory_mask, memory=memory, memory_kv=memory_kv,
                                          cross_rope=cross_rope))
        y, stats = self.ffn(self.norm3(x), group, modality, token_mask, plan if self.is_moe else None)
        return x + self.drop(y), (stats if self.is_moe else None)
