"""Settings of the EnCodec audio codec (owner: audio codec)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from musicmoe.schedules import SCHEDULES

PUBLISHED_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)


@dataclass
class AudioCodecTrainConfig:
    """How ``musicmoe codec train audio`` trains the codec (run folder: ``{run.out_dir}/{run.name}``)."""

    corpus: str = ""               # corpus folder with audio; empty = corpus.out
    max_steps: int = 20_000
    batch_size: int = 16
    segment_seconds: float = 1.0   # random crops of this length
    lr: float = 3e-4               # Adam, betas (0.5, 0.9) as EnCodec
    warmup_steps: int = 0          # linear warm-up to `lr`, then `schedule` down to `min_lr_ratio * lr` at max_steps
    schedule: str = "constant"     # constant, cosine or linear (musicmoe.schedules)
    min_lr_ratio: float = 0.1
    l1_weight: float = 0.1         # waveform L1
    stft_weight: float = 1.0       # multi-resolution STFT loss (spectral convergence + log magnitude)
    mel_weight: float = 1.0        # multi-scale mel loss (EnCodec's frequency-domain loss)
    commit_weight: float = 1.0     # commitment loss of the residual quantizer
    quantizer_warmup_steps: int = 0  # a fresh codec trains as a plain autoencoder first, then k-means-inits codes
    val_split: str = "valid"       # if the corpus has no audio there, the first train examples are used (reported)
    val_examples: int = 8          # centre crops of this many examples
    val_every: int = 1000          # steps between validations (spectral distance, audio examples)
    log_every: int = 50
    ckpt_every: int = 1000         # steps between Lightning checkpoints (checkpoints/last.ckpt)
    num_workers: int = 2
    accelerator: str = "auto"      # Lightning accelerator: auto, cpu, gpu
    precision: str = "32-true"
    threads: int = 0               # torch CPU threads (0 = default); 1 is fastest on a busy 2-core machine

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.batch_size <= 0 or self.segment_seconds <= 0 or self.lr <= 0:
            raise ValueError("audio_codec.train.max_steps, batch_size, segment_seconds and lr must be > 0")
        if min(self.l1_weight, self.stft_weight, self.mel_weight, self.commit_weight) < 0:
            raise ValueError("audio_codec.train loss weights must be >= 0")
        if min(self.val_every, self.log_every, self.ckpt_every, self.val_examples) <= 0:
            raise ValueError("audio_codec.train.val_every, log_every, ckpt_every and val_examples must be > 0")
        if min(self.num_workers, self.threads, self.quantizer_warmup_steps) < 0:
            raise ValueError("audio_codec.train.num_workers, threads and quantizer_warmup_steps must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"audio_codec.train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("audio_codec.train.warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")


@dataclass
class AudioCodecConfig:
    """EnCodec 24 kHz; 3 kbps = 4 codebooks of 1024 at 75 frames/s.

    Architecture keys (``n_filters`` ... ``causal``) are EnCodec's SEANet encoder/decoder parameters; their
    defaults are the published 24 kHz model.  ``bandwidth`` picks the number of residual codebooks:
    ``bandwidth / (log2(codebook_size) * frame_rate / 1000)``, so 3 kbps at 75 frames/s and 1024 entries = 4.
    The frame rate is ``sample_rate / prod(ratios)`` (24000 / 320 = 75).

    The model part (everything but ``weights``, ``checkpoint`` and ``train``) is stored in every checkpoint.
    Source of the codec, first match wins: ``checkpoint`` (trained by ``musicmoe codec train audio``), else
    ``weights`` (the published ``encodec_24khz-d7cc33bc.th``, a path, or ``hub`` for torch.hub's cache).
    ``train`` steers ``musicmoe codec train audio`` only; with ``weights`` or ``checkpoint`` set it fine-tunes.
    """

    sample_rate: int = 24000
    bandwidth: float = 3.0
    weights: str = ""      # published EnCodec weights (.th) if the user has them, or "hub"
    checkpoint: str = ""   # a codec checkpoint trained/fine-tuned by `musicmoe codec train audio`

    # architecture (EnCodec's SEANet); defaults = the published 24 kHz model
    n_filters: int = 32
    dimension: int = 128
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    n_residual_layers: int = 1
    lstm: int = 2
    codebook_size: int = 1024
    causal: bool = True

    # codebook upkeep during training (stored with the model, used only by training)
    kmeans_iters: int = 50
    codebook_decay: float = 0.99       # EMA decay of the codebooks
    dead_code_threshold: float = 2.0   # codes used less (EMA count per step) are re-seeded from the batch; 0 = off

    train: AudioCodecTrainConfig = field(default_factory=AudioCodecTrainConfig)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"audio_codec.sample_rate must be > 0, got {self.sample_rate}")
        if not self.ratios or any(r <= 0 for r in self.ratios):
            raise ValueError(f"audio_codec.ratios must be positive integers, got {self.ratios}")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"audio_codec.codebook_size must be a power of 2, got {self.codebook_size}")
        if min(self.n_filters, self.dimension) <= 0 or self.n_residual_layers < 0 or self.lstm < 0:
            raise ValueError("audio_codec.n_filters and dimension must be > 0, n_residual_layers and lstm >= 0")
        q = self.bandwidth / self.bandwidth_per_codebook
        if self.bandwidth <= 0 or abs(q - round(q)) > 1e-6 or round(q) < 1:
            raise ValueError(
                f"audio_codec.bandwidth {self.bandwidth} kbps is not a whole number of codebooks of "
                f"{self.bandwidth_per_codebook:g} kbps each (frame rate {self.frame_rate}, "
                f"{self.codebook_size} entries)"
            )
        if self.weights and self.bandwidth not in PUBLISHED_BANDWIDTHS:
            raise ValueError(f"audio_codec.bandwidth must be one of {PUBLISHED_BANDWIDTHS} with published weights")
        if not 0 < self.codebook_decay < 1 or self.dead_code_threshold < 0 or self.kmeans_iters <= 0:
            raise ValueError("audio_codec.codebook_decay must be in (0, 1), dead_code_threshold >= 0, kmeans_iters > 0")

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.ratios))

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bandwidth_per_codebook(self) -> float:
        return math.log2(self.codebook_size) * self.frame_rate / 1000

    @property
    def codebooks(self) -> int:
        return int(round(self.bandwidth / self.bandwidth_per_codebook))

    def is_published_architecture(self) -> bool:
        """True if the architecture keys equal the published 24 kHz EnCodec (so its weights fit)."""
        ref = AudioCodecConfig()
        keys = ("sample_rate", "n_filters", "dimension", "ratios", "n_residual_layers", "lstm", "codebook_size",
                "causal")
        return all(getattr(self, k) == getattr(ref, k) for k in keys)
