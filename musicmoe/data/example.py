"""One aligned example: a system (or segment) of music in up to four modalities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Example:
    """A system of a piece in every modality the corpus has for it.

    ``image`` is a grayscale crop (uint8, H x W, white = 255) scaled so the staff height is 18 px; ``lmx`` the
    system's LMX tokens; ``midi`` a ``pretty_midi.PrettyMIDI`` whose time 0 is the start of the system;
    ``audio`` mono float32 at ``sample_rate``.  Corpora without a modality leave it ``None``.
    ``measures`` are the 0-based indices (first, last, inclusive) of the system's measures in the piece.
    """

    key: str
    piece: str
    composer: str = ""
    split: str = "train"
    system: int = 0
    measures: tuple[int, int] = (0, 0)
    image: np.ndarray | None = None
    lmx: list[str] | None = None
    midi: Any | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 24000
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities present, in the canonical order."""
        present = {"image": self.image, "lmx": self.lmx, "midi": self.midi, "audio": self.audio}
        return tuple(m for m, v in present.items() if v is not None)

    @property
    def duration(self) -> float:
        """Length in seconds (audio if present, else MIDI end time, else 0)."""
        if self.audio is not None:
            return len(self.audio) / self.sample_rate
        if self.midi is not None:
            return float(self.midi.get_end_time())
        return 0.0
