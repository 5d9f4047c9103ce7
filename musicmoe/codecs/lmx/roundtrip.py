"""linearize -> delinearize -> linearize checks per system window, on real MusicXML (bench and tests)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .delinearize import delinearize_with_report
from .io import fixed_windows, load_musicxml, n_measures, system_breaks
from .linearize import linearize_score

# music21 corpus folders with MusicXML, in the order pieces are drawn from them (round robin)
CORPUS_GROUPS: tuple[tuple[str, str], ...] = (
    ("bach", "chorale"), ("beethoven", "string quartet"), ("mozart", "string quartet"),
    ("haydn", "string quartet"), ("schumann_robert", "lied / quartet"), ("schubert", "lied"),
    ("schumann_clara", "piano"), ("joplin", "piano"), ("monteverdi", "madrigal"), ("handel", "misc"),
    ("beach", "song"), ("corelli", "trio sonata"), ("cpebach", "keyboard"), ("weber", "misc"),
    ("verdi", "opera"), ("webern", "misc"), ("schoenberg", "misc"), ("liliuokalani", "song"),
)


@dataclass
class WindowResult:
    """Outcome of one window: ``ok`` when the tokens survive the round trip unchanged."""

    piece: str
    window: tuple[int, int]
    ok: bool
    n_tokens: int
    first_diff: tuple[int, str | None, str | None] | None = None  # (index, expected, got)
    errors: list[str] = field(default_factory=list)  # delinearizer messages
    tokens: list[str] = field(default_factory=list)


def piece_windows(root: ET.Element, size: int = 4) -> list[tuple[int, int]]:
    """System windows of a score; ``size``-measure windows when it has no system breaks."""
    w = system_breaks(root)
    return w if len(w) > 1 else fixed_windows(n_measures(root), size)


def first_difference(a: list[str], b: list[str]) -> tuple[int, str | None, str | None] | None:
    """Index and tokens where ``a`` and ``b`` first differ (None when equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    if len(a) != len(b):
        i = min(len(a), len(b))
        return i, a[i] if i < len(a) else None, b[i] if i < len(b) else None
    return None


def roundtrip_window(root: ET.Element, window: tuple[int, int], piece: str = "", **kwargs) -> WindowResult:
    """Linearize ``window`` of ``root``, delinearize, re-parse and linearize again; compare."""
    tokens = linearize_score(root, window, **kwargs)
    res = delinearize_with_report(tokens)
    again = linearize_score(ET.fromstring(res.xml.encode("utf-8")), **kwargs)
    diff = first_difference(tokens, again)
    return WindowResult(piece, window, diff is None, len(tokens), diff, res.errors, tokens)


def roundtrip_piece(path: str | os.PathLike, size: int = 4, max_windows: int | None = None,
                    **kwargs) -> list[WindowResult]:
    """Round trip of every window of a MusicXML file, or of ``max_windows`` evenly spread ones
    (first and last included)."""
    root = load_musicxml(path)
    windows = piece_windows(root, size)
    if max_windows is not None and len(windows) > max_windows:
        k = max(max_windows, 1)
        picks = sorted({round(i * (len(windows) - 1) / max(k - 1, 1)) for i in range(k)})
        windows = [windows[i] for i in picks]
    return [roundtrip_window(root, w, Path(path).name, **kwargs) for w in windows]


def corpus_pieces(n: int, groups: tuple[tuple[str, str], ...] = CORPUS_GROUPS) -> list[Path]:
    """``n`` MusicXML/.mxl files of music21's bundled corpus, drawn round robin over ``groups``
    (deterministic: sorted paths per composer). Parsing them is left to the caller (ElementTree)."""
    from music21 import corpus

    pools: list[list[Path]] = []
    for composer, _ in groups:
        paths = sorted(Path(str(p)) for p in corpus.getComposer(composer)
                       if str(p).endswith((".mxl", ".xml", ".musicxml")))
        if paths:
            pools.append(paths)
    out: list[Path] = []
    depth = 0
    while len(out) < n and any(depth < len(p) for p in pools):
        for p in pools:
            if depth < len(p) and len(out) < n:
                out.append(p[depth])
        depth += 1
    return out
