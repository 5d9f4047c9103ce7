"""Token and position embeddings shared by the encoder and the decoder.

``TokenEmbedding`` stores one table per (modality, codebook) inside a single ``nn.Embedding`` (plus a
zero row for the unused codebook columns of single-stream rows), so a batch that mixes modalities is
embedded with one lookup; a multi-codebook frame is the sum of its codebooks' embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from musicmoe.models.vocab import MODALITIES, VocabSpec


class TokenEmbedding(nn.Module):
    """Embeds (B, L, Qmax) ids of per-row modalities into (B, L, d)."""

    def __init__(self, vocab: VocabSpec, d_model: int) -> None:
        super().__init__()
        q_max = vocab.max_codebooks
        offsets = torch.zeros(len(MODALITIES), q_max, dtype=torch.long)
        used = torch.zeros(len(MODALITIES), q_max, dtype=torch.bool)
        start = 0
        for m, spec in enumerate(vocab):
            for q in range(spec.codebooks):
                offsets[m, q] = start
                used[m, q] = True
                start += spec.table_size
        self.null_index = start
        self.table_sizes = [spec.table_size for spec in vocab]
        self.embedding = nn.Embedding(start + 1, d_model, padding_idx=start)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("used", used, persistent=False)

    def table(self, modality: int, codebook: int) -> torch.Tensor:
        """The (V + 4, d) rows of one (modality, codebook) table (a view of the weight)."""
        if not bool(self.used[modality, codebook]):
            raise ValueError(f"{MODALITIES[modality]} has no codebook {codebook}")
        start = int(self.offsets[modality, codebook])
        return self.embedding.weight[start:start + self.table_sizes[modality]]

    def forward(self, tokens: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        used = self.used[modality][:, None, :]  # (B, 1, Q)
        ids = torch.where(used, tokens + self.offsets[modality][:, None, :], self.null_index)
        return self.embedding(ids).sum(dim=2)


class LearnedPositions(nn.Module):
    """Absolute position table per modality (``max_len[m]`` rows each)."""

    no_weight_decay = ("embedding",)

    def __init__(self, max_len: list[int], d_model: int) -> None:
        super().__init__()
        self.max_len = list(max_len)
        self.register_buffer("offsets", torch.tensor([0] + self.max_len[:-1]).cumsum(0), persistent=False)
        self.register_buffer("limits", torch.tensor(self.max_len), persistent=False)
        self.embedding = nn.Embedding(sum(self.max_len), d_model)

    def check(self, modality: int, length: int) -> None:
        """Raise ``ValueError`` if ``length`` positions of ``modality`` do not fit the table."""
        if length > self.max_len[modality]:
            raise ValueError(f"{MODALITIES[modality]} sequence of {length} positions exceeds the learned position "
                             f"table ({self.max_len[modality]}); raise ModelConfig.max_src_len/max_tgt_len or "
                             f"max_len_per_modality, or use pos_encoding='rotary'")

    def check_lengths(self, modality: torch.Tensor, lengths: torch.Tensor) -> None:
        """Per-row version of :meth:`check` (one host sync)."""
        over = lengths > self.limits[modality]
        if bool(over.any()):
            row = int(over.nonzero()[0, 0])
            self.check(int(modality[row]), int(lengths[row]))

    def forward(self, modality: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, L, d) embeddings of ``positions`` (L,) for each row's ``modality`` (B,); positions past a row's
        table (padding only, after :meth:`check_lengths`) reuse its last row."""
        idx = torch.minimum(positions[None, :], self.limits[modality][:, None] - 1)
        return self.embedding(self.offsets[modality][:, None] + idx)
