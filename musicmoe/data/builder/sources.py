"""Which score files a build reads: music21's bundled corpus or a folder, with stable ids and composers."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from musicmoe.data.builder.config import MUSICXML_FORMATS, CorpusConfig


class SourceError(ValueError):
    """The source of a build does not exist or selects nothing; the message says which."""


@dataclass(frozen=True)
class PieceSource:
    """One source file.  ``file_id`` names its shard; a file holding several scores (an opus) gives pieces
    ``<file_id>-<k>``.  ``composer`` is empty when it must be read from the score itself."""

    file_id: str
    path: str
    rel: str
    composer: str = ""

    @property
    def is_musicxml(self) -> bool:
        return Path(self.path).suffix.lower() in MUSICXML_FORMATS


_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")


def make_id(rel: str) -> str:
    """A key-safe id from a relative path: no extension, separators and odd characters as ``_``, no ``__``."""
    stem = str(Path(rel).with_suffix(""))
    out = _UNSAFE.sub("_", stem.replace("\\", "/").replace("/", "_")).strip("_.")
    out = re.sub("_{2,}", "_", out)
    return out or "piece"


def music21_corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _candidates(root: Path, formats: list[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in formats and p.is_file() and not p.name.startswith("."))


def _dedupe(paths: list[Path], formats: list[str]) -> tuple[list[Path], list[Path]]:
    """Keep one file per (folder, stem), preferring the earlier format in ``formats`` (MusicXML first)."""
    best: dict[tuple[Path, str], Path] = {}
    dropped: list[Path] = []
    rank = {f: i for i, f in enumerate(formats)}
    for p in paths:
        key = (p.parent, p.stem)
        cur = best.get(key)
        if cur is None:
            best[key] = p
        elif rank[p.suffix.lower()] < rank[cur.suffix.lower()]:
            dropped.append(cur)
            best[key] = p
        else:
            dropped.append(p)
    return sorted(best.values()), sorted(dropped)


def list_sources(cfg: CorpusConfig) -> tuple[list[PieceSource], list[str]]:
    """Source files of a build in a stable order (after ``composers``, ``include`` and ``limit``), plus the
    relative paths dropped as duplicates of a better format of the same score."""
    if cfg.source == "music21":
        root = music21_corpus_root()
        if cfg.composers:
            known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
            missing = [c for c in cfg.composers if not (root / c).is_dir()]
            if missing:
                raise SourceError(f"music21 corpus has no composer folder {missing}; available: {', '.join(known)}")
            paths = [p for c in sorted(set(cfg.composers)) for p in _candidates(root / c, cfg.formats)]
        else:
            paths = _candidates(root, cfg.formats)
    else:
        root = Path(cfg.source).expanduser()
        if not root.is_dir():
            raise SourceError(f"corpus.source {cfg.source!r} is neither 'music21' nor an existing folder")
        paths = _candidates(root, cfg.formats)
        if cfg.composers:
            paths = [p for p in paths if p.relative_to(root).parts[0] in cfg.composers]
    paths, dropped = _dedupe(sorted(paths), cfg.formats)
    if cfg.include:
        paths = [p for p in paths if any(fnmatch.fnmatch(p.relative_to(root).as_posix(), pat) for pat in cfg.include)]
    if cfg.limit:
        paths = paths[: cfg.limit]
    sources: list[PieceSource] = []
    seen: set[str] = set()
    for p in paths:
        rel = p.relative_to(root).as_posix()
        fid = make_id(rel)
        if fid in seen:  # two paths that sanitise alike: disambiguate by a hash of the path
            fid = f"{fid}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"
        seen.add(fid)
        parts = Path(rel).parts
        composer = parts[0] if len(parts) > 1 else ""
        sources.append(PieceSource(fid, str(p), rel, composer))
    return sources, [p.relative_to(root).as_posix() for p in dropped]


def iter_scores(src: PieceSource, tmpdir: str | Path) -> Iterator[tuple[str, Path | Exception]]:
    """``(piece_id, MusicXML path)`` per score of ``src``, lazily.  MusicXML files come as they are; other
    formats are parsed by music21 and exported (an opus gives one piece per score, ``<file_id>-<k>``, k from
    1).  A score that fails to export comes as ``(piece_id, exception)`` so the others still build."""
    if src.is_musicxml:
        yield src.file_id, Path(src.path)
        return
    from music21 import converter, stream

    parsed = converter.parse(src.path, forceSource=True, storePickle=False)
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    if not scores:
        raise ValueError("music21 found no score in the file")
    for k, score in enumerate(scores, 1):
        pid = src.file_id if len(scores) == 1 else f"{src.file_id}-{k}"
        target = Path(tmpdir) / f"{pid}.musicxml"
        try:
            yield pid, Path(score.write("musicxml", fp=str(target)))
        except Exception as err:  # music21 export raises many types on odd input
            yield pid, err
