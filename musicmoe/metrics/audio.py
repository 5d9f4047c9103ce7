"""Distances between generated and reference audio: multi-resolution log-mel distance and chroma similarity.

Both work on mono float waveforms with torch's STFT (torchaudio is not usable beside the CPU torch build, see
musicmoe/codecs/audio).  Lengths are trimmed to the shorter signal before comparing.

A generation that cannot be analysed is a failure, never left out: a prediction that is empty, shorter than
:data:`MIN_SAMPLES` (the longest analysis window of the two metrics) or holds a non-finite sample.  Each metric
counts it in its ``failed`` state and scores it with its worst value (:meth:`MelDistance.penalty`, 0 for chroma
similarity), so a model that stops at once is scored, not ignored.  A reference that cannot be analysed (shorter
than :data:`MIN_SAMPLES`, non-finite, or for chroma silent) leaves the metric undefined for that example: it is
counted in ``skipped`` and not scored.  With nothing scored, ``compute`` is NaN.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) pairs of the log-mel distance
CHROMA_FFT, CHROMA_HOP = 4096, 1024
MIN_SAMPLES = max(CHROMA_FFT, *(n_fft for n_fft, _ in RESOLUTIONS))  # shorter audio is not analysed (~0.17 s)


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


def chroma(wave: torch.Tensor, sample_rate: int, n_fft: int = CHROMA_FFT, hop: int = CHROMA_HOP) -> torch.Tensor:
    """(12, frames) chromagram: STFT energy folded onto pitch classes (bins between ~27 Hz and 5 kHz)."""
    mag = _stft_mag(wave, n_fft, hop) ** 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    keep = (freqs > 27.5) & (freqs < 5000)
    midi = 69 + 12 * torch.log2(freqs[keep] / 440.0)
    pc = torch.round(midi).long() % 12
    proj = torch.zeros(12, int(keep.sum()))
    proj[pc, torch.arange(pc.numel())] = 1.0
    return proj.to(mag.dtype) @ mag[keep]


def _wave(x: np.ndarray | None) -> torch.Tensor:
    return torch.as_tensor(np.asarray([] if x is None else x, np.float32))


def _unusable(wave: torch.Tensor) -> bool:
    """Too short for the analysis windows, or holding a non-finite sample."""
    return wave.shape[-1] < MIN_SAMPLES or not bool(torch.isfinite(wave).all())


class _AudioMetric(Metric):
    """Sum-reduced states shared by the audio metrics: ``total`` of the scores, ``count`` of scored examples
    (failures included), ``failed`` predictions and ``skipped`` references (see the module docstring)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, sample_rate: int = 24000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("failed", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, pred: torch.Tensor, ref: torch.Tensor) -> float | None:
        """The score of a usable prediction against a usable reference (None: the reference is not scorable).
        Abstract: MelDistance and ChromaSimilarity define it."""
        raise NotImplementedError

    def penalty(self, ref: torch.Tensor) -> float | None:
        """The worst score, given to a failed prediction (None: the reference is not scorable). Abstract, as
        :meth:`score`."""
        raise NotImplementedError

    def update(self, preds: Sequence[np.ndarray | None], targets: Sequence[np.ndarray]) -> None:
        for pred, target in zip(preds, targets, strict=True):
            p, r = _wave(pred), _wave(target)
            failed = _unusable(p)
            self.failed += int(failed)
            value = None if _unusable(r) else self.penalty(r) if failed else self.score(p, r)
            if value is not None and not math.isfinite(value) and not failed:
                self.failed += 1  # e.g. overflow from huge samples: a failure too
                value = self.penalty(r)
            if value is None or not math.isfinite(value):
                self.skipped += 1
                continue
            self.total += value
            self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))

    def failures(self) -> int:
        """Failed predictions summed over ranks (a collective call under DDP, like ``compute``)."""
        with self.sync_context():
            return int(self.failed)


class MelDistance(_AudioMetric):
    """Mean (over examples) multi-resolution log-mel L1 distance; lower is better.

    A failed prediction scores :meth:`penalty`, the distance of silence (zeros as long as the reference) to the
    reference: what producing nothing scores, on the same scale.  The distance has no upper bound, so a loud
    wrong generation can score worse than a failure; a failure never scores better than silence."""

    higher_is_better = False

    def score(self, pred: torch.Tensor, ref: torch.Tensor) -> float:
        return float(multires_log_mel_distance(pred, ref, self.sample_rate))

    def penalty(self, ref: torch.Tensor) -> float:
        return self.score(torch.zeros_like(ref), ref)


class ChromaSimilarity(_AudioMetric):
    """Mean frame-wise cosine similarity of chromagrams (silent reference frames skipped); higher is better.

    Chromagrams are non-negative, so the similarity lies in [0, 1]; a failed prediction scores 0, the minimum.
    A silent reference (no frame with energy) is not scorable."""

    higher_is_better = True

    def _ref_frames(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        r = chroma(ref, self.sample_rate)
        energy = r.sum(0) > 1e-6 * max(float(r.sum(0).max()), 1e-12)
        return (r, energy) if bool(energy.any()) else None

    def score(self, pred: torch.Tensor, ref: torch.Tensor) -> float | None:
        n = min(pred.shape[-1], ref.shape[-1])
        frames = self._ref_frames(ref[..., :n])
        if frames is None:
            return None
        r, energy = frames
        p = chroma(pred[..., :n], self.sample_rate)
        return float(torch.nn.functional.cosine_similarity(p[:, energy], r[:, energy], dim=0, eps=1e-8).mean())

    def penalty(self, ref: torch.Tensor) -> float | None:
        return None if self._ref_frames(ref) is None else 0.0
