"""The codecs a model was trained with: recorded in its checkpoint, reloaded (and verified) for eval/translate.

``codec_info(cfg, meta, tokens)`` builds the record stored in the checkpoint's hyper-parameters::

    {"tokens": <token folder>, "corpus": <corpus folder>,
     "image": {"path", "content_hash", "patch", "height_patches"}, "audio": {"path", "content_hash", ...},
     "lmx": {"vocabulary_sha256"}, "midi": {"config": {...}}}

The image/audio ``path`` comes from ``image_codec.checkpoint`` / ``audio_codec.checkpoint`` (or the token
folder's metadata, when it records one); its content hash is checked against the hash the tokens were made
with.  ``height_patches`` is the most common code-grid height of the training images: the height used to
lay out generated images when no reference tells it.  :class:`CodecSet` loads the codecs lazily from that
record, turns input files into token arrays (``encode_file``) and token arrays into media (``decode``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
MIDI_SUFFIXES = (".mid", ".midi")
LMX_SUFFIXES = (".lmx", ".txt")
MUSICXML_SUFFIXES = (".musicxml", ".xml", ".mxl")
OUTPUT_SUFFIX = {"image": ".png", "audio": ".wav", "midi": ".mid", "lmx": ".musicxml"}


class CodecError(ValueError):
    """A codec is missing, does not match the model's tokens, or an input file cannot be encoded."""


def vocabulary_hash(vocab: Any) -> str:
    """sha256 of an LMX vocabulary's tokens (as ``musicmoe data tokenize`` records it)."""
    return hashlib.sha256("\n".join(vocab.tokens).encode()).hexdigest()


def codec_info(cfg: Any, meta: Mapping[str, Any], tokens: Any = None) -> dict[str, Any]:
    """The codec record of a training run (see the module docstring); verifies configured codec files."""
    codecs = dict(meta.get("codecs") or {})
    info: dict[str, Any] = {"tokens": str(Path(cfg.data.tokens).resolve()), "corpus": meta.get("corpus", "")}
    for name, configured in (("image", cfg.image_codec.checkpoint), ("audio", cfg.audio_codec.checkpoint)):
        recorded = dict(codecs.get(name) or {})
        if not recorded:
            continue
        path = configured or recorded.get("path", "")
        entry = {**recorded, "path": str(Path(path).resolve()) if path else ""}
        if path:
            actual = load_codec(name, path).content_hash
            if recorded.get("content_hash") and actual != recorded["content_hash"]:
                raise CodecError(
                    f"{name}_codec.checkpoint {path} has content hash {actual}, but the tokens in {cfg.data.tokens} "
                    f"were made with {recorded['content_hash']}: point {name}_codec.checkpoint at the codec used "
                    f"by `musicmoe data tokenize`")
        info[name] = entry
    if "image" in info and tokens is not None and "image_grid" in getattr(tokens, "index", {}):
        grid = tokens.index["image_grid"]
        present = tokens.index.get("present_image", np.ones(len(grid), dtype=bool))
        heights = Counter(int(h) for h, ok in zip(grid[:, 0], present) if ok and h > 0)
        if heights:
            info["image"]["height_patches"] = heights.most_common(1)[0][0]
    info["lmx"] = dict(codecs.get("lmx") or {})
    info["midi"] = dict(codecs.get("midi") or {})
    return info


def load_codec(name: str, path: str | Path):
    """An image or audio codec from its file (a clear error naming the file if it cannot be read)."""
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"{name} codec file not found: {path}")
    if name == "image":
        from musicmoe.codecs.image import ImageCodec

        return ImageCodec.load(path).eval()
    from musicmoe.codecs.audio.codec import AudioCodec

    return AudioCodec.load(path)


class CodecSet:
    """Lazily loaded codecs of one model (see the module docstring)."""

    def __init__(self, info: Mapping[str, Any] | None) -> None:
        self.info = dict(info or {})
        self._cache: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------- access
    def available(self, modality: str) -> bool:
        """Whether ``modality`` can be encoded/decoded (image/audio need their codec file)."""
        if modality in ("lmx", "midi"):
            return True
        entry = self.info.get(modality) or {}
        return bool(entry.get("path")) and Path(entry["path"]).is_file()

    def _neural(self, name: str):
        if name not in self._cache:
            entry = self.info.get(name) or {}
            if not entry.get("path"):
                raise CodecError(f"the model's record names no {name} codec file: it was trained without "
                                 f"{name}_codec.checkpoint")
            codec = load_codec(name, entry["path"])
            expected = entry.get("content_hash")
            if expected and codec.content_hash != expected:
                raise CodecError(f"{name} codec {entry['path']} has changed since training (content hash "
                                 f"{codec.content_hash}, expected {expected})")
            self._cache[name] = codec
        return self._cache[name]

    @property
    def image(self):
        return self._neural("image")

    @property
    def audio(self):
        return self._neural("audio")

    @property
    def lmx(self):
        if "lmx" not in self._cache:
            from musicmoe.codecs.lmx import VOCABULARY_FILE, Vocabulary

            vocab = Vocabulary.from_file()
            expected = (self.info.get("lmx") or {}).get("vocabulary_sha256")
            if expected and vocabulary_hash(vocab) != expected:
                raise CodecError(f"the LMX vocabulary {VOCABULARY_FILE} differs from the one the model was trained "
                                 f"with (sha256 {expected})")
            self._cache["lmx"] = vocab
        return self._cache["lmx"]

    @property
    def midi(self):
        if "midi" not in self._cache:
            from musicmoe.codecs.midi import MidiCodec, MidiCodecConfig

            config = (self.info.get("midi") or {}).get("config") or {}
            self._cache["midi"] = MidiCodec(MidiCodecConfig(**config))
        return self._cache["midi"]

    @property
    def height_patches(self) -> int | None:
        return (self.info.get("image") or {}).get("height_patches")

    # ---------------------------------------------------------------------------------------- encode
    def encode_image(self, image: np.ndarray) -> np.ndarray:
        from musicmoe.codecs.image import flatten_codes

        return flatten_codes(self.image.encode(image))

    def encode_file(self, modality: str, path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Token array of an input file and facts about it (image size, audio length, MIDI duration).

        Raises :class:`CodecError` naming the file when it is empty, unreadable or of the wrong kind.
        """
        path = Path(path)
        if not path.is_file():
            raise CodecError(f"input file not found: {path}")
        if path.stat().st_size == 0:
            raise CodecError(f"input file is empty: {path}")
        try:
            if modality == "image":
                from PIL import Image, UnidentifiedImageError

                try:
                    with Image.open(path) as img:
                        image = np.asarray(img.convert("L"), dtype=np.uint8)
                except (UnidentifiedImageError, OSError) as err:
                    raise CodecError(f"cannot read image {path}: {err}") from None
                return self.encode_image(image), {"size": image.shape}
            if modality == "audio":
                import soundfile as sf

                try:
                    wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
                except (RuntimeError, sf.LibsndfileError, ValueError) as err:
                    raise CodecError(f"cannot read audio {path}: {err}") from None
                wave = wave.mean(axis=1)
                if wave.size == 0:
                    raise CodecError(f"audio file holds no samples: {path}")
                samples = int(round(len(wave) * self.audio.sample_rate / sr))
                return self.audio.encode(wave, sr), {"num_samples": samples}
            if modality == "midi":
                import pretty_midi

                try:
                    pm = pretty_midi.PrettyMIDI(str(path))
                except Exception as err:  # mido raises many types on corrupt files
                    raise CodecError(f"cannot read MIDI {path}: {err}") from None
                return np.asarray(self.midi.encode(pm), dtype=np.int64), {"duration": pm.get_end_time()}
            if modality == "lmx":
                if path.suffix.lower() in MUSICXML_SUFFIXES:
                    from musicmoe.codecs.lmx import LmxError, linearize_file

                    try:
                        systems = linearize_file(path)
                    except (LmxError, Exception) as err:
                        raise CodecError(f"cannot read MusicXML {path}: {err}") from None
                    tokens = [t for s in systems for t in s]
                else:
                    from musicmoe.codecs.lmx import LmxError, read_lmx

                    try:
                        tokens = read_lmx(path)
                    except LmxError as err:
                        raise CodecError(str(err)) from None
                if not tokens:
                    raise CodecError(f"no LMX tokens in {path}")
                return np.asarray(self.lmx.encode(tokens), dtype=np.int64), {"tokens": len(tokens)}
        except CodecError:
            raise
        except ValueError as err:  # codec-level validation (e.g. an empty image)
            raise CodecError(f"cannot encode {path} as {modality}: {err}") from None
        raise CodecError(f"unknown modality {modality!r}")

    # ---------------------------------------------------------------------------------------- decode
    def decode(self, modality: str, tokens: Any, path: str | Path | None = None, **ctx: Any):
        """Generated tokens -> a :class:`musicmoe.data.media.Decoded` (never raises on malformed content).

        ``ctx``: ``height_patches``/``size`` (image), ``num_samples`` (audio), ``duration`` (midi).
        """
        from musicmoe.data import media

        if modality == "lmx":
            return media.musicxml_from_lmx_ids(tokens, path, vocab=self.lmx)
        if modality == "midi":
            return media.midi_from_ids(tokens, path, codec=self.midi, duration=ctx.get("duration"))
        if modality == "audio":
            return media.audio_from_codes(tokens, self.audio, path, num_samples=ctx.get("num_samples"))
        if modality == "image":
            height = ctx.get("height_patches") or self.height_patches
            if not height:
                raise CodecError("the image layout height is unknown: the model's record has no height_patches")
            return media.image_from_codes(tokens, self.image, path, height_patches=height, size=ctx.get("size"))
        raise CodecError(f"unknown modality {modality!r}")

    def lmx_tokens(self, ids: Any) -> list[str]:
        """LMX token strings of generated ids (non-content ids dropped, cut at EOS)."""
        from musicmoe.data.media import clean_ids

        arr, _ = clean_ids(ids, len(self.lmx))
        return self.lmx.decode(arr.tolist())
