"""Deterministic train/valid/test assignment by piece, stable when pieces are added."""

from __future__ import annotations

import hashlib
from typing import Sequence

SPLITS = ("train", "valid", "test")


def split_for(piece: str, fractions: Sequence[float] = (0.9, 0.05, 0.05), salt: str = "musicmoe") -> str:
    """The split of ``piece``: a hash of its id mapped to [0, 1), so adding pieces never moves others."""
    if len(fractions) != len(SPLITS):
        raise ValueError(f"need {len(SPLITS)} split fractions, got {list(fractions)}")
    digest = hashlib.sha1(f"{salt}:{piece}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]
