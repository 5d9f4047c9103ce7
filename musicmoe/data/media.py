"""Token streams back to media: image codes -> PNG, audio codes -> WAV, MIDI ids -> .mid, LMX ids -> MusicXML.

One function per modality, used by evaluation and ``musicmoe translate``.  Each accepts model output as it
comes (numpy, torch or lists) and never raises on malformed content: ids outside the content range
``0..V-1`` (the model's PAD/BOS/SEP, negative padding) are dropped, the sequence ends at the first EOS
(``V + 2``, the model vocabulary's convention) if ``eos_id`` is not given otherwise, and every repair is
listed in ``Decoded.problems``.  Only a wrong argument (e.g. codes with more codebooks than the codec has)
raises ``ValueError``.  With ``path`` the file is written atomically (temp name, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EOS_OFFSET = 2  # model vocabulary: PAD = V, BOS = V + 1, EOS = V + 2, SEP = V + 3
_MIDI_INFO = ("notes", "tied_in", "tie_closed", "unclosed")  # DecodeReport fields that are not repairs


@dataclass
class Decoded:
    """A decoded medium (``value``: uint8 image, float32 wave, PrettyMIDI or MusicXML text), where it was
    written (``path``, None if not written) and what had to be repaired."""

    value: Any
    path: Path | None = None
    problems: list[str] = field(default_factory=list)


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"token ids must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def clean_ids(ids: Any, vocab_size: int, eos_id: int | None = None) -> tuple[np.ndarray, list[str]]:
    """1-D ids: cut at the first ``eos_id`` (default ``vocab_size + 2``), drop ids outside ``0..V-1``."""
    arr = _as_array(ids)
    if arr.ndim > 1 and sum(d > 1 for d in arr.shape) > 1:
        raise ValueError(f"ids must be 1-D (one codebook), got shape {arr.shape}")
    arr = arr.reshape(-1)
    problems: list[str] = []
    eos = vocab_size + EOS_OFFSET if eos_id is None else eos_id
    hits = np.flatnonzero(arr == eos)
    if hits.size:
        if hits[0] + 1 < arr.size:
            problems.append(f"{arr.size - hits[0] - 1} id(s) after EOS ignored")
        arr = arr[: hits[0]]
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        problems.append(f"{int(bad.sum())} id(s) outside 0..{vocab_size - 1} dropped")
        arr = arr[~bad]
    return arr, problems


def clean_codes(codes: Any, codebooks: int, codebook_size: int,
                eos_id: int | None = None) -> tuple[np.ndarray, list[str]]:
    """``(Q', T)`` codes: cut at the first time step holding EOS, drop steps with no valid code at all,
    replace remaining invalid entries by the most frequent valid code of their codebook (0 if none)."""
    arr = _as_array(codes)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= codebooks:
        raise ValueError(f"codes must have shape (1..{codebooks}, T), got {arr.shape}")
    problems: list[str] = []
    eos = codebook_size + EOS_OFFSET if eos_id is None else eos_id
    hits = np.flatnonzero((arr == eos).any(axis=0))
    if hits.size:
        if hits[0] + 1 < arr.shape[1]:
            problems.append(f"{arr.shape[1] - hits[0] - 1} step(s) after EOS ignored")
        arr = arr[:, : hits[0]]
    valid = (arr >= 0) & (arr < codebook_size)
    empty = ~valid.any(axis=0)
    if empty.any():
        problems.append(f"{int(empty.sum())} step(s) without any valid code dropped")
        arr, valid = arr[:, ~empty], valid[:, ~empty]
    if not valid.all():
        problems.append(f"{int((~valid).sum())} invalid code(s) replaced by their codebook's most frequent code")
        arr = arr.copy()
        for q in range(arr.shape[0]):
            ok = arr[q][valid[q]]
            fill = int(np.bincount(ok).argmax()) if ok.size else 0
            arr[q][~valid[q]] = fill
    return arr, problems


def image_from_codes(codes: Any, codec: Any, path: str | os.PathLike | None = None, *,
                     height_patches: int | None = None, size: tuple[int, int] | None = None,
                     eos_id: int | None = None) -> Decoded:
    """Image codes -> uint8 grayscale image (and PNG at ``path``).

    ``codes``: a grid ``(Q, H', W')`` or column-by-column flattened ``(Q, T)`` (then ``height_patches`` = H'
    is required; an incomplete last column is filled with the most frequent code of each codebook).
    ``size``: the original ``(H, W)`` to crop to (ignored if it does not fit).  ``codec``: an ``ImageCodec``.
    """
    from musicmoe.codecs.image.layout import unflatten_codes
    from musicmoe.data.shards import encode_image

    q, k = codec.cfg.codebooks, codec.cfg.codebook_size
    arr = _as_array(codes)
    problems: list[str] = []
    if arr.ndim == 3:
        grid = arr
        bad = (grid < 0) | (grid >= k)
        if bad.any():
            problems.append(f"{int(bad.sum())} invalid code(s) replaced by 0")
            grid = np.where(bad, 0, grid)
    else:
        if not height_patches or height_patches <= 0:
            raise ValueError("flattened image codes need height_patches (the code grid's height H')")
        flat, problems = clean_codes(arr, q, k, eos_id)
        if flat.shape[0] != q:
            raise ValueError(f"image codes need all {q} codebooks, got {flat.shape[0]}")
        t = flat.shape[1]
        if t == 0:
            problems.append("no image codes: wrote a blank image")
            flat = np.zeros((q, height_patches), dtype=np.int64)
            blank = True
        else:
            blank = False
        rest = -flat.shape[1] % height_patches
        if rest:
            problems.append(f"last column incomplete: {rest} position(s) filled")
            fill = np.array([np.bincount(row).argmax() for row in flat])[:, None]
            flat = np.concatenate([flat, np.repeat(fill, rest, axis=1)], axis=1)
        grid = unflatten_codes(flat, height_patches)
        if blank:
            image = np.full((height_patches * codec.cfg.patch, codec.cfg.patch), 255, dtype=np.uint8)
            return Decoded(image, _atomic_write(path, encode_image(image)) if path else None, problems)
    if grid.shape[0] != q:
        raise ValueError(f"image codes need all {q} codebooks, got {grid.shape[0]}")
    image = codec.decode(grid)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        if 0 < h <= image.shape[0] and 0 < w <= image.shape[1]:
            image = image[:h, :w]
        else:
            problems.append(f"size {tuple(size)} does not fit the decoded image {image.shape}: not cropped")
    written = _atomic_write(path, encode_image(image)) if path else None
    return Decoded(image, written, problems)


def audio_from_codes(codes: Any, codec: Any, path: str | os.PathLike | None = None, *,
                     num_samples: int | None = None, eos_id: int | None = None) -> Decoded:
    """Audio codes ``(Q', T)`` -> float32 mono wave at ``codec.sample_rate`` (and 16-bit WAV at ``path``).

    ``num_samples`` trims (or zero-pads) the wave to that length.  ``codec``: an ``AudioCodec``.
    """
    import soundfile as sf

    arr, problems = clean_codes(codes, codec.num_codebooks, codec.codebook_size, eos_id)
    wave = codec.decode(arr) if arr.shape[1] else np.zeros(0, dtype=np.float32)
    if not arr.shape[1]:
        problems.append("no audio codes: wrote silence")
    if num_samples is not None:
        wave = np.pad(wave, (0, max(0, num_samples - len(wave))))[:num_samples]
    if not np.isfinite(wave).all():
        problems.append("non-finite samples replaced by 0")
        wave = np.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 1.0:
        problems.append(f"peak {peak:.2f} > 1: clipped")
    written = None
    if path is not None:
        import io

        buf = io.BytesIO()
        sf.write(buf, np.clip(wave, -1.0, 1.0), codec.sample_rate, format="WAV", subtype="PCM_16")
        written = _atomic_write(path, buf.getvalue())
    return Decoded(wave.astype(np.float32), written, problems)


def midi_from_ids(ids: Any, path: str | os.PathLike | None = None, *, codec: Any = None,
                  duration: float | None = None, eos_id: int | None = None) -> Decoded:
    """MIDI event ids -> ``pretty_midi.PrettyMIDI`` (and a .mid file at ``path``).

    ``codec``: a ``MidiCodec`` (default: ``MidiCodec()`` with the default config); ``duration`` in seconds
    closes notes still sounding there.  Malformed event sequences are repaired by the codec's decoder.
    """
    from musicmoe.codecs.midi import MidiCodec
    from musicmoe.data.shards import encode_midi

    codec = codec or MidiCodec()
    arr, problems = clean_ids(ids, codec.vocab_size, eos_id)
    pm, report = codec.decode_with_report(arr.tolist(), duration=duration)
    problems += [f"MIDI decoder: {k} = {v}" for k, v in report.as_dict().items()
                 if v and k not in _MIDI_INFO]
    written = _atomic_write(path, encode_midi(pm)) if path else None
    return Decoded(pm, written, problems)



def musicxml_from_lmx_ids(ids: Any, path: str | os.PathLike | None = None, *, vocab: Any = None,
                          eos_id: int | None = None) -> Decoded:
    """LMX ids -> MusicXML text (and a .musicxml file at ``path``), via ``Vocabulary.decode`` + ``delinearize``.

    ``vocab``: an LMX ``Vocabulary`` (default: the shipped one).  The result is always well-formed
    score-partwise MusicXML; skipped tokens and repairs are in ``problems``.
    """
    from musicmoe.codecs.lmx import Vocabulary, delinearize_with_report

    vocab = vocab or Vocabulary.from_file()
    arr, problems = clean_ids(ids, len(vocab), eos_id)
    tokens = vocab.decode(arr.tolist())
    result = delinearize_with_report(tokens)
    problems += [f"LMX: {e}" for e in result.errors]
    written = _atomic_write(path, result.xml.encode("utf-8")) if path else None
    return Decoded(result.xml, written, problems)


__all__ = ["Decoded", "audio_from_codes", "clean_codes", "clean_ids", "image_from_codes", "midi_from_ids",
           "musicxml_from_lmx_ids"]
