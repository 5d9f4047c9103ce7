"""Audio degradations applied to log-mel source frames at load time: gain, equalization, noise, smearing, masks.

The audio counterpart of :mod:`musicmoe.data.degrade`: a transcriber trained on the clean synthesized audio of a
corpus reads only that audio; recorded, compressed or codec-decoded audio differs from it by a level, a colouring
(microphone, room, codec), a noise floor, noise that follows the music (a lossy codec's quantization noise spreads
around the notes it codes) and a loss of sharpness in time and frequency.  These are applied to the
cached log-mel features (``(T, mel_bins * mel_stack)``, natural log of filterbank power, see
:func:`musicmoe.data.features.log_mel`), so augmenting costs well under a millisecond per example instead of a
new STFT (~0.1 s).  Each op runs with its own probability and strength from :class:`MelDegradeConfig`; every
random number comes from the numpy ``Generator`` given, and each call draws the same ones whatever the
probabilities (so a seeded generator reproduces an example, and changing one probability does not reshuffle the
others).  Order: smear (frequency, then time), equalization and gain, noise floor, envelope noise, masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

OPS = ("smear_freq", "smear_time", "eq", "gain", "noise", "envelope_noise", "mask")
LN10_DB = math.log(10.0) / 10.0  # natural-log power per dB


@dataclass
class MelDegradeConfig:
    """Probabilities (``p_*``) and strengths of the log-mel degradations (``enabled=False`` = untouched)."""

    enabled: bool = False
    p_smear_freq: float = 0.5
    smear_freq_bins: list[float] = field(default_factory=lambda: [0.5, 2.0])  # Gaussian sigma over filter bins
    p_smear_time: float = 0.3
    smear_time_frames: list[float] = field(default_factory=lambda: [0.5, 1.5])  # Gaussian sigma over mel frames
    p_eq: float = 0.5
    eq_db: float = 9.0        # peak of a smooth random curve over the filter bins, drawn in [-eq_db, eq_db]
    eq_bumps: int = 4         # Gaussian bumps summed into the curve
    p_gain: float = 0.5
    gain_db: float = 12.0     # level change drawn in [-gain_db, gain_db]
    p_noise: float = 0.5
    snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])  # signal to (coloured) noise power
    p_envelope_noise: float = 0.5
    envelope_snr_db: list[float] = field(default_factory=lambda: [5.0, 25.0])  # music to noise in each region
    envelope_bins: float = 4.0    # the noise follows the power blurred by this many filter bins (Gaussian sigma)
    envelope_frames: float = 3.0  # ... and this many frames
    p_mask: float = 0.2
    mask_frames: int = 4      # up to this many consecutive frames set to the noise floor (one time mask)
    mask_bins: int = 8        # up to this many consecutive filter bins likewise (one frequency mask)

    def __post_init__(self) -> None:
        for op in OPS:
            p = getattr(self, f"p_{op}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"audio_degrade.p_{op} must be a probability in [0, 1], got {p}")
        for name in ("smear_freq_bins", "smear_time_frames", "snr_db", "envelope_snr_db"):
            rng = getattr(self, name)
            db = name.endswith("snr_db")
            if len(rng) != 2 or rng[0] > rng[1] or (not db and rng[0] < 0):
                raise ValueError(f"audio_degrade.{name} must be [low, high] with low <= high"
                                 f"{'' if db else ' and low >= 0'}, got {rng}")
        for name in ("eq_db", "gain_db", "envelope_bins", "envelope_frames", "eq_bumps", "mask_frames", "mask_bins"):
            if getattr(self, name) < 0:
                raise ValueError(f"audio_degrade.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return self.enabled and any(getattr(self, f"p_{op}") > 0 for op in OPS)


def smear(power: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of a ``(frames, bins)`` power array along ``axis`` (edges replicated; scipy)."""
    if sigma <= 0:
        return power
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(power, sigma, axis=axis, mode="nearest", truncate=3.0)


def eq_curve(bins: int, peak_db: float, bumps: np.ndarray) -> np.ndarray:
    """A smooth gain curve over ``bins`` filter bins (natural-log power): Gaussian bumps with centres, widths and
    signs from ``bumps`` (``(n, 3)`` uniforms in [0, 1)), scaled so its largest magnitude is ``peak_db``."""
    x = np.linspace(0.0, 1.0, bins)
    curve = np.zeros(bins)
    for c, w, s in bumps:
        curve += (2 * s - 1) * np.exp(-0.5 * ((x - c) / (0.05 + 0.3 * w)) ** 2)
    top = np.abs(curve).max()
    return curve * (peak_db * LN10_DB / top) if top > 0 else curve


def degrade_mel(features: np.ndarray, cfg: MelDegradeConfig, rng: np.random.Generator, stack: int = 1,
                applied: list[str] | None = None) -> np.ndarray:
    """A degraded copy of log-mel ``features`` ``(T, bins * stack)`` (never modified in place), same shape and
    dtype; names of the applied ops go to ``applied``."""
    if features.ndim != 2 or features.shape[1] % stack:
        raise ValueError(f"degrade_mel expects (T, bins * {stack}) log-mel frames, got {features.shape}")
    u = rng.random(len(OPS))
    sf = rng.uniform(*cfg.smear_freq_bins)
    st = rng.uniform(*cfg.smear_time_frames)
    bumps = rng.random((max(cfg.eq_bumps, 1), 3))
    gain = rng.uniform(-cfg.gain_db, cfg.gain_db) * LN10_DB
    snr = rng.uniform(*cfg.snr_db)
    colour = rng.random(3)  # the noise floor's tilt uses the first (three drawn: recorded runs keep their draws)
    env_snr = rng.uniform(*cfg.envelope_snr_db)
    env_seed = int(rng.integers(0, 2**31))
    mask = rng.random(4)
    seed = int(rng.integers(0, 2**31))
    if not cfg.enabled:
        return features.copy()
    do = {op: bool(u[i] < getattr(cfg, f"p_{op}")) for i, op in enumerate(OPS)}
    t, width = features.shape
    bins = width // stack
    logp = features.astype(np.float32).reshape(t * stack, bins)
    floor = float(logp.min())
    if do["smear_freq"] or do["smear_time"]:
        power = np.exp(logp.astype(np.float64))
        if do["smear_freq"]:
            power = smear(power, sf, axis=1)
        if do["smear_time"]:
            power = smear(power, st, axis=0)
        logp = np.log(power).astype(np.float32)
    if do["eq"] and cfg.eq_bumps and cfg.eq_db > 0:
        logp = logp + eq_curve(bins, cfg.eq_db, bumps[: cfg.eq_bumps]).astype(np.float32)
    if do["gain"]:
        logp = logp + np.float32(gain)
    if do["noise"]:
        # coloured noise: a power spectrum tilted by up to +-12 dB at the band edges, SNR against the example's mean
        # power, exponentially distributed per cell (the power of Gaussian noise)
        power = np.exp(logp.astype(np.float64))
        x = np.linspace(-1.0, 1.0, bins)
        shape = np.exp((colour[0] * 2 - 1) * 12 * LN10_DB * x)
        level = power.mean() / shape.mean() * 10 ** (-snr / 10)
        cells = np.random.default_rng(seed).exponential(1.0, size=power.shape)
        logp = np.log(power + level * shape * cells).astype(np.float32)
        floor = float(np.log(level * shape.min() + 1e-12))
    if do["envelope_noise"]:
        # noise shaped like the music's power blurred in time and frequency, env_snr dB below it
        power = np.exp(logp.astype(np.float64))
        envelope = smear(smear(power, cfg.envelope_bins, axis=1), cfg.envelope_frames, axis=0)
        cells = np.random.default_rng(env_seed).exponential(1.0, size=power.shape)
        logp = np.log(power + envelope * 10 ** (-env_snr / 10) * cells).astype(np.float32)
    if do["mask"]:
        if cfg.mask_frames:
            n = 1 + int(mask[0] * cfg.mask_frames)
            s = int(mask[1] * max(1, t * stack - n))
            logp[s:s + n] = floor
        if cfg.mask_bins:
            n = 1 + int(mask[2] * cfg.mask_bins)
            s = int(mask[3] * max(1, bins - n))
            logp[:, s:s + n] = floor
    if applied is not None:
        applied.extend(op for op in OPS if do[op])
    return np.ascontiguousarray(logp.reshape(t, width)).astype(features.dtype)


class MelDegrader:
    """``MelDegrader(cfg, stack)(features, rng)``: a picklable callable for datasets (a copy when inactive)."""

    def __init__(self, cfg: MelDegradeConfig | None = None, stack: int = 1) -> None:
        self.cfg = cfg or MelDegradeConfig()
        self.stack = stack

    def __call__(self, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.active:
            return features
        return degrade_mel(features, self.cfg, rng, self.stack)
