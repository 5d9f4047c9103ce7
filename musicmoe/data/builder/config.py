"""Settings of the corpus builder (sources, engraving, cropping, synthesis, splits, parallelism)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

MUSICXML_FORMATS = (".mxl", ".xml", ".musicxml")


@dataclass
class CorpusConfig:
    """How ``musicmoe data build`` turns scores into aligned per-system examples.

    Keys marked *content* change what a piece's shard holds; a resumed build refuses to mix shards built with
    different content keys (see :func:`content_keys`).
    """

    source: str = "music21"            # "music21" (its bundled corpus) or a folder of scores (searched recursively)
    composers: list[str] = field(default_factory=list)  # music21 corpus folders to include (empty = all)
    formats: list[str] = field(default_factory=lambda: [".mxl", ".xml", ".musicxml", ".krn", ".abc"])
    include: list[str] = field(default_factory=list)  # glob patterns on paths relative to the source (empty = all)
    limit: int = 0                     # max source files (0 = no limit), taken in sorted order
    out: str = "runs/corpus"
    workers: int = 0                   # parallel pieces (0 = all cores)
    piece_timeout_s: float = 300.0     # a file making no progress (no system or score done) this long is killed
    # content: engraving (verovio) and cropping
    staff_height_px: int = 18          # distance between the centres of a staff's top and bottom lines
    max_height_px: int = 416           # taller system crops are skipped and counted
    page_width: int = 2100             # verovio page width (verovio units at scale 100) -> measures per system
    pad_px: int = 4                    # white margin kept around a system's ink
    ink_threshold: int = 245           # a pixel darker than this counts as ink when trimming a crop
    font: str = "Leipzig"              # verovio music font (Leipzig, Bravura, Leland, Gootville, Petaluma)
    verovio_options: dict[str, Any] = field(default_factory=dict)  # extra verovio options (override the layout)
    # content: MIDI and audio
    sample_rate: int = 24000
    soundfont: str = ""                # empty = TimGM6mb.sf2 shipped with pretty_midi
    default_program: int = 0           # GM program (0-based) of parts with no known instrument: piano
    vocal_program: int = 52            # GM program of vocal parts (or unknown parts with lyrics): choir aahs
    # GM programs (0-based) to draw one from per piece (a hash of the piece id) for every pitched part, so that
    # transcription hears several timbres; empty = the programs the score names (above)
    programs: list[int] = field(default_factory=list)
    # content: splits
    split_fractions: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])  # train/valid/test

    def __post_init__(self) -> None:
        if self.staff_height_px <= 0 or self.max_height_px < self.staff_height_px:
            raise ValueError("corpus.staff_height_px must be > 0 and <= corpus.max_height_px")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError("corpus.split_fractions must be three numbers (train, valid, test) summing to 1")
        if any(f < 0 for f in self.split_fractions):
            raise ValueError("corpus.split_fractions must be >= 0")
        if self.limit < 0 or self.workers < 0:
            raise ValueError("corpus.limit and corpus.workers must be >= 0")
        if self.piece_timeout_s <= 0:
            raise ValueError("corpus.piece_timeout_s must be > 0")
        if not self.source:
            raise ValueError("corpus.source must be 'music21' or a folder of scores")
        if not 100 <= self.page_width <= 100000:
            raise ValueError("corpus.page_width must be in [100, 100000] (verovio's range)")
        if self.pad_px < 0 or not 0 < self.ink_threshold <= 255:
            raise ValueError("corpus.pad_px must be >= 0 and corpus.ink_threshold in (0, 255]")
        if self.sample_rate <= 0:
            raise ValueError("corpus.sample_rate must be > 0")
        for name in ("default_program", "vocal_program"):
            if not 0 <= getattr(self, name) <= 127:
                raise ValueError(f"corpus.{name} must be a General MIDI program in [0, 127]")
        if any(not 0 <= int(p) <= 127 for p in self.programs):
            raise ValueError(f"corpus.programs must be General MIDI programs in [0, 127], got {self.programs}")
        bad = [f for f in self.formats if not f.startswith(".")]
        if bad or not self.formats:
            raise ValueError(f"corpus.formats must be non-empty file extensions starting with '.', got {self.formats}")
        self.formats = [f.lower() for f in self.formats]
        self.composers = [c.strip() for c in self.composers if c.strip()]


# Keys that only choose WHICH pieces are built or HOW FAST; all others change a shard's content.
_NON_CONTENT = {"source", "composers", "formats", "include", "limit", "out", "workers", "piece_timeout_s"}


def content_keys() -> list[str]:
    """Config keys whose values are baked into the shards (a resumed build must keep them)."""
    return [f.name for f in fields(CorpusConfig) if f.name not in _NON_CONTENT]
