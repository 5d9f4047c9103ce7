"""Fixed LMX vocabulary: ``vocabulary.txt`` shipped in the package, one token per line, id = line index.

The file is append-only: ids must stay stable across runs and releases. ``<unk>`` is id 0; tokens
outside the vocabulary encode to it and are counted in ``Vocabulary.unknown`` (never dropped).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .errors import LmxError
from .tokens import UNK

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.txt")


class Vocabulary:
    """Token <-> id mapping of the LMX modality (content ids ``0..len-1``)."""

    def __init__(self, tokens: list[str], source: str = "<list>"):
        if not tokens or tokens[0] != UNK:
            raise LmxError(f"{source}: the first vocabulary token must be {UNK!r}")
        index: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if not t or any(c.isspace() for c in t):
                raise LmxError(f"{source}: line {i + 1}: empty token or token with white space")
            if t in index:
                raise LmxError(f"{source}: line {i + 1}: duplicate token {t!r}")
            index[t] = i
        self.tokens = list(tokens)
        self.index = index
        self.source = source
        self.unknown: Counter[str] = Counter()  # cumulative out-of-vocabulary tokens seen by encode

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None) -> Vocabulary:
        """Load a vocabulary file (default: the one shipped with the package)."""
        p = Path(path) if path is not None else VOCABULARY_FILE
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise LmxError(f"{p}: cannot read vocabulary ({e.strerror or e})") from e
        return cls([ln.strip() for ln in lines if ln.strip()], str(p))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    @property
    def unk_id(self) -> int:
        return self.index[UNK]

    def encode(self, tokens: Iterable[str], *, strict: bool = False) -> list[int]:
        """Ids of ``tokens``; unknown ones become ``unk_id`` and are counted in ``self.unknown``
        (``strict=True`` raises ``LmxError`` instead)."""
        ids: list[int] = []
        unk = self.unk_id
        for t in tokens:
            i = self.index.get(t)
            if i is None:
                if strict:
                    raise LmxError(f"token {t!r} is not in the LMX vocabulary ({self.source})")
                self.unknown[t] += 1
                i = unk
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``; an id outside ``0..len-1`` raises ``LmxError``."""
        out: list[str] = []
        n = len(self.tokens)
        for i in ids:
            j = int(i)
            if not 0 <= j < n:
                raise LmxError(f"id {j} outside the LMX vocabulary (0..{n - 1})")
            out.append(self.tokens[j])
        return out

    def count_unknown(self, tokens: Iterable[str]) -> int:
        """How many of ``tokens`` are outside the vocabulary (does not touch ``self.unknown``)."""
        return sum(1 for t in tokens if t not in self.index)
