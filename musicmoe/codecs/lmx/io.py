"""Reading MusicXML (.musicxml/.xml/.mxl) and LMX text files; system windows of a score."""

from __future__ import annotations

import io
import os
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path

from .errors import LmxError

LMX_HEADER = "version: 1.0\nflavor: {flavor}\n---\n"


def _mxl_rootfile(path: Path, data: bytes) -> bytes:
    """The score document inside a compressed .mxl archive (META-INF/container.xml names it)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            target = None
            if "META-INF/container.xml" in names:
                try:
                    container = ET.fromstring(zf.read("META-INF/container.xml"))
                except ET.ParseError as e:
                    raise LmxError(f"{path}: broken META-INF/container.xml in .mxl ({e})") from e
                for rf in container.iter("rootfile"):
                    full = rf.get("full-path")
                    media = rf.get("media-type", "application/vnd.recordare.musicxml+xml")
                    if full and "musicxml" in media:
                        target = full
                        break
            if target is None:  # no container: the first MusicXML document outside META-INF
                cands = [n for n in names if not n.startswith("META-INF/") and n.endswith((".xml", ".musicxml"))]
                if not cands:
                    raise LmxError(f"{path}: .mxl archive holds no MusicXML document")
                target = cands[0]
            if target not in names:
                raise LmxError(f"{path}: .mxl rootfile {target!r} is missing from the archive")
            return zf.read(target)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise LmxError(f"{path}: not a readable .mxl (zip) archive ({e})") from e


def parse_musicxml_bytes(data: bytes, name: str = "<bytes>") -> ET.Element:
    """Parse MusicXML text into its root, which must be ``score-partwise``."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise LmxError(f"{name}: not well-formed XML ({e})") from e
    if root.tag == "score-timewise":
        raise LmxError(f"{name}: score-timewise MusicXML is not supported; convert it to score-partwise")
    if root.tag != "score-partwise":
        raise LmxError(f"{name}: root element is <{root.tag}>, expected <score-partwise>")
    return root


def load_musicxml(path: str | os.PathLike) -> ET.Element:
    """Root ``<score-partwise>`` element of a .musicxml/.xml file or a compressed .mxl archive."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LmxError(f"{p}: cannot read file ({e.strerror or e})") from e
    if data[:4] == b"PK\x03\x04" or p.suffix.lower() == ".mxl":
        data = _mxl_rootfile(p, data)
    return parse_musicxml_bytes(data, str(p))


def _starts_system(measure: ET.Element) -> bool:
    for pr in measure.findall("print"):
        if pr.get("new-system") == "yes" or pr.get("new-page") == "yes":
            return True
    return False


def n_measures(root: ET.Element) -> int:
    """Number of measures of the score (the longest part)."""
    return max((len(part.findall("measure")) for part in root.findall("part")), default=0)


def system_breaks(root: ET.Element) -> list[tuple[int, int]]:
    """Measure windows ``(first, last)`` (0-based, inclusive) split at ``<print new-system|new-page="yes">``.

    A break in any part counts. A score without breaks is one window; a score without measures none.
    """
    n = n_measures(root)
    if n == 0:
        return []
    starts = {0}
    for part in root.findall("part"):
        for i, m in enumerate(part.findall("measure")):
            if i > 0 and _starts_system(m):
                starts.add(i)
    s = sorted(starts)
    return [(a, b - 1) for a, b in zip(s, s[1:] + [n])]


def fixed_windows(n: int, size: int = 4) -> list[tuple[int, int]]:
    """Consecutive windows of ``size`` measures over ``n`` measures (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    return [(a, min(a + size, n) - 1) for a in range(0, n, size)]


def parse_lmx_text(text: str) -> list[str]:
    """Tokens of LMX text: an optional header ended by a ``---`` line, ``#`` comments, white space."""
    lines = text.splitlines()
    stripped = [ln.strip() for ln in lines]
    if "---" in stripped:
        lines = lines[stripped.index("---") + 1 :]
    tokens: list[str] = []
    for ln in lines:
        tokens += ln.split("#", 1)[0].split()
    return tokens


def read_lmx(path: str | os.PathLike) -> list[str]:
    """Tokens of an .lmx file (header/comment format of the golden fixtures, or a plain token line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LmxError(f"{p}: cannot read LMX file ({e})") from e
    return parse_lmx_text(text)


def format_lmx(tokens: list[str], flavor: str = "core") -> str:
    """LMX file text with the fixtures' header, one measure per line."""
    lines: list[str] = []
    for t in tokens:
        if t in ("measure", "part") or not lines:
            lines.append(t)
        else:
            lines[-1] += " " + t
    return LMX_HEADER.format(flavor=flavor) + "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
