"""Token shards on disk and ``TokenDataset``, the training data's random-access reader.

Layout of a token folder (written by ``musicmoe data tokenize``, see :mod:`musicmoe.data.tokenize`)::

    TOKDIR/meta.json                 written last: codec hashes, vocab sizes, corpus manifest hash, limits,
                                     example counts per split, which streams exist (and why one is missing)
    TOKDIR/report.json               what was left out: over-long streams, corrupt members, unknown LMX tokens
    TOKDIR/<split>/<modality>.npy    all examples' tokens of one stream back to back: (N, Q) for the
                                     multi-codebook image/audio codes, (N,) for LMX/MIDI ids (int16/int32)
    TOKDIR/<split>/index.npz         offsets_<m> (n + 1,) int64 into <m>.npy; present_<m> (n,) bool;
                                     image_grid (n, 2) = (H', W') patches; image_size (n, 2) = (H, W) pixels;
                                     audio_samples (n,) samples of the source audio
    TOKDIR/<split>/examples.json     [{"key", "piece", "system"}] in corpus manifest order

Example ``i`` of a split is the ``i``-th example of that split in the corpus manifest.  A stream may be
absent from an example (no such member, corrupt, or over the length limit); ``TokenDataset`` items then
lack that key.  Image codes are flattened column by column (see ``musicmoe.codecs.image.layout``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "musicmoe-tokens"
VERSION = 1
MODALITIES = ("image", "lmx", "midi", "audio")
MULTI_CODEBOOK = ("image", "audio")
META_FILE = "meta.json"
REPORT_FILE = "report.json"
INDEX_FILE = "index.npz"
EXAMPLES_FILE = "examples.json"


class TokenDataError(RuntimeError):
    """A token folder is missing, incomplete or lacks a requested stream; the message names the path."""


def stream_dtype(vocab_size: int) -> np.dtype:
    """Smallest signed integer type holding ids ``0..vocab_size`` (the model adds specials later)."""
    return np.dtype(np.int16) if vocab_size < np.iinfo(np.int16).max else np.dtype(np.int32)


def read_meta(tokdir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a complete token folder (raises :class:`TokenDataError` otherwise)."""
    path = Path(tokdir) / META_FILE
    if not path.is_file():
        hint = " (tokenization is incomplete: rerun `musicmoe data tokenize` to finish it)" \
            if (Path(tokdir) / ".work").is_dir() else " (run `musicmoe data tokenize`)"
        raise TokenDataError(f"{tokdir} is not a token folder: {path} is missing{hint}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TokenDataError(f"cannot read {path}: {err}") from None
    if meta.get("format") != FORMAT:
        raise TokenDataError(f"{path} is not a musicmoe token folder's meta file")
    if meta.get("version") != VERSION:
        raise TokenDataError(f"{path}: token format version {meta.get('version')}, this code reads {VERSION}")
    return meta


class TokenDataset:
    """Random access to one split of a token folder: ``len``, ``[i]`` -> dict of int64 arrays.

    An item holds ``"key"`` and each requested stream the example has: ``"image"`` / ``"audio"`` as
    ``(Q, T)``, ``"lmx"`` / ``"midi"`` as ``(T,)``.  ``modalities=None`` means every stream the folder has;
    asking for a stream the folder lacks (no codec at tokenization) raises :class:`TokenDataError`.
    Reads are memory-mapped slices; the object is picklable (each DataLoader worker maps its own files).
    """

    def __init__(self, tokdir: str | Path, split: str, modalities: Sequence[str] | None = None) -> None:
        self.dir = Path(tokdir)
        self.split = split
        self.meta = read_meta(self.dir)
        if split not in self.meta["splits"]:
            raise TokenDataError(f"{self.dir} has no split {split!r} (has: {', '.join(self.meta['splits'])})")
        streams = self.meta["streams"]
        available = tuple(m for m in MODALITIES if streams.get(m, {}).get("available"))
        if modalities is None:
            self.modalities = available
        else:
            for m in modalities:
                if m not in MODALITIES:
                    raise TokenDataError(f"unknown modality {m!r}; expected one of {MODALITIES}")
                if m not in available:
                    why = streams.get(m, {}).get("reason", "not tokenized")
                    raise TokenDataError(f"{self.dir} has no {m} tokens ({why})")
            self.modalities = tuple(m for m in MODALITIES if m in modalities)
        split_dir = self.dir / split
        try:
            with np.load(split_dir / INDEX_FILE) as idx:
                self.index = {k: idx[k] for k in idx.files}
            self.examples: list[dict[str, Any]] = json.loads((split_dir / EXAMPLES_FILE).read_text())
        except (OSError, ValueError) as err:
            raise TokenDataError(f"cannot read the index of {split_dir}: {err}") from None
        self.keys = [e["key"] for e in self.examples]
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def _array(self, modality: str) -> np.ndarray:
        arr = self._arrays.get(modality)
        if arr is None:
            path = self.dir / self.split / f"{modality}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except ValueError:  # an empty array cannot be memory-mapped
                arr = np.load(path)
            except OSError as err:
                raise TokenDataError(f"cannot read {path}: {err}") from None
            self._arrays[modality] = arr
        return arr

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.keys)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples ({self.dir}/{self.split})")
        i = int(i) % n
        item: dict[str, Any] = {"key": self.keys[i]}
        for m in self.modalities:
            if not self.index[f"present_{m}"][i]:
                continue
            off = self.index[f"offsets_{m}"]
            part = self._array(m)[off[i]:off[i + 1]]
            item[m] = np.ascontiguousarray(part.T if m in MULTI_CODEBOOK else part, dtype=np.int64)
        return item

    def has(self, modality: str) -> np.ndarray:
        """Boolean mask: which examples have the stream."""
        return self.index[f"present_{modality}"].copy()

    def stream_lengths(self, modality: str) -> np.ndarray:
        """Tokens (positions/frames) per example of one stream; 0 where absent."""
        return np.diff(self.index[f"offsets_{modality}"])

    def lengths(self) -> list[dict[str, int]]:
        """Per example: modality -> token count, for the streams it has (read from the index, no token I/O)."""
        cols = {m: (self.index[f"present_{m}"], self.stream_lengths(m)) for m in self.modalities}
        return [{m: int(n[i]) for m, (p, n) in cols.items() if p[i]} for i in range(len(self))]

    def image_grid(self, i: int) -> tuple[int, int]:
        """``(H', W')`` code grid of example ``i``'s image (to un-flatten its codes)."""
        h, w = self.index["image_grid"][i]
        return int(h), int(w)

    def image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` pixels of example ``i``'s source image."""
        h, w = self.index["image_size"][i]
        return int(h), int(w)

    @property
    def vocab(self) -> dict[str, dict[str, Any]]:
        """Per-modality ``{"vocab_size", "codebooks"}`` (``VocabSpec.from_dict`` reads it)."""
        return {m: dict(v) for m, v in self.meta["vocab"].items()}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.dir)!r}, {self.split!r}, {len(self)} examples, {self.modalities})"


def vocab_spec(meta: dict[str, Any]):
    """The model's :class:`~musicmoe.models.vocab.VocabSpec` described by a token folder's ``meta.json``."""
    from musicmoe.models.vocab import VocabSpec

    return VocabSpec.from_dict(meta["vocab"])


def pad_collate(items: Sequence[dict[str, Any]], pad: int = -1) -> dict[str, Any]:
    """Stack items into padded tensors per stream: ``<m>`` (B, Q, Tmax) or (B, Tmax) long, ``<m>_mask`` bool.

    A plain collate for benchmarks and quick experiments; the training data module builds the model batch.
    Examples lacking a stream contribute an all-padding row with an all-False mask.
    """
    import torch

    out: dict[str, Any] = {"key": [it["key"] for it in items]}
    for m in MODALITIES:
        arrays = [it.get(m) for it in items]
        if all(a is None for a in arrays):
            continue
        t = max((a.shape[-1] for a in arrays if a is not None), default=0)
        lead = next(a.shape[:-1] for a in arrays if a is not None)
        batch = np.full((len(items), *lead, t), pad, dtype=np.int64)
        mask = np.zeros((len(items), t), dtype=bool)
        for j, a in enumerate(arrays):
            if a is not None:
                batch[j, ..., : a.shape[-1]] = a
                mask[j, : a.shape[-1]] = True
        out[m], out[f"{m}_mask"] = torch.from_numpy(batch), torch.from_numpy(mask)
    return out
