"""The score-image RQ-VAE: convolutional encoder, residual vector quantizer, convolutional decoder.

Pixels enter as *ink* ``x = 1 - gray / 255`` (white = 0, so white padding equals the convolutions' zero
padding) and the decoder predicts ink, either directly (``output: linear``, clamped to [0, 1] when decoded) or as
logits through a sigmoid (``output: sigmoid``, trained with binary cross-entropy: score images are nearly
binary).  The residual quantizer is ``vector_quantize_pytorch.ResidualVQ`` with EMA codebooks, k-means
initialisation and dead-code restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from vector_quantize_pytorch import ResidualVQ

from musicmoe.codecs.image.config import ImageCodecConfig


class ResBlock(nn.Module):
    """``x + conv1x1(act(conv3x3(act(x))))``, starting as the identity (last conv zero-initialised).

    No normalisation layers: a code depends only on its image neighbourhood, not on the whole image.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), nn.Conv2d(channels, channels, 1)
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def stage_channels(cfg: ImageCodecConfig) -> list[int]:
    """Channel width at resolutions 1/2, 1/4, ..., 1/patch (``stages`` entries)."""
    return [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.stages)]


class Encoder(nn.Module):
    """``(B, 1, H, W)`` ink -> ``(B, latent_dim, H / patch, W / patch)``.

    The full-resolution step is a single strided convolution from the one input channel (cheap); residual
    blocks run at 1/2 resolution and below.
    """

    def __init__(self, cfg: ImageCodecConfig) -> None:
        super().__init__()
        ch = stage_channels(cfg)
        layers: list[nn.Module] = [nn.Conv2d(1, ch[0], 4, stride=2, padding=1)]
        for i in range(cfg.stages - 1):
            layers += [ResBlock(ch[i]) for _ in range(cfg.res_blocks)]
            layers.append(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1))
        layers += [ResBlock(ch[-1]) for _ in range(cfg.res_blocks)]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``(B, latent_dim, H', W')`` -> ``(B, 1, H' * patch, W' * patch)`` ink logits (mirror of the encoder)."""

    def __init__(self, cfg: ImageCodecConfig) -> None:
        super().__init__()
        ch = stage_channels(cfg)
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, ch[-1], 3, padding=1)]
        layers += [ResBlock(ch[-1]) for _ in range(cfg.res_blocks)]
        for i in reversed(range(cfg.stages - 1)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1)]
            layers += [ResBlock(ch[i]) for _ in range(cfg.res_blocks)]
        layers += [nn.SiLU(), nn.ConvTranspose2d(ch[0], 1, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


@dataclass
class RQVAEOutput:
    """Result of one forward pass: ink reconstruction, codes ``(B, Q, H', W')``, commitment loss, and the
    decoder's raw output (logits when the output is a sigmoid; else the same tensor as ``recon``)."""

    recon: Tensor
    codes: Tensor
    commit_loss: Tensor
    logits: Tensor


class RQVAE(nn.Module):
    """Encoder + ``ResidualVQ`` + decoder; tensors in, tensors out (``ImageCodec`` adds the uint8 API)."""

    def __init__(self, cfg: ImageCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(
            dim=cfg.latent_dim,
            num_quantizers=cfg.codebooks,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            commitment_weight=cfg.commitment_weight,
        )
        self.decoder = Decoder(cfg)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, D, H', W')`` latents -> (quantized latents, codes ``(B, Q, H', W')``, summed commitment loss)."""
        b, d, h, w = z.shape
        seq = z.permute(0, 2, 3, 1).reshape(b, h * w, d)
        quantized, indices, losses = self.quantizer(seq)
        quantized = quantized.reshape(b, h, w, d).permute(0, 3, 1, 2)
        codes = indices.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return quantized, codes, losses.sum()

    def encode_ink(self, ink: Tensor) -> Tensor:
        """``(B, 1, H, W)`` ink (H, W multiples of patch) -> codes ``(B, Q, H', W')`` (long)."""
        return self.quantize(self.encoder(ink))[1]

    def decode_ink(self, codes: Tensor) -> Tensor:
        """Codes ``(B, Q, H', W')`` -> ink ``(B, 1, H, W)`` in [0, 1]."""
        b, q, h, w = codes.shape
        seq = codes.permute(0, 2, 3, 1).reshape(b, h * w, q)
        latent = self.quantizer.get_output_from_indices(seq)
        latent = latent.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.output(self.decoder(latent))

    def output(self, raw: Tensor) -> Tensor:
        """The decoder's raw output as ink (a sigmoid of logits, or the linear output itself)."""
        return torch.sigmoid(raw) if self.cfg.output == "sigmoid" else raw

    def forward(self, ink: Tensor) -> RQVAEOutput:
        quantized, codes, commit = self.quantize(self.encoder(ink))
        raw = self.decoder(quantized)
        return RQVAEOutput(self.output(raw), codes, commit, raw)

    @property
    def initialized(self) -> bool:
        """True once every codebook holds codes (k-means initialisation has run, or k-means init is off)."""
        return all(bool(layer._codebook.initted) for layer in self.quantizer.layers)

    @torch.no_grad()
    def init_codebooks_ink(self, ink: Tensor) -> None:
        """Initialise the codebooks by k-means on the latents of ``ink`` ``(B, 1, H, W)`` (no-op once done)."""
        if self.initialized:
            return
        was_training = self.training
        self.eval()  # eval: k-means only, no EMA update or dead-code restart
        try:
            self.quantize(self.encoder(ink))
        finally:
            self.train(was_training)
