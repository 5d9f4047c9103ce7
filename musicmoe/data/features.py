"""Continuous encoder inputs beside VQ codes: pixel patches of score images and log-mel frames of audio.

A source modality whose input is continuous (``model.image_input: pixels``, ``model.audio_input: mel``) reaches the
encoder as a float feature array ``(T, F)`` instead of codec codes; targets stay codes.

* ``image_patches``: a grayscale crop, padded with white to multiples of ``patch`` px, cut into the same
  ``patch`` x ``patch`` grid the image codec uses and flattened column by column (the codes' reading order), so
  position ``t`` is grid cell ``(t % H', t // H')``; values are ink (0 = white, 1 = black) as uint8 ``0..255``.
* ``log_mel``: log-compressed filterbank frames ``(T, n_mels)`` (float16), ``hop`` samples apart, on the mel
  scale or (``model.mel_scale: log``) in equal log-frequency steps, which resolves the pitch of low notes; the
  encoder reads ``mel_stack`` consecutive frames per position (:meth:`FeatureSpec.audio_features`).

:class:`FeatureSource` reads the clean media of a corpus by example key and caches the features in memory (a
folk corpus of ~10k systems takes well under 2 GB), so each DataLoader process computes an example once.
Lengths are known without reading media: the grid from the manifest's image size, frames from the duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_INPUTS = ("codes", "pixels")
AUDIO_INPUTS = ("codes", "mel")


@dataclass(frozen=True)
class FeatureSpec:
    """What the model reads for continuous sources (built from the model config, see :meth:`from_model`)."""

    image: bool = False       # image sources as pixel patches
    audio: bool = False       # audio sources as log-mel frames
    patch: int = 16
    mel_bins: int = 128
    mel_hop: int = 480        # samples at ``sample_rate`` (480 at 24 kHz = 20 ms)
    mel_stack: int = 2        # consecutive frames per position
    sample_rate: int = 24000
    mel_scale: str = "mel"    # "mel" or "log" filter spacing (see :func:`mel_filterbank`)
    mel_fmin: float = 30.0
    mel_fmax: float = 0.0     # 0: sample_rate / 2
    mel_fft: int = 0          # 0: smallest power of two >= 4 hops

    @property
    def n_fft(self) -> int:
        return self.mel_fft or 1 << max(8, math.ceil(math.log2(4 * self.mel_hop)))

    def key(self, modality: str) -> str:
        """A short name of the settings that shape ``modality``'s features (the disk cache's folder)."""
        import hashlib

        if modality == "image":
            text = f"pixels-p{self.patch}"
        else:
            text = f"mel-{self.sample_rate}-{self.mel_bins}-{self.mel_hop}-{self.mel_stack}"
            if (self.mel_scale, self.mel_fmin, self.mel_fmax, self.mel_fft) != ("mel", 30.0, 0.0, 0):
                text += f"-{self.mel_scale}-{self.mel_fmin:g}-{self.mel_fmax:g}-{self.n_fft}"
        return f"{text}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    @classmethod
    def from_model(cls, model_cfg: Any) -> FeatureSpec:
        """The features a :class:`~musicmoe.models.config.ModelConfig` reads."""
        return cls(image=model_cfg.image_input == "pixels", audio=model_cfg.audio_input == "mel",
                   patch=model_cfg.patch, mel_bins=model_cfg.mel_bins, mel_hop=model_cfg.mel_hop,
                   mel_stack=model_cfg.mel_stack, sample_rate=model_cfg.feature_sample_rate,
                   mel_scale=model_cfg.mel_scale, mel_fmin=float(model_cfg.mel_fmin),
                   mel_fmax=float(model_cfg.mel_fmax), mel_fft=model_cfg.mel_fft)

    def uses(self, modality: str) -> bool:
        return (modality == "image" and self.image) or (modality == "audio" and self.audio)

    @property
    def any(self) -> bool:
        return self.image or self.audio

    def dim(self, modality: str) -> int:
        return self.patch * self.patch if modality == "image" else self.mel_bins * self.mel_stack

    def image_grid(self, height: int, width: int) -> tuple[int, int]:
        return -(-int(height) // self.patch), -(-int(width) // self.patch)

    def audio_frames(self, samples: int) -> int:
        """Encoder positions of ``samples`` of audio (stacked mel frames)."""
        return -(-(int(samples) // self.mel_hop + 1) // self.mel_stack)

    def audio_features(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """``(T, mel_bins * mel_stack)`` float16: :func:`log_mel` frames stacked ``mel_stack`` at a time."""
        mel = log_mel(wave, sample_rate, self)
        k = self.mel_stack
        pad = (-len(mel)) % k
        if pad:
            mel = np.concatenate([mel, np.repeat(mel[-1:], pad, 0)])
        return np.ascontiguousarray(mel.reshape(len(mel) // k, k * mel.shape[1]))


def image_patches(image: np.ndarray, patch: int = 16) -> tuple[np.ndarray, int]:
    """``(T, patch * patch)`` uint8 ink patches of a grayscale crop in column-major grid order, and the grid
    height ``H'`` (``T = H' * W'``)."""
    if image.ndim != 2:
        raise ValueError(f"image_patches: need a 2-D grayscale image, got shape {image.shape}")
    h, w = image.shape
    rows, cols = -(-h // patch), -(-w // patch)
    ink = np.zeros((rows * patch, cols * patch), dtype=np.uint8)
    ink[:h, :w] = 255 - image.astype(np.uint8)
    grid = ink.reshape(rows, patch, cols, patch).transpose(2, 0, 1, 3)  # (W', H', p, p): column by column
    return np.ascontiguousarray(grid.reshape(rows * cols, patch * patch)), rows


def patches_to_image(patches: np.ndarray, rows: int, patch: int = 16) -> np.ndarray:
    """Inverse of :func:`image_patches` (ink, padded size)."""
    cols = patches.shape[0] // rows
    grid = patches[: rows * cols].reshape(cols, rows, patch, patch).transpose(1, 2, 0, 3)
    return grid.reshape(rows * patch, cols * patch)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 30.0, fmax: float | None = None,
                   scale: str = "mel") -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each normalised to unit area.

    ``scale="mel"``: centres evenly spaced on the HTK mel scale; ``"log"``: evenly spaced in log frequency (a fixed
    fraction of a semitone apart, as a constant-Q transform), so a pitch shift moves a note's partials by the same
    number of filters everywhere. A filter narrower than the STFT's bin spacing is widened to span its neighbouring
    bins, so no filter is empty."""
    fmax = fmax or sample_rate / 2
    if scale == "mel":
        def warp(f):
            return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

        def unwarp(m):
            return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)
    elif scale == "log":
        warp, unwarp = np.log, np.exp
    else:
        raise ValueError(f"mel_filterbank: scale must be 'mel' or 'log', got {scale!r}")
    edges = unwarp(np.linspace(warp(fmin), warp(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    step = sample_rate / n_fft
    mid = edges[1:-1, None]
    lo, hi = np.minimum(edges[:-2, None], mid - step), np.maximum(edges[2:, None], mid + step)
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (tri / np.maximum(tri.sum(1, keepdims=True), 1e-8)).astype(np.float32)


def log_mel(wave: np.ndarray, sample_rate: int, spec: FeatureSpec) -> np.ndarray:
    """``(T, spec.mel_bins)`` float16 log-mel frames of a mono waveform (resampled to ``spec.sample_rate``)."""
    import torch

    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate != spec.sample_rate:
        n = max(1, round(len(x) * spec.sample_rate / sample_rate))
        x = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
    n_fft = spec.n_fft
    t = torch.from_numpy(x)
    stft = torch.stft(t, n_fft, hop_length=spec.mel_hop, window=torch.hann_window(n_fft), center=True,
                      return_complex=True)
    power = torch.view_as_real(stft).pow(2).sum(-1)  # (n_fft // 2 + 1, T)
    fb = mel_filterbank(spec.sample_rate, n_fft, spec.mel_bins, spec.mel_fmin, spec.mel_fmax or None, spec.mel_scale)
    mel = torch.from_numpy(fb) @ power
    return torch.log(mel.T + 1e-6).numpy().astype(np.float16)


class FeatureSource:
    """Continuous source features of a corpus's examples by key (see the module docstring); picklable.

    Log-mel frames (~0.1 s of CPU per example) are also kept on disk, one ``.npy`` per example under
    ``CORPUS/features/<settings>/`` (written to a temporary name, then renamed), so later runs and DataLoader
    workers read them instead of recomputing; ``disk_cache=False`` (or a read-only corpus) keeps them in memory only.
    """

    def __init__(self, corpus_dir: str, spec: FeatureSpec, disk_cache: bool = True,
                 transform: dict[str, Any] | None = None) -> None:
        """``transform``: modality -> function applied to the decoded media before its features are computed
        (``image(pixels) -> pixels``, ``audio(wave, sample_rate) -> (wave, sample_rate)``), e.g. a codec's
        reconstruction; transformed features are never written to the disk cache."""
        self.corpus_dir, self.spec = str(corpus_dir), spec
        self.transform = dict(transform or {})
        self.disk_cache = disk_cache and not self.transform
        self._corpus = None
        self._index: dict[str, int] = {}
        self._cache: dict[tuple[str, str], tuple[np.ndarray, int]] = {}

    def __getstate__(self) -> dict[str, Any]:  # each worker opens the corpus and fills its own cache
        return {**self.__dict__, "_corpus": None, "_index": {}, "_cache": {}}

    def _open(self) -> None:
        if self._corpus is None:
            from musicmoe.data.shards import Corpus

            self._corpus = Corpus(self.corpus_dir)
            self._index = {r["key"]: i for i, r in enumerate(self._corpus.records)}

    def _record(self, key: str) -> tuple[int, dict[str, Any]]:
        self._open()
        if key not in self._index:
            raise KeyError(f"example {key!r} is not in the corpus {self.corpus_dir}")
        i = self._index[key]
        return i, self._corpus.records[i]  # type: ignore[union-attr]

    def length(self, key: str, modality: str) -> int:
        """Feature positions of ``key``'s ``modality`` from the manifest (0 when it has none)."""
        _, rec = self._record(key)
        if modality == "image":
            shape = rec.get("image_shape") or [rec.get("image_height", 0), rec.get("image_width", 0)]
            rows, cols = self.spec.image_grid(*shape)
            return rows * cols
        seconds = float(rec.get("audio_seconds") or rec.get("duration") or 0.0)
        return self.spec.audio_frames(round(seconds * self.spec.sample_rate)) if seconds > 0 else 0

    def get(self, key: str, modality: str) -> tuple[np.ndarray, int]:
        """``(features (T, F), grid rows)`` of ``key``'s ``modality`` (rows 0 for audio)."""
        hit = self._cache.get((key, modality))
        if hit is not None:
            return hit
        from musicmoe.data.shards import decode_audio, decode_image

        i, _ = self._record(key)
        disk = self._disk_path(key, modality) if modality == "audio" and self.disk_cache else None
        if disk is not None and disk.is_file():
            try:
                value = (np.load(disk), 0)
                self._cache[(key, modality)] = value
                return value
            except (OSError, ValueError):
                pass  # unreadable (e.g. a crash mid-write of an older version): recompute below
        data = self._corpus.read_bytes(i, modality)  # type: ignore[union-attr]
        if data is None:
            raise ValueError(f"example {key!r} has no {modality} in the corpus {self.corpus_dir}")
        if modality == "image":
            image = decode_image(data, f"{key}.png")
            if "image" in self.transform:
                image = self.transform["image"](image)
            value = image_patches(image, self.spec.patch)
        else:
            wave, sr = decode_audio(data, f"{key}.flac")
            if "audio" in self.transform:
                wave, sr = self.transform["audio"](wave, sr)
            value = (self.spec.audio_features(wave, sr), 0)
            if disk is not None:
                self._save(disk, value[0])
        self._cache[(key, modality)] = value
        return value

    def _disk_path(self, key: str, modality: str) -> Path:
        return Path(self.corpus_dir) / "features" / self.spec.key(modality) / f"{key}.npy"

    def _save(self, path, array: np.ndarray) -> None:
        import os

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, array)
            tmp.replace(path)
        except OSError:
            self.disk_cache = False  # a read-only corpus: keep features in memory only


class SourceView:
    """A token split as the model reads it: :meth:`source_lengths` are lengths as sources (feature-read modalities
    measured from the corpus; ``lengths()`` stays the token folder's, i.e. lengths as targets), items carry
    ``"image_rows"`` (their image grid height, 0 if none), and :meth:`source` gives the ``collate`` fields of a
    task's source. Other attributes are the split's."""

    def __init__(self, tokens: Any, features: FeatureSource | None) -> None:
        self.tokens, self.features = tokens, features

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["tokens"], name)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.tokens[i])
        try:
            item["image_rows"] = int(self.tokens.image_grid(i)[0])
        except (AttributeError, KeyError, IndexError):
            item["image_rows"] = 0
        return item

    def lengths(self) -> list[dict[str, int]]:
        return self.tokens.lengths()

    def source_lengths(self) -> list[dict[str, int]]:
        lengths = self.tokens.lengths()
        if self.features is None:
            return lengths
        out = []
        for key, rec in zip(self.tokens.keys, lengths):
            rec = dict(rec)
            for m in ("image", "audio"):
                if self.features.spec.uses(m):
                    n = self.features.length(key, m)
                    if n > 0:
                        rec[m] = n
                    else:
                        rec.pop(m, None)
            out.append(rec)
        return out

    def source(self, item: dict[str, Any], source: str, target: str) -> dict[str, Any]:
        """``collate`` fields (``src`` or ``src_features``, ``src_rows``, ``tgt_rows``) of ``item`` as a source."""
        rows = int(item.get("image_rows", 0))
        if self.features is not None and self.features.spec.uses(source):
            feats, src_rows = self.features.get(item["key"], source)
            out: dict[str, Any] = {"src_features": feats, "src_rows": src_rows}
        else:
            out = {"src": item[source], "src_rows": rows if source == "image" else 0}
        if target == "image":
            out["tgt_rows"] = rows
        return out


def source_view(tokens: Any, model_cfg: Any, corpus: str = "") -> SourceView:
    """:class:`SourceView` of a token split for a model config (its corpus: ``corpus`` or the one the tokens
    were made from)."""
    if isinstance(tokens, SourceView):
        return tokens
    spec = FeatureSpec.from_model(model_cfg)
    features = None
    if spec.any:
        corpus = corpus or str(getattr(tokens, "meta", {}).get("corpus", ""))
        if not corpus or not Path(corpus).is_dir():
            raise ValueError(f"the model reads {'pixels' if spec.image else 'mel frames'} from the corpus of "
                             f"{tokens!r}, but its corpus folder {corpus!r} is missing (set data.corpus)")
        features = FeatureSource(corpus, spec)
    return SourceView(tokens, features)


def _compute_part(args: tuple[str, FeatureSpec, list[str]]) -> tuple[int, list[str]]:
    corpus_dir, spec, keys = args
    import torch

    torch.set_num_threads(1)
    fs = FeatureSource(corpus_dir, spec)
    failed = []
    for key in keys:
        try:
            fs.get(key, "audio")
            fs._cache.clear()
        except Exception as err:  # a corrupt member is counted and named, the rest goes on
            failed.append(f"{key}: {err}")
    return len(keys) - len(failed), failed


def precompute(corpus_dir: str, spec: FeatureSpec, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Fill the disk cache of log-mel features for every example with audio (resumable: cached ones are kept).

    Returns ``{"examples", "computed", "cached", "failed": [...]}``."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    from musicmoe.data.shards import Corpus

    fs = FeatureSource(corpus_dir, spec)
    keys = [r["key"] for r in Corpus(corpus_dir).records if "audio" in r.get("modalities", ["audio"])]
    todo = [k for k in keys if not fs._disk_path(k, "audio").is_file()]
    start, done, failed = time.time(), 0, []
    chunks = [todo[i: i + 64] for i in range(0, len(todo), 64)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for ok, bad in pool.map(_compute_part, [(str(corpus_dir), spec, c) for c in chunks]):
            done += ok
            failed += bad
            if progress:
                rate = (done + len(failed)) / max(time.time() - start, 1e-9)
                print(f"\rlog-mel features: {done + len(failed)}/{len(todo)} ({rate:.1f}/s)", end="", flush=True)
    if progress and todo:
        print()
    return {"examples": len(keys), "computed": done, "cached": len(keys) - len(todo), "failed": failed}


def register_cli(data_subparsers: Any) -> None:
    """Add ``features`` to the ``musicmoe data`` command group."""
    from musicmoe.cli.common import add_config_arguments, existing_path

    p = data_subparsers.add_parser(
        "features", help="precompute the log-mel features that model.audio_input=mel reads (disk cache)",
        description="Compute the log-mel frames of every example's audio once, with the model config's settings "
                    "(model.mel_bins, mel_hop, mel_stack), into CORPUS/features/ (resumable). Training computes "
                    "missing ones itself; this spreads the work over processes beforehand.")
    p.add_argument("corpus", type=existing_path, help="corpus folder (from `musicmoe data build`)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    add_config_arguments(p)
    p.set_defaults(func=_cli_features)


def _cli_features(args: Any) -> int:
    from musicmoe.cli.common import config_from_args

    cfg = config_from_args(args)
    spec = FeatureSpec.from_model(cfg.model)
    report = precompute(str(args.corpus), FeatureSpec(**{**spec.__dict__, "audio": True}), args.workers,
                        not args.no_progress)
    print(f"{args.corpus}: {report['examples']} examples with audio, {report['computed']} computed, "
          f"{report['cached']} already cached, {len(report['failed'])} failed")
    for line in report["failed"][:20]:
        print(f"  {line}")
    return 0 if not report["failed"] else 1
