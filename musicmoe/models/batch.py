"""The padded tensor batch the translator consumes, and ``collate`` that builds it.

``Batch`` fields (``B`` examples, ``S`` source and ``T`` target tokens, ``Q = VocabSpec.max_codebooks``):

* ``src_tokens`` (B, S, Q) long: source ids; ``src_mask`` (B, S) bool, True = real token;
* ``src_modality`` (B,) long: index into ``MODALITIES = ("image", "lmx", "midi", "audio")``;
* ``tgt_tokens`` (B, T, Q) long: target ids starting with a BOS frame and ending with an EOS frame;
  ``tgt_mask`` (B, T) bool (True = real, BOS and EOS included); ``tgt_modality`` (B,) long;
* ``task`` (B,) long: a task id of the caller's choosing (only used to split the loss per task);
* ``src_features`` (B, S, F) float or ``None``: continuous source features (pixel patches, log-mel frames,
  see :mod:`musicmoe.data.features`) of rows whose source is read as features; at those positions
  ``src_tokens`` hold the modality's PAD id (the appended EOS stays a token);
* ``src_rows``/``tgt_rows`` (B,) long or ``None``: image code/patch grid height ``H'`` of image sources /
  targets (0 for other rows), so the model knows each position's row and column;
* ``info``: a :class:`BatchInfo` (host-side copies of the per-row lengths, modalities and task ids, filled by
  ``collate``) or ``None``. With it the model plans its step (rows per target modality, whether anything is
  padded) without reading the device tensors back, i.e. without a host-device sync; ``to``/``pin_memory``
  carry it along. A caller that edits the tensors of a batch must drop it (``dataclasses.replace(batch,
  info=None)``) or keep it in step.

Rows may mix tasks and modalities. Single-stream modalities use column 0 of the token axis and hold their
PAD id in the other columns; padded positions hold the row modality's PAD id in every column. Padding is at
the end of each row.

``collate(examples, vocab)`` turns per-example arrays into a ``Batch``: each example is a
:class:`TranslationExample` or a mapping with keys ``src``, ``src_modality``, ``tgt``, ``tgt_modality`` and
optionally ``task`` (default 0), ``key`` (named in errors), ``src_features`` ((T, F) floats read instead of
``src``, which may then be omitted), ``src_rows``/``tgt_rows`` (image grid heights, default 0). ``src``/``tgt``
are integer arrays (numpy, torch or lists) of content ids ``0..V-1`` (or SEP): shape (T,) for single-stream
modalities, (Q, T) for multi-codebook ones. ``collate`` appends EOS to the source (so no source row is empty)
and wraps the target as BOS + content + EOS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from musicmoe.models.vocab import MODALITIES, ModalitySpec, VocabSpec


@dataclass
class BatchInfo:
    """Per-row facts of a :class:`Batch` kept on the host (real lengths with specials, modality indices,
    task ids), so that planning a step needs no device read-back. (Not frozen: Lightning's
    ``apply_to_collection`` walks into the batch's dataclasses and refuses frozen ones.)"""

    src_lengths: tuple[int, ...]
    tgt_lengths: tuple[int, ...]
    src_modality: tuple[int, ...]
    tgt_modality: tuple[int, ...]
    task: tuple[int, ...]
    src_rows: tuple[int, ...] = ()  # image grid heights (0: not an image / unknown); () when not recorded
    tgt_rows: tuple[int, ...] = ()

    def select(self, rows: Sequence[int]) -> BatchInfo:
        """The info of the batch rows ``rows`` (in that order)."""
        return BatchInfo(*(tuple(getattr(self, f.name)[i] for i in rows) if getattr(self, f.name) else ()
                           for f in fields(self)))


@dataclass
class Batch:
    """Padded batch of translation examples (see the module docstring for shapes)."""

    src_tokens: torch.Tensor
    src_mask: torch.Tensor
    src_modality: torch.Tensor
    tgt_tokens: torch.Tensor
    tgt_mask: torch.Tensor
    tgt_modality: torch.Tensor
    task: torch.Tensor
    info: BatchInfo | None = None
    src_features: torch.Tensor | None = None
    src_rows: torch.Tensor | None = None
    tgt_rows: torch.Tensor | None = None

    def _tensors(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "info" and getattr(self, f.name) is not None]

    def _map(self, fn) -> Batch:
        return Batch(**{name: fn(getattr(self, name)) for name in self._tensors()}, info=self.info)

    def to(self, device: torch.device | str, non_blocking: bool | None = None) -> Batch:
        """The batch on ``device``. ``non_blocking`` None: asynchronous exactly when every tensor is in pinned
        memory (the data loader's ``pin_memory``; Lightning moves a custom batch without asking for it), so the
        copy does not make the host wait for the GPU."""
        if non_blocking is None:
            non_blocking = torch.device(device).type == "cuda" and all(
                getattr(self, name).is_pinned() for name in self._tensors())
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory())

    def select_rows(self, index: torch.Tensor, rows: Sequence[int] | None = None) -> Batch:
        """Rows ``index`` (a long tensor on the batch's device); ``rows``: the same indices on the host, which
        keep the :class:`BatchInfo` (without them it is dropped)."""
        out = self._map(lambda t: t.index_select(0, index))
        out.info = self.info.select(rows) if (self.info is not None and rows is not None) else None
        return out

    def __len__(self) -> int:
        return int(self.src_tokens.shape[0])

    @property
    def num_target_tokens(self) -> int:
        """Predicted target positions (real target tokens/frames minus the BOS of each row)."""
        return int(self.tgt_mask.sum().item()) - len(self)

    def check(self, vocab: VocabSpec) -> None:
        """Raise ``ValueError`` on wrong shapes/dtypes or ids outside each row modality's vocabulary."""
        b = len(self)
        if self.info is not None and any(len(v) not in (0, b) if f.name.endswith("_rows") else len(v) != b
                                         for f in fields(self.info) for v in [getattr(self.info, f.name)]):
            raise ValueError(f"Batch.info: describes {len(self.info.task)} rows, the batch has {b}")
        for name, ndim, dtype in (("src_tokens", 3, torch.long), ("tgt_tokens", 3, torch.long),
                                  ("src_mask", 2, torch.bool), ("tgt_mask", 2, torch.bool),
                                  ("src_modality", 1, torch.long), ("tgt_modality", 1, torch.long),
                                  ("task", 1, torch.long)):
            t = getattr(self, name)
            if t.ndim != ndim or t.dtype != dtype or t.shape[0] != b:
                raise ValueError(f"Batch.{name}: expected {ndim}-d {dtype} with {b} rows, got {tuple(t.shape)} "
                                 f"{t.dtype}")
        if self.src_features is not None and (self.src_features.ndim != 3 or
                                              tuple(self.src_features.shape[:2]) != tuple(self.src_tokens.shape[:2])):
            raise ValueError(f"Batch.src_features: expected (B, S, F) matching src_tokens "
                             f"{tuple(self.src_tokens.shape[:2])}, got {tuple(self.src_features.shape)}")
        for name in ("src_rows", "tgt_rows"):
            t = getattr(self, name)
            if t is not None and (t.shape != (b,) or t.dtype != torch.long):
                raise ValueError(f"Batch.{name}: expected ({b},) long, got {tuple(t.shape)} {t.dtype}")
        for side in ("src", "tgt"):
            tok, mask, mod = (getattr(self, f"{side}_{n}") for n in ("tokens", "mask", "modality"))
            if mask.shape != tok.shape[:2]:
                raise ValueError(f"Batch.{side}_mask: shape {tuple(mask.shape)} != {tuple(tok.shape[:2])}")
            check_tokens(tok, mod, vocab, f"Batch.{side}_tokens")


def check_tokens(tokens: torch.Tensor, modality: torch.Tensor, vocab: VocabSpec, what: str) -> None:
    """Raise ``ValueError`` unless ``tokens`` (B, L, Qmax) hold valid ids of each row's ``modality`` (B,):
    ``0..V+3`` in the modality's codebook columns, PAD in the unused columns of single-stream rows."""
    q = vocab.max_codebooks
    if tokens.ndim != 3 or tokens.shape[2] != q:
        raise ValueError(f"{what}: expected (B, L, {q}) ids, got shape {tuple(tokens.shape)}")
    if modality.shape != tokens.shape[:1] or ((modality < 0) | (modality >= len(MODALITIES))).any():
        raise ValueError(f"{what}: need one modality index in 0..{len(MODALITIES) - 1} per row")
    bounds = torch.tensor([[[0, s.table_size] if c < s.codebooks else [s.pad_id, s.pad_id + 1] for c in range(q)]
                           for s in vocab], device=tokens.device)[modality]  # (B, Q, 2): allowed lo..hi-1
    bad = (tokens < bounds[:, None, :, 0]) | (tokens >= bounds[:, None, :, 1])
    if bad.any():
        row = int(bad.any(dim=2).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{what}: row {row} ({MODALITIES[int(modality[row])]}) has ids outside its vocabulary "
                         f"(or non-PAD ids in unused codebook columns)")


@dataclass
class TranslationExample:
    """One (source, target) pair of content-id arrays; see the module docstring."""

    src: Any
    src_modality: str | int
    tgt: Any
    tgt_modality: str | int
    task: int = 0
    key: str | None = None


def _as_codes(value: Any, spec: ModalitySpec, what: str) -> np.ndarray:
    """Content ids as an int64 array of shape (Q, T), validated against ``spec``."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.size == 0:
        arr = arr.reshape((spec.codebooks, 0) if spec.multi_codebook else (0,))
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected integer ids, got dtype {arr.dtype}")
    if spec.multi_codebook:
        if arr.ndim != 2 or arr.shape[0] != spec.codebooks:
            raise ValueError(f"{what}: {spec.name} needs shape ({spec.codebooks}, T), got {arr.shape}")
    else:
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1:
            raise ValueError(f"{what}: {spec.name} needs shape (T,), got {arr.shape}")
        arr = arr[None, :]
    arr = arr.astype(np.int64, copy=False)
    bad = ((arr < 0) | (arr >= spec.vocab_size)) & (arr != spec.sep_id)
    if bad.any():
        raise ValueError(f"{what}: {spec.name} ids must be content ids 0..{spec.vocab_size - 1} (or SEP "
                         f"{spec.sep_id}); found {int(arr[bad][0])}")
    return arr


def _field(example: Any, name: str, default: Any = ...) -> Any:
    if isinstance(example, Mapping):
        if name in example:
            return example[name]
    elif hasattr(example, name):
        return getattr(example, name)
    if default is ...:
        raise ValueError(f"collate: example is missing {name!r}")
    return default


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate(
    examples: Sequence[TranslationExample | Mapping[str, Any]],
    vocab: VocabSpec,
    *,
    max_src_len: int | None = None,
    max_tgt_len: int | None = None,
    pad_to_multiple: int = 1,
) -> Batch:
    """Pad examples into a :class:`Batch`, adding EOS to sources and BOS/EOS to targets.

    ``max_src_len``/``max_tgt_len`` (specials included) truncate long rows: a truncated source keeps its EOS,
    a truncated target loses its EOS (its end was cut, so the model must not learn to stop there).
    ``pad_to_multiple`` rounds both padded lengths up (fewer distinct shapes for kernels and compilation).
    """
    if not examples:
        raise ValueError("collate: no examples")
    if pad_to_multiple < 1:
        raise ValueError(f"collate: pad_to_multiple must be >= 1, got {pad_to_multiple}")
    if max_src_len is not None and max_src_len < 1:
        raise ValueError(f"collate: max_src_len must be >= 1, got {max_src_len}")
    if max_tgt_len is not None and max_tgt_len < 2:
        raise ValueError(f"collate: max_tgt_len must be >= 2 (BOS + one token), got {max_tgt_len}")
    q_max = vocab.max_codebooks
    rows: list[tuple[np.ndarray, ModalitySpec, np.ndarray, ModalitySpec, int]] = []
    extras: list[tuple[np.ndarray | None, int, int]] = []
    for i, ex in enumerate(examples):
        key = _field(ex, "key", None)
        where = f"collate example {i}" + (f" ({key})" if key is not None else "")
        try:
            s_spec = vocab[_field(ex, "src_modality")]
            t_spec = vocab[_field(ex, "tgt_modality")]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        feats = _field(ex, "src_features", None)
        if feats is not None:
            feats = np.asarray(feats)
            if feats.ndim != 2:
                raise ValueError(f"{where} src_features: need shape (T, F), got {feats.shape}")
            src = np.full((s_spec.codebooks, feats.shape[0]), s_spec.pad_id, dtype=np.int64)
        else:
            src = _as_codes(_field(ex, "src"), s_spec, f"{where} src")
        tgt = _as_codes(_field(ex, "tgt"), t_spec, f"{where} tgt")
        s_col = lambda v, q: np.full((q, 1), v, dtype=np.int64)  # noqa: E731
        if max_src_len is not None:
            src = src[:, : max_src_len - 1]
        if feats is not None:
            feats = feats[: src.shape[1]]
        src = np.concatenate([src, s_col(s_spec.eos_id, s_spec.codebooks)], axis=1)
        body = tgt
        eos = True
        if max_tgt_len is not None and tgt.shape[1] + 2 > max_tgt_len:
            body, eos = tgt[:, : max_tgt_len - 1], False
        parts = [s_col(t_spec.bos_id, t_spec.codebooks), body] + ([s_col(t_spec.eos_id, t_spec.codebooks)]
                                                                   if eos else [])
        rows.append((src, s_spec, np.concatenate(parts, axis=1), t_spec, int(_field(ex, "task", 0))))
        extras.append((feats, int(_field(ex, "src_rows", 0) or 0), int(_field(ex, "tgt_rows", 0) or 0)))

    b = len(rows)
    s_len = _round_up(max(r[0].shape[1] for r in rows), pad_to_multiple)
    t_len = _round_up(max(r[2].shape[1] for r in rows), pad_to_multiple)
    src_tokens = np.empty((b, s_len, q_max), dtype=np.int64)
    tgt_tokens = np.empty((b, t_len, q_max), dtype=np.int64)
    src_mask = np.zeros((b, s_len), dtype=bool)
    tgt_mask = np.zeros((b, t_len), dtype=bool)
    for i, (src, s_spec, tgt, t_spec, _) in enumerate(rows):
        src_tokens[i] = s_spec.pad_id
        src_tokens[i, : src.shape[1], : s_spec.codebooks] = src.T
        src_mask[i, : src.shape[1]] = True
        tgt_tokens[i] = t_spec.pad_id
        tgt_tokens[i, : tgt.shape[1], : t_spec.codebooks] = tgt.T
        tgt_mask[i, : tgt.shape[1]] = True
    features = None
    widths = {e[0].shape[1] for e in extras if e[0] is not None}
    if widths:
        features = np.zeros((b, s_len, max(widths)), dtype=np.float32)
        for i, (f, _, _) in enumerate(extras):
            if f is not None:
                # uint8 pixel ink -> [0, 1]; float features (log-mel) as they are
                features[i, : f.shape[0], : f.shape[1]] = f / 255.0 if f.dtype == np.uint8 else f
    src_rows = tuple(e[1] for e in extras)
    tgt_rows = tuple(e[2] for e in extras)
    return Batch(
        src_tokens=torch.from_numpy(src_tokens),
        src_mask=torch.from_numpy(src_mask),
        src_modality=torch.tensor([r[1].index for r in rows], dtype=torch.long),
        tgt_tokens=torch.from_numpy(tgt_tokens),
        tgt_mask=torch.from_numpy(tgt_mask),
        tgt_modality=torch.tensor([r[3].index for r in rows], dtype=torch.long),
        task=torch.tensor([r[4] for r in rows], dtype=torch.long),
        info=BatchInfo(src_lengths=tuple(r[0].shape[1] for r in rows),
                       tgt_lengths=tuple(r[2].shape[1] for r in rows),
                       src_modality=tuple(r[1].index for r in rows), tgt_modality=tuple(r[3].index for r in rows),
                       task=tuple(r[4] for r in rows), src_rows=src_rows, tgt_rows=tgt_rows),
        src_features=None if features is None else torch.from_numpy(features),
        src_rows=torch.tensor(src_rows, dtype=torch.long),
        tgt_rows=torch.tensor(tgt_rows, dtype=torch.long),
    )

