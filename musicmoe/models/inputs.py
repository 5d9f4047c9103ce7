"""Encoder inputs that are not codec codes, and 2-D positions of image grids.

* :class:`PixelStem`: score-image pixel patches (the image codec's 16 px grid, column by column) are put back
  into an image, read by stride-2 convolutions with batch norm (receptive fields cross patch borders, unlike a
  per-patch linear map) down to one unit-variance vector per grid cell, and flattened in the same column-major
  order. (Without the normalisation a default-initialised stem's output barely varies between images, and the
  translator settles for a language model of its targets that ignores its source.)
* :class:`MelStem`: stacked log-mel frames -> LayerNorm, linear map and a width-3 convolution over time.
* :class:`ConvMelStem` (``model.mel_stem: conv``): the frames as a time x frequency image through three 3x3
  convolutions (the last two halve the frequency axis; one also merges the ``mel_stack`` frames of a position), so on a
  log-frequency axis one filter finds a harmonic pattern at every pitch; then the linear map and time convolution.
* :class:`GridPositions`: learned row and column embeddings of an image's code/patch grid. A flattened grid of
  height ``H'`` puts cell ``(r, c)`` at position ``c * H' + r``; with ``H'`` varying per crop, "same row, next
  column" is no fixed offset for rotary positions, so each position is also told its row and column.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelStem(nn.Module):
    """(n, T, patch * patch) ink patches of grids ``rows[i]`` high -> (n, T, d) (zeros past each grid)."""

    def __init__(self, channels: Sequence[int], d_model: int, patch: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        layers += [nn.Conv2d(c_in, d_model, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(d_model)]
        self.net = nn.Sequential(*layers)
        self.patch = patch
        for m in self.net:
            if isinstance(m, nn.Conv2d):  # variance-keeping init: ink is sparse, a default init drowns it in biases
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, feats: torch.Tensor, rows: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
        p, n = self.patch, feats.shape[0]
        rows = [max(1, int(r)) for r in rows]
        cols = [max(1, int(t) // r) for t, r in zip(lengths, rows)]
        img = feats.new_zeros(n, 1, max(rows) * p, max(cols) * p)
        for i, (r, c) in enumerate(zip(rows, cols)):
            grid = feats[i, : r * c, : p * p].reshape(c, r, p, p).permute(1, 2, 0, 3)
            img[i, 0, : r * p, : c * p] = grid.reshape(r * p, c * p)
        y = self.net(img)  # (n, d, H', W')
        out = feats.new_zeros(n, feats.shape[1], y.shape[1])
        for i, (r, c) in enumerate(zip(rows, cols)):
            out[i, : r * c] = y[i, :, :r, :c].permute(2, 1, 0).reshape(r * c, -1)
        return out


class MelStem(nn.Module):
    """(n, T, F) log-mel features -> (n, T, d)."""

    def __init__(self, dim: int, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, d_model)
        self.conv = nn.Conv1d(d_model, d_model, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h = self.act(self.proj(self.norm(feats)))
        return h + self.conv(h.transpose(1, 2)).transpose(1, 2)


class ConvMelStem(nn.Module):
    """(n, T, stack * bins) stacked log-mel frames -> (n, T, d) through 2-D convolutions over time x frequency."""

    def __init__(self, bins: int, stack: int, channels: Sequence[int], d_model: int) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.bins, self.stack = bins, stack
        self.norm = nn.BatchNorm2d(1)
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=(stack, 2), padding=1, bias=False), nn.BatchNorm2d(c2), nn.GELU(),
            nn.Conv2d(c2, c2, 3, stride=(1, 2), padding=1, bias=False), nn.BatchNorm2d(c2), nn.GELU(),
        )
        freq = ((bins - 1) // 2) // 2 + 1
        self.proj = nn.Linear(c2 * freq, d_model)
        self.conv = nn.Conv1d(d_model, d_model, 3, padding=1)
        self.act = nn.GELU()
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        n, t = feats.shape[:2]
        x = self.norm(feats.reshape(n, 1, t * self.stack, self.bins))
        y = self.net(x)  # (n, c2, T, F')
        h = self.act(self.proj(y.permute(0, 2, 1, 3).reshape(n, y.shape[2], -1)))
        return h + self.conv(h.transpose(1, 2)).transpose(1, 2)


class GridPositions(nn.Module):
    """Row + column embeddings of flattened (column-major) grids; zero for rows whose height is 0."""

    no_weight_decay = ("row", "col")

    def __init__(self, max_rows: int, max_cols: int, d_model: int) -> None:
        super().__init__()
        self.row = nn.Embedding(max_rows, d_model)
        self.col = nn.Embedding(max_cols, d_model)

    def forward(self, heights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, L, d) for grid heights (B,) and grid indices ``positions`` (L,); negative indices (e.g. BOS) get 0."""
        h = heights.clamp_min(1)[:, None]
        t = positions[None, :].clamp_min(0)
        r = (t % h).clamp_max(self.row.num_embeddings - 1)
        c = torch.div(t, h, rounding_mode="floor").clamp_max(self.col.num_embeddings - 1)
        valid = (heights[:, None] > 0) & (positions[None, :] >= 0)
        return (self.row(r) + self.col(c)) * valid[..., None].to(self.row.weight.dtype)
