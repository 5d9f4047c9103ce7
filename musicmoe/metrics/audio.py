"""Distances between generated and reference audio: multi-resolution log-mel distance and chroma similarity.

Both work on mono float waveforms with torch's STFT (torchaudio is not usable beside the CPU torch build, see
musicmoe/codecs/audio).  Lengths are trimmed to the shorter signal before comparing.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) pairs


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular HTK-style mel filters, shape (n_mels, n_fft // 2 + 1)."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - center, 1e-9)
    return torch.from_numpy(np.clip(np.minimum(up, down), 0.0, None)).float()


def _stft_mag(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True, center=True, pad_mode="constant")
    return spec.abs()


def log_mel(wave: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> torch.Tensor:
    """log(mel power + 1e-5) of a (T,) or (B, T) waveform -> (..., n_mels, frames)."""
    fb = mel_filterbank(sample_rate, n_fft, min(n_mels, n_fft // 4)).to(wave.device, wave.dtype)
    return torch.log(fb @ _stft_mag(wave, n_fft, hop) ** 2 + 1e-5)


def multires_log_mel_distance(pred: torch.Tensor, ref: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean L1 distance between log-mel spectrograms at several STFT resolutions (differentiable)."""
    n = min(pred.shape[-1], ref.shape[-1])
    pred, ref = pred[..., :n], ref[..., :n]
    dists = [
        (log_mel(pred, sample_rate, n_fft, hop) - log_mel(ref, sample_rate, n_fft, hop)).abs().mean()
        for n_fft, hop in RESOLUTIONS
    ]
    return torch.stack(dists).mean()


def chroma(wave: torch.Tensor, sample_rate: int, n_fft: int = 4096, hop: int = 1024) -> torch.Tensor:
    """(12, frames) chromagram: STFT energy folded onto pitch classes (bins between ~27 Hz and 5 kHz)."""
    mag = _stft_mag(wave, n_fft, hop) ** 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    keep = (freqs > 27.5) & (freqs < 5000)
    midi = 69 + 12 * torch.log2(freqs[keep] / 440.0)
    pc = torch.round(midi).long() % 12
    proj = torch.zeros(12, int(keep.sum()))
    proj[pc, torch.arange(pc.numel())] = 1.0
    return proj.to(mag.dtype) @ mag[keep]


class MelDistance(Metric):
    """Mean (over examples) multi-resolution log-mel L1 distance; lower is better."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, sample_rate: int = 24000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        for pred, ref in zip(preds, targets, strict=True):
            p, r = torch.as_tensor(np.asarray(pred, np.float32)), torch.as_tensor(np.asarray(ref, np.float32))
            if min(p.numel(), r.numel()) < 2048:
                continue  # too short for the coarsest resolution
            self.total += float(multires_log_mel_distance(p, r, self.sample_rate))
            self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


class ChromaSimilarity(Metric):
    """Mean frame-wise cosine similarity of chromagrams (silent frames skipped); higher is better."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, sample_rate: int = 24000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        for pred, ref in zip(preds, targets, strict=True):
            n = min(len(pred), len(ref))
            if n < 4096:
                continue
            p = chroma(torch.as_tensor(np.asarray(pred[:n], np.float32)), self.sample_rate)
            r = chroma(torch.as_tensor(np.asarray(ref[:n], np.float32)), self.sample_rate)
            energy = r.sum(0) > 1e-6 * max(float(r.sum(0).max()), 1e-12)
            if not bool(energy.any()):
                continue
            cos = torch.nn.functional.cosine_similarity(p[:, energy], r[:, energy], dim=0, eps=1e-8)
            if not math.isfinite(float(cos.mean())):
                continue
            self.total += float(cos.mean())
            self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))
