"""``AudioCodec``: EnCodec (24 kHz) turning mono waveforms into (Q, T) codes and back.

A checkpoint (``AudioCodec.save``) is one ``torch.save`` file holding the codec's config, its weights and
their sha256 (``content_hash``); token shards record the hash so tokens and codec never get mixed up.
Published EnCodec weights (``encodec_24khz-d7cc33bc.th``) load with :meth:`AudioCodec.from_published`;
only the residual codebooks that ``bandwidth`` needs are kept (4 at 3 kbps).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicmoe.codecs.audio.config import AudioCodecConfig, AudioCodecTrainConfig

FORMAT = "musicmoe-audio-codec"
VERSION = 1
PUBLISHED_NAME = "encodec_24khz-d7cc33bc.th"
PUBLISHED_URL = "https://dl.fbaipublicfiles.com/encodec/v0/" + PUBLISHED_NAME


class AudioCodecError(ValueError):
    """A codec file is missing, corrupt or does not fit; the message names the file."""


def build_model(cfg: AudioCodecConfig):
    """A randomly initialised EnCodec model with ``cfg``'s architecture and ``cfg.codebooks`` codebooks.

    The codebooks start empty and are filled by k-means on the first training-mode forward pass.
    """
    from musicmoe.codecs.audio._encodec import (
        EncodecModel,
        ResidualVectorQuantizer,
        SEANetDecoder,
        SEANetEncoder,
    )

    arch = dict(
        channels=1, dimension=cfg.dimension, n_filters=cfg.n_filters, n_residual_layers=cfg.n_residual_layers,
        ratios=list(cfg.ratios), lstm=cfg.lstm, norm="weight_norm", causal=cfg.causal,
    )
    with warnings.catch_warnings():  # encodec uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        encoder, decoder = SEANetEncoder(**arch), SEANetDecoder(**arch)
    quantizer = ResidualVectorQuantizer(
        dimension=cfg.dimension, n_q=cfg.codebooks, bins=cfg.codebook_size, kmeans_iters=cfg.kmeans_iters,
        decay=cfg.codebook_decay,
        # encodec 0.1.1's own dead-code expiry is undone by its EMA update in the same step; training
        # re-seeds dead codes itself (musicmoe.codecs.audio.train.reseed_dead_codes)
        threshold_ema_dead_code=0,
    )
    model = EncodecModel(
        encoder, decoder, quantizer, [float(cfg.bandwidth)], cfg.sample_rate, 1,
        normalize=False, segment=None, name="musicmoe",
    )
    model.set_target_bandwidth(float(cfg.bandwidth))
    _signal_preserving_init(model)
    return model


@torch.no_grad()
def _signal_preserving_init(model: torch.nn.Module) -> None:
    """Kaiming-normal (linear gain) conv weights and zero biases.

    PyTorch's default conv init shrinks the signal by about 1.7x per layer, so a fresh SEANet encoder's output
    (10+ layers) barely depends on its input (its variation over time is ~1e-3 of its offset) and a short
    training run collapses to one code.  With this init the latents vary with the input from the start.
    Weight-normed layers keep ``weight = g * v / |v|`` equal to ``v``.
    """
    for mod in model.modules():
        if not isinstance(mod, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            continue
        mode = "fan_out" if isinstance(mod, torch.nn.ConvTranspose1d) else "fan_in"  # fan-in of a transposed conv
        weight = getattr(mod, "weight_v", None)
        if weight is None:
            torch.nn.init.kaiming_normal_(mod.weight, mode=mode, nonlinearity="linear")
        else:
            torch.nn.init.kaiming_normal_(weight, mode=mode, nonlinearity="linear")
            mod.weight_g.copy_(weight.norm(dim=tuple(range(1, weight.dim())), keepdim=True))
        if mod.bias is not None:
            mod.bias.zero_()


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _config_from_dict(data: dict[str, Any], where: str) -> AudioCodecConfig:
    known = {f.name for f in fields(AudioCodecConfig)} - {"train"}
    known_train = {f.name for f in fields(AudioCodecTrainConfig)}
    try:
        train = AudioCodecTrainConfig(**{k: v for k, v in (data.get("train") or {}).items() if k in known_train})
        return AudioCodecConfig(**{k: v for k, v in data.items() if k in known}, train=train)
    except (TypeError, ValueError) as err:
        raise AudioCodecError(f"{where}: bad codec config ({err})") from None


def resolve_published(weights: str) -> Path:
    """Path of the published weights: a file path, or ``hub`` for torch.hub's checkpoint cache."""
    if weights == "hub":
        path = Path(torch.hub.get_dir()) / "checkpoints" / PUBLISHED_NAME
        if not path.is_file():
            raise AudioCodecError(
                f"published EnCodec weights not in the torch.hub cache ({path}); download {PUBLISHED_URL} there"
            )
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise AudioCodecError(f"audio codec weights file not found: {path} (get it from {PUBLISHED_URL})")
    return path


class AudioCodec:
    """Mono waveform at ``sample_rate`` <-> ``(codebooks, frames)`` int64 codes (EnCodec)."""

    def __init__(self, model: torch.nn.Module, config: AudioCodecConfig, info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.config = config
        self.info = dict(info or {})
        self._hash: str | None = None

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def build(cls, config: AudioCodecConfig) -> "AudioCodec":
        """Random initialisation (codebooks empty until trained)."""
        return cls(build_model(config), config, {"source": "random-init"})

    @classmethod
    def from_published(cls, weights: str | os.PathLike, config: AudioCodecConfig | None = None) -> "AudioCodec":
        """Load Meta's published 24 kHz weights (keeps the first ``config.codebooks`` codebooks)."""
        from musicmoe.codecs.audio._encodec import encodec

        config = config or AudioCodecConfig()
        if not config.is_published_architecture():
            raise AudioCodecError("published EnCodec weights need the default audio_codec architecture keys")
        path = resolve_published(str(weights))
        expected = path.stem.rsplit("-", 1)[-1] if "-" in path.stem else ""
        if re.fullmatch(r"[0-9a-f]{8,64}", expected):  # published names end in a sha256 prefix
            try:
                encodec.utils._check_checksum(path, expected)
            except RuntimeError as err:
                raise AudioCodecError(f"{path}: {err}") from None
        state = _torch_load(path)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model = build_model(config)
        keep = {k: v for k, v in state.items() if not _unused_codebook(k, config.codebooks)}
        try:
            model.load_state_dict(keep, strict=True)
        except RuntimeError as err:
            raise AudioCodecError(f"{path}: weights do not fit EnCodec 24 kHz ({str(err)[:300]})") from None
        return cls(model, config, {"source": f"published:{path.name}"})

    @classmethod
    def from_config(cls, config: AudioCodecConfig) -> "AudioCodec":
        """The codec a config names: ``checkpoint`` first, then published ``weights``."""
        if config.checkpoint:
            return cls.load(config.checkpoint)
        if config.weights:
            return cls.from_published(config.weights, config)
        raise AudioCodecError(
            "no audio codec configured: train one with `musicmoe codec train audio` (audio_codec.checkpoint=...) "
            "or set audio_codec.weights to the published EnCodec weights"
        )

    def init_codebooks(self, waves: list[np.ndarray], seconds: float = 2.0) -> None:
        """k-means initialise still-empty codebooks from real audio (first ``seconds`` of each wave).

        Training does this on its first batch; this is for untrained codecs in tests and benchmarks.
        """
        n = min([len(w) for w in waves] + [int(seconds * self.sample_rate)])
        if not waves or n <= 0:
            raise ValueError("init_codebooks needs at least one non-empty wave")
        x = torch.from_numpy(np.stack([np.asarray(w[:n], dtype=np.float32) for w in waves]))[:, None]
        self.model.train()
        try:
            with torch.no_grad():
                self.model.quantizer(self.model.encoder(x.to(self.device)), self.frame_rate, self.model.bandwidth)
        finally:
            self.model.eval()
        self._hash = None

    # ----------------------------------------------------------------------------------------------- I/O
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    @property
    def content_hash(self) -> str:
        """sha256 of the weights (cached; call :meth:`refresh_hash` after changing them)."""
        if self._hash is None:
            self._hash = state_hash(self.state_dict())
        return self._hash

    def refresh_hash(self) -> str:
        self._hash = None
        return self.content_hash

    def save(self, path: str | os.PathLike) -> Path:
        """Write config + weights + hash to ``path`` atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        self._hash = state_hash(state)
        payload = {
            "format": FORMAT, "version": VERSION, "config": asdict(self.config),
            "state_dict": state, "content_hash": self._hash, "info": self.info,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(payload, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "AudioCodec":
        """Read a checkpoint written by :meth:`save` (or published EnCodec weights, recognised by content)."""
        path = Path(path)
        if not path.is_file():
            raise AudioCodecError(f"audio codec checkpoint not found: {path}")
        payload = _torch_load(path)
        published = isinstance(payload, dict) and "encoder.model.0.conv.conv.weight_v" in payload
        if published and payload.get("format") != FORMAT:
            return cls.from_published(path)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise AudioCodecError(f"{path} is not an audio codec checkpoint (written by AudioCodec.save)")
        config = _config_from_dict(payload["config"], str(path))
        config.checkpoint = str(path)
        model = build_model(config)
        try:
            model.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as err:
            raise AudioCodecError(f"{path}: weights do not fit the stored config ({str(err)[:300]})") from None
        codec = cls(model, config, payload.get("info"))
        if verify and codec.content_hash != payload.get("content_hash"):
            raise AudioCodecError(f"{path}: weights do not match their recorded sha256 (corrupt checkpoint)")
        return codec

    # ------------------------------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def codebook_vectors(self) -> torch.Tensor:
        """The kept residual codebooks as one (codebooks, codebook_size, dimension) tensor (a detached copy)."""
        layers = self.model.quantizer.vq.layers[: self.num_codebooks]
        return torch.stack([layer._codebook.embed.detach().float().cpu() for layer in layers])

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "AudioCodec":
        self.model.to(device)
        return self

    def num_frames(self, num_samples: int) -> int:
        """Code frames for a waveform of ``num_samples`` samples."""
        return -(-int(num_samples) // self.hop_length)

    # ---------------------------------------------------------------------------------------- encode/decode
    def encode(self, wave: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Codes ``(codebooks, ceil(len / hop))`` int64 of a mono float waveform (resampled if needed)."""
        wave = np.asarray(wave)
        if wave.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {wave.shape}")
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        if sample_rate is not None and sample_rate != self.sample_rate:
            from musicmoe.codecs.audio._encodec import convert_audio

            x = convert_audio(x[None], int(sample_rate), self.sample_rate, 1)[0]
        if x.numel() == 0:
            return np.zeros((self.num_codebooks, 0), dtype=np.int64)
        if not torch.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        with torch.inference_mode():
            emb = self.model.encoder(x.to(self.device)[None, None])
            codes = self.model.quantizer.encode(emb, self.frame_rate, self.model.bandwidth)  # (Q, 1, T)
        return codes[:, 0].cpu().numpy().astype(np.int64)

    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Float32 waveform (``frames * hop`` samples) of codes ``(Q', T)``, ``1 <= Q' <= codebooks``."""
        c = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if c.ndim != 2 or not 1 <= c.shape[0] <= self.num_codebooks:
            raise ValueError(f"codes must have shape (1..{self.num_codebooks}, T), got {tuple(c.shape)}")
        if c.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        if int(c.min()) < 0 or int(c.max()) >= self.codebook_size:
            raise ValueError(f"codes must lie in 0..{self.codebook_size - 1}, got {int(c.min())}..{int(c.max())}")
        with torch.inference_mode():
            emb = self.model.quantizer.decode(c.to(self.device)[:, None])
            wave = self.model.decoder(emb)[0, 0]
        return wave.float().cpu().numpy()

    def reconstruct(self, wave: np.ndarray) -> np.ndarray:
        """``decode(encode(wave))`` cut to the input length."""
        return self.decode(self.encode(wave))[: len(wave)]


def _unused_codebook(key: str, n_q: int) -> bool:
    prefix = "quantizer.vq.layers."
    return key.startswith(prefix) and int(key[len(prefix):].split(".")[0]) >= n_q


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        raise AudioCodecError(f"cannot read audio codec file {path}: {err}") from None
