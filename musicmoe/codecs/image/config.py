"""Settings of the score-image RQ-VAE (owner: image codec).

The model part (``patch`` ... ``dead_code_threshold``) is stored inside every codec checkpoint; the
``train`` part only steers ``musicmoe codec train image``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from musicmoe.schedules import SCHEDULES

LOSSES = ("l1", "l2", "l1+l2", "bce")
OUTPUTS = ("linear", "sigmoid")


@dataclass
class ImageCodecTrainConfig:
    """How ``musicmoe codec train image`` trains the codec (run folder: ``{run.out_dir}/{run.name}``)."""

    corpus: str = ""            # corpus folder with images; empty = corpus.out
    crop_width: int = 256       # training windows: random crops this wide (multiple of patch), full height
    batch_size: int = 16
    max_steps: int = 100_000
    lr: float = 3e-4            # AdamW peak learning rate
    weight_decay: float = 1e-4  # applied to conv weights only
    warmup_steps: int = 0       # linear warm-up to `lr`, then `schedule` down to `min_lr_ratio * lr` at max_steps
    schedule: str = "constant"  # constant, cosine or linear (musicmoe.schedules)
    min_lr_ratio: float = 0.1
    loss: str = "l2"            # reconstruction loss on ink in [0, 1]: l2, l1 or l1+l2 (L1 from scratch tends to
    #                             settle on all-white output first: most pixels are white, and L1 favours the median),
    #                             or bce (binary cross-entropy on the decoder's logits; needs `output: sigmoid`)
    val_split: str = "valid"    # held images; if the corpus has none, the last `val_images` train systems are held out
    val_images: int = 8
    val_every: int = 1000       # steps between validations (PSNR, reconstruction grid)
    log_every: int = 50         # steps between scalar logs (loss, PSNR, codebook usage)
    ckpt_every: int = 1000      # steps between Lightning checkpoints (checkpoints/last.ckpt)
    num_workers: int = 2
    accelerator: str = "auto"   # Lightning accelerator: auto, cpu, gpu
    precision: str = "32-true"
    threads: int = 0            # torch CPU threads (0 = torch's default); 1 is fastest on a busy 2-core machine

    def __post_init__(self) -> None:
        if self.crop_width <= 0 or self.batch_size <= 0 or self.max_steps <= 0:
            raise ValueError("image_codec.train.crop_width, batch_size and max_steps must be > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"image_codec.train.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("image_codec.train.lr must be > 0 and weight_decay >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"image_codec.train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("image_codec.train.warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if min(self.val_every, self.log_every, self.ckpt_every) <= 0:
            raise ValueError("image_codec.train.val_every, log_every and ckpt_every must be > 0")
        if min(self.val_images, self.num_workers, self.threads) < 0:
            raise ValueError("image_codec.train.val_images, num_workers and threads must be >= 0")


@dataclass
class ImageCodecConfig:
    """RQ-VAE over grayscale system crops: one code position per ``patch`` x ``patch`` pixels, ``codebooks``
    residual codebooks of ``codebook_size`` codes each (paper: 16 px, 4 x 1024).

    Encoder and decoder are convolutional (no attention): ``log2(patch)`` stride-2 stages whose widths double
    from ``base_channels`` up to ``max_channels``, ``res_blocks`` residual blocks per stage.  Codebooks are kept
    by exponential moving averages (``ema_decay``), initialised by k-means on the first training batch, and a
    code whose EMA usage falls below ``dead_code_threshold`` is restarted from a random encoder output.
    """

    patch: int = 16
    codebooks: int = 4
    codebook_size: int = 1024
    latent_dim: int = 64             # dimension of a code vector
    base_channels: int = 32
    max_channels: int = 256
    res_blocks: int = 2
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0  # 0 disables dead-code restarts
    output: str = "linear"           # decoder output: "linear" ink (clamped to [0, 1] when decoded) or "sigmoid"
    checkpoint: str = ""   # a trained codec checkpoint; empty = train one with `musicmoe codec train image`
    train: ImageCodecTrainConfig = field(default_factory=ImageCodecTrainConfig)

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.codebooks <= 0 or self.codebook_size <= 1:
            raise ValueError("image_codec.patch, codebooks must be > 0 and codebook_size > 1")
        if self.patch < 2 or self.patch & (self.patch - 1):
            raise ValueError(f"image_codec.patch must be a power of two >= 2, got {self.patch}")
        if min(self.latent_dim, self.base_channels, self.max_channels) <= 0 or self.res_blocks < 0:
            raise ValueError("image_codec.latent_dim, base_channels, max_channels must be > 0 and res_blocks >= 0")
        if self.max_channels < self.base_channels:
            raise ValueError("image_codec.max_channels must be >= image_codec.base_channels")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"image_codec.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment_weight < 0 or self.dead_code_threshold < 0 or self.kmeans_iters <= 0:
            raise ValueError("image_codec.commitment_weight, dead_code_threshold must be >= 0 and kmeans_iters > 0")
        if self.output not in OUTPUTS:
            raise ValueError(f"image_codec.output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        train = self.train
        if isinstance(train, ImageCodecTrainConfig) and train.loss == "bce" and self.output != "sigmoid":
            raise ValueError("image_codec.train.loss 'bce' needs image_codec.output: sigmoid (it is a loss on logits)")
        if isinstance(train, ImageCodecTrainConfig) and train.crop_width % self.patch:
            raise ValueError(
                f"image_codec.train.crop_width ({train.crop_width}) must be a multiple of "
                f"image_codec.patch ({self.patch})"
            )

    @property
    def stages(self) -> int:
        """Number of stride-2 down/up-sampling stages (``log2(patch)``)."""
        return self.patch.bit_length() - 1

    @property
    def sep_id(self) -> int:
        """The code value that marks a system separator in joined code sequences (== ``codebook_size``)."""
        return self.codebook_size
