"""``ImageCodec``: the RQ-VAE with a uint8 image API and self-describing checkpoint files.

A codec file (written by :meth:`ImageCodec.save`, and at the end of ``musicmoe codec train image`` as
``<run dir>/image_codec.pt``) is a ``torch.save`` dict ``{"format", "version", "config", "state_dict",
"content_hash"}``: the model config as plain values, the weights, and ``content_hash`` = the first 12 hex
digits of the sha256 over the weights (names, dtypes, shapes and raw bytes, in sorted name order).
:meth:`ImageCodec.load` reads such a file, or a Lightning checkpoint (``*.ckpt``) of the training run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.image.layout import WHITE, join_systems, pad_to_patch, split_systems
from musicmoe.codecs.image.model import RQVAE

FORMAT = "musicmoe-image-codec"
VERSION = 1
HASH_CHARS = 12


class CodecFileError(ValueError):
    """A codec file is missing, unreadable, of another format, or fails its content hash; names the file."""


def weights_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Short sha256 over the weights (names, dtypes, shapes, raw bytes; sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:HASH_CHARS]


def config_from_dict(values: Mapping[str, Any], source: str = "<dict>") -> ImageCodecConfig:
    """Validate plain values (e.g. from a checkpoint) into an :class:`ImageCodecConfig`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ImageCodecConfig), dict(values))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        raise CodecFileError(f"{source}: invalid image codec config: {err}") from None


def image_to_ink(images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 gray images of one shape -> ``(B, 1, H, W)`` float ink (``1 - gray / 255``)."""
    arr = images if isinstance(images, np.ndarray) else np.stack(list(images))
    if arr.ndim == 2:
        arr = arr[None]
    return 1.0 - torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0).unsqueeze(1)


def ink_to_image(ink: torch.Tensor) -> np.ndarray:
    """``(..., H, W)`` ink in [0, 1] -> uint8 gray (white = 255)."""
    gray = (1.0 - ink.detach().float().clamp(0, 1)) * 255.0
    return gray.round().to(torch.uint8).cpu().numpy()


class ImageCodec(RQVAE):
    """Score-image tokenizer: ``encode(uint8 H x W) -> (Q, H', W')`` codes, ``decode(codes) -> uint8``.

    Images are padded with white to multiples of ``patch`` (bottom/right); pass the original ``(H, W)`` to
    ``decode(size=...)`` to crop the reconstruction back.  ``sep_id`` (== ``codebook_size``) is the reserved
    separator value used by :meth:`join_systems`.
    """

    @property
    def patch(self) -> int:
        return self.cfg.patch

    @property
    def sep_id(self) -> int:
        return self.cfg.sep_id

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def codebook_vectors(self) -> torch.Tensor:
        """The residual codebooks as one (codebooks, codebook_size, latent_dim) tensor (a detached copy)."""
        return self.quantizer.codebooks.detach().float().cpu().clone()

    @property
    def content_hash(self) -> str:
        """Short sha256 of the current weights (see :func:`weights_hash`)."""
        return weights_hash(self.state_dict())

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Code grid ``(H', W')`` of an image of ``height`` x ``width`` pixels."""
        return -(-height // self.patch), -(-width // self.patch)

    # ------------------------------------------------------------------------------------------ numpy API
    def init_codebooks(self, images: Sequence[np.ndarray]) -> None:
        """k-means initialise the codebooks of an untrained codec from real images (padded with white)."""
        padded = [pad_to_patch(img, self.patch) for img in images]
        if not padded:
            raise ValueError("init_codebooks needs at least one image")
        h = max(p.shape[0] for p in padded)
        w = max(p.shape[1] for p in padded)
        batch = np.full((len(padded), h, w), WHITE, dtype=np.uint8)
        for i, p in enumerate(padded):
            batch[i, : p.shape[0], : p.shape[1]] = p
        self.init_codebooks_ink(image_to_ink(batch).to(self.device))

    def _require_initialized(self) -> None:
        if not self.initialized:
            raise ValueError(
                "the image codec's codebooks are not initialised: load a trained codec, train one, "
                "or call init_codebooks(images)"
            )

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        """uint8 gray ``H x W`` (white = 255) -> int64 codes ``(Q, ceil(H / patch), ceil(W / patch))``."""
        padded = pad_to_patch(image, self.patch)
        self._require_initialized()
        was_training = self.training
        self.eval()
        try:
            codes = self.encode_ink(image_to_ink(padded).to(self.device))
        finally:
            self.train(was_training)
        return codes[0].cpu().numpy().astype(np.int64)

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Encode several images; images with the same padded shape share one forward pass.

        Results equal :meth:`encode` of each image alone (padding is per image, never across images).
        """
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        padded = [pad_to_patch(img, self.patch) for img in images]
        self._require_initialized()
        for i, img in enumerate(padded):
            groups.setdefault(img.shape, []).append(i)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for idx in groups.values():
                    codes = self.encode_ink(image_to_ink([padded[i] for i in idx]).to(self.device))
                    for i, c in zip(idx, codes.cpu().numpy().astype(np.int64)):
                        out[i] = c
        finally:
            self.train(was_training)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Codes ``(Q, H', W')`` -> uint8 image ``(H' * patch, W' * patch)``, cropped to ``size`` if given."""
        arr = np.asarray(codes)
        q = self.cfg.codebooks
        if arr.ndim != 3 or arr.shape[0] != q or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"codes must be an integer array (Q={q}, H', W'), got {arr.dtype} {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.cfg.codebook_size):
            raise ValueError(
                f"codes must lie in 0..{self.cfg.codebook_size - 1} (separator {self.sep_id} is not an image code); "
                f"got {arr.min()}..{arr.max()}"
            )
        self._require_initialized()
        was_training = self.training
        self.eval()
        try:
            ink = self.decode_ink(torch.from_numpy(arr.astype(np.int64))[None].to(self.device))
        finally:
            self.train(was_training)
        image = ink_to_image(ink[0, 0])
        if size is not None:
            h, w = size
            if h > image.shape[0] or w > image.shape[1] or h <= 0 or w <= 0:
                raise ValueError(f"size {size} does not fit the decoded image {image.shape}")
            image = image[:h, :w]
        return image

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """Encode then decode, cropped back to the input's size."""
        return self.decode(self.encode(image), size=image.shape)

    def join_systems(self, systems: Sequence[np.ndarray]) -> np.ndarray:
        """Join flattened systems with this codec's separator (``sep_id``)."""
        return join_systems(systems, self.sep_id)

    def split_systems(self, joined: np.ndarray) -> list[np.ndarray]:
        """Split at this codec's separator columns."""
        return split_systems(joined, self.sep_id)

    # -------------------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> str:
        """Write the codec file atomically (temp name + rename); returns the content hash."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").clone() for k, v in self.state_dict().items()}
        digest = weights_hash(state)
        payload = {
            "format": FORMAT, "version": VERSION, "config": dataclasses.asdict(self.cfg),
            "state_dict": state, "content_hash": digest,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(payload, tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "ImageCodec":
        """Load a codec file (``save``) or a Lightning checkpoint of ``musicmoe codec train image``.

        The stored content hash of a codec file is verified; the codec is returned in eval mode.
        """
        path = Path(path)
        if not path.is_file():
            raise CodecFileError(f"image codec checkpoint not found: {path}")
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # pickle/zip errors come in many types
            raise CodecFileError(f"cannot read image codec checkpoint {path}: {err}") from None
        if not isinstance(blob, dict):
            raise CodecFileError(f"{path} is not an image codec checkpoint")
        if blob.get("format") == FORMAT:
            cfg = config_from_dict(blob["config"], str(path))
            state = blob["state_dict"]
            expected = blob.get("content_hash")
        elif "state_dict" in blob and "codec_config" in blob.get("hyper_parameters", {}):
            cfg = config_from_dict(blob["hyper_parameters"]["codec_config"], str(path))
            state = {k[len("codec."):]: v for k, v in blob["state_dict"].items() if k.startswith("codec.")}
            expected = None
        else:
            raise CodecFileError(f"{path} is neither an image codec file nor an image codec training checkpoint")
        codec = cls(cfg)
        try:
            codec.load_state_dict(state)
        except RuntimeError as err:
            raise CodecFileError(f"{path}: weights do not match its config: {err}") from None
        if expected is not None and codec.content_hash != expected:
            raise CodecFileError(f"{path}: content hash {codec.content_hash} != stored {expected} (corrupt file?)")
        return codec.eval()


__all__ = ["CodecFileError", "ImageCodec", "WHITE", "config_from_dict", "image_to_ink", "ink_to_image", "weights_hash"]
