"""The YTSV metadata CSV (``metadata/ytsv_metadata.csv`` of MALerLab/youtube-score-video-dataset).

One row per video with the columns in :data:`COLUMNS`.  ``Duration`` is ``M:SS`` or ``H:MM:SS``, ``Year``
a float or empty, the four ``... Included`` columns ``True``/``False``, and ``Staff Count`` ``A-B``: the
staves of the non-keyboard instruments and of the keyboard (``1-2`` is a violin and a piano, ``0-2`` a
piano solo); the total is ``A + B``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

COLUMNS = (
    "YT Id", "Title of Video", "User", "Duration", "Composer Full Name", "Title of Piece", "Opus Number",
    "Instrumentation", "Category", "Piano Included", "String Included", "Wind Included", "Voice Included",
    "Year", "Staff Count",
)
_ID = re.compile(r"^[A-Za-z0-9_-]{6,20}$")


class MetadataError(ValueError):
    """The metadata file is unreadable or lacks columns; the message names the file."""


@dataclass
class VideoMeta:
    """One row of the metadata CSV, parsed."""

    yt_id: str
    title: str = ""
    user: str = ""
    duration_s: float = 0.0
    composer: str = ""
    piece: str = ""
    opus: str = ""
    instrumentation: str = ""
    category: str = ""
    piano: bool = False
    strings: bool = False
    winds: bool = False
    voice: bool = False
    year: int | None = None
    staff_count: int = 0
    staff_count_raw: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "VideoMeta":
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


def parse_duration(text: str) -> float:
    """``"6:19"`` -> 379.0, ``"1:08:08"`` -> 4088.0; raises ``ValueError`` on anything else."""
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"bad duration {text!r} (expected M:SS or H:MM:SS)")
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return float(seconds)


def parse_staff_count(text: str) -> int:
    """``"1-2"`` -> 3; a single number counts as itself; empty -> 0."""
    text = text.strip()
    if not text:
        return 0
    try:
        return sum(int(p) for p in text.split("-"))
    except ValueError:
        raise ValueError(f"bad staff count {text!r} (expected A-B)") from None


def _bool(text: str, column: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no", ""):
        return False
    raise ValueError(f"bad {column} {text!r} (expected True/False)")


def _year(text: str) -> int | None:
    t = text.strip()
    if not t:
        return None
    try:
        return int(float(t))
    except ValueError:
        raise ValueError(f"bad year {text!r}") from None


def read_metadata(path: str | Path) -> tuple[list[VideoMeta], list[str]]:
    """All rows of the CSV as :class:`VideoMeta`, plus one message per skipped row (``file:line: why``).

    Raises :class:`MetadataError` if the file cannot be read or a column is missing.  Duplicate ids keep
    their first row.
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise MetadataError(f"cannot read YTSV metadata {path}: {err.strerror or err}") from None
    videos: list[VideoMeta] = []
    problems: list[str] = []
    seen: set[str] = set()
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise MetadataError(f"{path} is missing column(s) {', '.join(repr(m) for m in missing)}; "
                                f"a YTSV metadata CSV has: {', '.join(COLUMNS)}")
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            try:
                meta = _row(row)
            except ValueError as err:
                problems.append(f"{path}:{line}: {err}")
                continue
            if meta.yt_id in seen:
                problems.append(f"{path}:{line}: duplicate YT Id {meta.yt_id!r} (first row kept)")
                continue
            seen.add(meta.yt_id)
            videos.append(meta)
    return videos, problems


def _row(row: dict[str, str]) -> VideoMeta:
    vid = (row.get("YT Id") or "").strip()
    if not _ID.match(vid):
        raise ValueError(f"bad YT Id {vid!r}")
    g = lambda c: (row.get(c) or "").strip()  # noqa: E731
    return VideoMeta(
        yt_id=vid, title=g("Title of Video"), user=g("User"), duration_s=parse_duration(g("Duration")),
        composer=g("Composer Full Name"), piece=g("Title of Piece"), opus=g("Opus Number"),
        instrumentation=g("Instrumentation"), category=g("Category"),
        piano=_bool(g("Piano Included"), "Piano Included"), strings=_bool(g("String Included"), "String Included"),
        winds=_bool(g("Wind Included"), "Wind Included"), voice=_bool(g("Voice Included"), "Voice Included"),
        year=_year(g("Year")), staff_count=parse_staff_count(g("Staff Count")), staff_count_raw=g("Staff Count"),
    )


def filter_videos(videos: Iterable[VideoMeta], categories: Sequence[str] = (), instrumentations: Sequence[str] = (),
                  min_staves: int = 0, max_staves: int = 0, ids: Sequence[str] = (),
                  max_duration_s: float = 0.0) -> list[VideoMeta]:
    """Videos whose category and instrumentation are in the given lists (case-insensitive; empty = any),
    whose total staff count is in ``[min_staves, max_staves]`` (0 = no bound), whose id is in ``ids``
    (empty = any) and which are at most ``max_duration_s`` long (0 = any)."""
    cats = {c.strip().lower() for c in categories}
    insts = {i.strip().lower() for i in instrumentations}
    wanted = set(ids)
    out = []
    for v in videos:
        if cats and v.category.lower() not in cats:
            continue
        if insts and v.instrumentation.lower() not in insts:
            continue
        if min_staves and v.staff_count < min_staves:
            continue
        if max_staves and v.staff_count > max_staves:
            continue
        if wanted and v.yt_id not in wanted:
            continue
        if max_duration_s and v.duration_s > max_duration_s:
            continue
        out.append(v)
    return out
