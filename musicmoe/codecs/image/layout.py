"""Image padding and the layout of image codes as token sequences.

Padding: an image of any size is padded at the bottom and right with white (255) up to multiples of the
patch size; the original ``(height, width)`` is kept by the caller and passed to ``ImageCodec.decode(size=...)``
to crop the reconstruction back.

Reading order: a code grid ``(Q, H', W')`` is flattened column by column (vertical reading order): for each
patch column from left to right, its rows from top to bottom, so position ``t = w * H' + h``.  Un-flattening
needs the grid height ``H'`` (``ceil(image_height / patch)``).

Systems: several flattened systems are joined into one sequence with one separator position between
consecutive systems; the separator holds the reserved value ``sep`` in every codebook row.  The codec uses
``sep = codebook_size`` (one past the largest real code), see ``ImageCodecConfig.sep_id``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

WHITE = 255


def pad_to_patch(image: np.ndarray, patch: int) -> np.ndarray:
    """Pad a 2-D uint8 image with white at the bottom/right to multiples of ``patch`` (a copy if padded)."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a 2-D uint8 array (H x W, white = 255), got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    h, w = image.shape
    ph, pw = -h % patch, -w % patch
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw)), constant_values=WHITE)


def _codes_array(codes: np.ndarray, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a {ndim}-D integer array, got {arr.dtype} {arr.shape}")
    return arr


def flatten_codes(codes: np.ndarray) -> np.ndarray:
    """``(Q, H', W')`` code grid -> ``(Q, H' * W')`` in vertical reading order (column by column)."""
    grid = _codes_array(codes, 3, "codes")
    q = grid.shape[0]
    return np.ascontiguousarray(grid.transpose(0, 2, 1)).reshape(q, -1)


def unflatten_codes(flat: np.ndarray, height_patches: int) -> np.ndarray:
    """Inverse of :func:`flatten_codes`: ``(Q, T)`` -> ``(Q, height_patches, T // height_patches)``."""
    seq = _codes_array(flat, 2, "flat codes")
    if height_patches <= 0 or seq.shape[1] % height_patches:
        raise ValueError(f"{seq.shape[1]} code positions do not fill columns of height {height_patches}")
    q = seq.shape[0]
    return np.ascontiguousarray(seq.reshape(q, -1, height_patches).transpose(0, 2, 1))


def join_systems(systems: Sequence[np.ndarray], sep: int) -> np.ndarray:
    """Concatenate flattened systems ``(Q, T_i)`` with one separator column (all ``sep``) between neighbours."""
    if not systems:
        raise ValueError("join_systems needs at least one system")
    parts = [_codes_array(s, 2, f"system {i}") for i, s in enumerate(systems)]
    q = parts[0].shape[0]
    for i, part in enumerate(parts):
        if part.shape[0] != q:
            raise ValueError(f"system {i} has {part.shape[0]} codebooks, system 0 has {q}")
        if (part == sep).any():
            raise ValueError(f"system {i} already contains the separator value {sep}")
    dtype = np.result_type(*parts, np.min_scalar_type(sep))
    sep_col = np.full((q, 1), sep, dtype=dtype)
    pieces: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i:
            pieces.append(sep_col)
        pieces.append(part.astype(dtype, copy=False))
    return np.concatenate(pieces, axis=1)


def split_systems(joined: np.ndarray, sep: int) -> list[np.ndarray]:
    """Inverse of :func:`join_systems`: split ``(Q, T)`` at separator columns (every row ``sep``).

    A column where only some rows hold ``sep`` is malformed and raises ``ValueError``.
    """
    seq = _codes_array(joined, 2, "joined codes")
    is_sep = seq == sep
    full = is_sep.all(axis=0)
    partial = is_sep.any(axis=0) & ~full
    if partial.any():
        where = np.flatnonzero(partial)[:5].tolist()
        raise ValueError(f"malformed separator at position(s) {where}: not all codebooks hold {sep}")
    cuts = np.flatnonzero(full)
    bounds = [-1, *cuts.tolist(), seq.shape[1]]
    return [seq[:, a + 1 : b] for a, b in zip(bounds[:-1], bounds[1:])]
