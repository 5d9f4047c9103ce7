"""Reconstruction losses and a spectral distance for waveform codecs (torch only, no torchaudio).

* :func:`stft_loss` — multi-resolution STFT loss: spectral convergence plus L1 of log magnitudes,
  averaged over several FFT sizes (Yamamoto et al., Parallel WaveGAN, 2020).
* :func:`mel_loss` — EnCodec's frequency-domain loss: L1 + L2 between mel spectrograms over window sizes
  2^6..2^11 (Défossez et al., High Fidelity Neural Audio Compression, 2022).
* :func:`spectral_distance` — mean absolute log-magnitude difference in dB over several resolutions;
  a logging/evaluation metric (lower is better, 0 = identical spectra).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

STFT_SIZES = (512, 1024, 2048)
MEL_SCALES = (64, 128, 256, 512, 1024, 2048)
_EPS = 1e-5


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-mel filters, shape ``(n_mels, n_fft // 2 + 1)``, each normalised to unit area."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(torch.linspace(0, float(_hz_to_mel(torch.tensor(sample_rate / 2.0))), n_mels + 2,
                                      dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    area = fb.sum(dim=1, keepdim=True)
    return (fb / torch.where(area > 0, area, torch.ones_like(area))).float()


def _magnitude(x: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """|STFT| of (B, L) or (B, 1, L) waveforms, shape (B, n_fft // 2 + 1, frames)."""
    x = x.reshape(-1, x.shape[-1]).float()
    if x.shape[-1] < n_fft:  # very short clips: pad so at least one frame exists
        x = F.pad(x, (0, n_fft - x.shape[-1]))
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop or n_fft // 4, window=window, center=True,
                      pad_mode="reflect" if x.shape[-1] > n_fft // 2 else "constant", return_complex=True)
    return spec.abs()


def stft_loss(y: torch.Tensor, x: torch.Tensor, sizes=STFT_SIZES) -> torch.Tensor:
    """Multi-resolution STFT loss of reconstruction ``y`` against target ``x``."""
    total = y.new_zeros(())
    for n in sizes:
        my, mx = _magnitude(y, n), _magnitude(x, n)
        sc = torch.linalg.norm(mx - my) / (torch.linalg.norm(mx) + _EPS)
        mag = F.l1_loss(torch.log(my + _EPS), torch.log(mx + _EPS))
        total = total + sc + mag
    return total / len(sizes)


def mel_loss(y: torch.Tensor, x: torch.Tensor, sample_rate: int, scales=MEL_SCALES, n_mels: int = 64) -> torch.Tensor:
    """Multi-scale mel-spectrogram L1 + L2 loss (window 2^i, hop 2^i / 4)."""
    total = y.new_zeros(())
    for n in scales:
        fb = mel_filterbank(n, n_mels, sample_rate).to(y.device)
        my, mx = fb @ _magnitude(y, n), fb @ _magnitude(x, n)
        total = total + F.l1_loss(my, mx) + F.mse_loss(my, mx)
    return total / len(scales)


@torch.no_grad()
def spectral_distance(y: torch.Tensor, x: torch.Tensor, sizes=STFT_SIZES) -> float:
    """Mean |20 log10 |Y| - 20 log10 |X|| in dB over several FFT sizes (floor at -80 dB of the target peak)."""
    out = 0.0
    for n in sizes:
        my, mx = _magnitude(y, n), _magnitude(x, n)
        floor = mx.amax().clamp_min(1e-8) * 1e-4
        db = lambda m: 20 * torch.log10(m.clamp_min(floor))  # noqa: E731
        out += float((db(my) - db(mx)).abs().mean())
    return out / len(sizes)
