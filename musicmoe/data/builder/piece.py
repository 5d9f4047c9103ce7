"""Build one source file into one shard: engrave, crop systems, attach LMX, MIDI and audio per system."""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from musicmoe.data.builder.align import (
    cut,
    part_programs,
    piece_midi,
    piece_program,
    qstamps_to_seconds,
    tempo_at,
    with_program,
)
from musicmoe.data.builder.config import CorpusConfig
from musicmoe.data.builder.engrave import EngraveError, engrave, render_system
from musicmoe.data.builder.sources import PieceSource, iter_scores
from musicmoe.data.example import Example
from musicmoe.data.shards import SHARD_DIR, ShardWriter
from musicmoe.data.split import split_for

SUMMARY_SUFFIX = ".summary.json"


class PieceError(RuntimeError):
    """A piece cannot be built; the message says why (it is listed in the build report)."""


_PLACEHOLDERS = {"music21", "music21 fragment", "composer", "unknown", "untitled"}


def _composer_of(root: ET.Element) -> str:
    """The ``<creator type="composer">`` of the score, ignoring placeholders that exporters write."""
    for creator in root.iter("creator"):
        text = " ".join((creator.text or "").split())
        if creator.get("type", "composer") == "composer" and text and text.lower() not in _PLACEHOLDERS:
            return text
    return ""


def _title_of(root: ET.Element) -> str:
    for path in ("work/work-title", "movement-title"):
        el = root.find(path)
        text = " ".join((el.text or "").split()) if el is not None else ""
        if text and text.lower() not in _PLACEHOLDERS:
            return text
    return ""


def score_examples(piece_id: str, xml_path: Path, composer: str, rel: str, cfg: CorpusConfig,
                   counts: Counter, problems: list[str] | None = None) -> Iterator[Example]:
    """Aligned examples of every system of one MusicXML score.  Skipped systems are counted in ``counts``
    (``systems_too_tall``, ``systems_empty``, ``systems_lmx_failed``), LMX errors appended to ``problems``."""
    from musicmoe.codecs.lmx import LmxError, linearize_score, load_musicxml
    from musicmoe.data.synth import synthesize

    try:
        root = load_musicxml(xml_path)
    except LmxError as err:
        raise PieceError(f"unreadable MusicXML: {err}") from None
    lengths = {len(p.findall("measure")) for p in root.findall("part")}
    if not lengths or lengths == {0}:
        raise PieceError("the score has no measures")
    if len(lengths) > 1:
        raise PieceError(f"parts have different measure counts {sorted(lengths)}")
    n = lengths.pop()
    composer = composer or _composer_of(root)
    title = _title_of(root)
    try:
        eng = engrave(ET.tostring(root, encoding="unicode"), cfg, n)
    except EngraveError as err:
        raise PieceError(f"engraving failed: {err}") from None
    parts = part_programs(root, cfg)
    if cfg.programs:
        parts = with_program(parts, piece_program(piece_id, cfg.programs))
    try:
        pm = piece_midi(eng.midi, parts)
    except Exception as err:  # mido/pretty_midi raise many types on bad MIDI
        raise PieceError(f"verovio's MIDI is unusable: {err}") from None
    seconds = qstamps_to_seconds(pm, eng.measure_qstamps + [eng.end_qstamp])
    split = split_for(piece_id, cfg.split_fractions)
    for system in eng.systems:
        counts["systems"] += 1
        first, last = system.measures
        warnings: list[str] = []
        try:
            lmx = linearize_score(root, (first, last), warnings=warnings)
        except (LmxError, ValueError) as err:
            counts["systems_lmx_failed"] += 1
            if problems is not None and len(problems) < 20:
                problems.append(f"{piece_id} system {system.index}: LMX failed: {err}")
            continue
        image, why = render_system(eng, system, cfg)
        if image is None:
            counts[f"systems_{why}"] += 1
            continue
        t0, t1 = float(seconds[first]), float(seconds[last + 1])
        if t1 <= t0:
            counts["systems_zero_duration"] += 1
            continue
        midi = cut(pm, t0, t1)
        audio = synthesize(midi, sample_rate=cfg.sample_rate, soundfont=cfg.soundfont or None)
        counts["systems_written"] += 1
        yield Example(
            key=f"{piece_id}__s{system.index:03d}", piece=piece_id, composer=composer, split=split,
            system=system.index, measures=(first, last), image=image, lmx=lmx, midi=midi, audio=audio,
            sample_rate=cfg.sample_rate,
            meta={
                "source": rel, "title": title, "page": system.page, "n_measures": last - first + 1,
                "n_parts": len(parts), "n_staves": system.n_staves, "programs": [p.program for p in parts],
                "start_seconds": round(t0, 6), "duration": round(t1 - t0, 6),
                "start_quarters": eng.measure_qstamps[first],
                "quarters": round((eng.measure_qstamps[last + 1] if last + 1 < n else eng.end_qstamp)
                                  - eng.measure_qstamps[first], 6),
                "tempo_bpm": round(tempo_at(pm, t0), 3), "image_height": int(image.shape[0]),
                "image_width": int(image.shape[1]), "lmx_warnings": len(warnings),
                "staff_height_px": cfg.staff_height_px,
            },
        )


def build_file(src: PieceSource, cfg: CorpusConfig, out_dir: str | Path,
               heartbeat: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write the shard of ``src`` (named ``src.file_id``) and its summary; returns the summary.

    ``heartbeat`` is called after every written system and every score (the runner's timeout counts the
    time without progress).

    A file with a single score fails as a whole (``PieceError``); in a multi-score file (an opus) a failing
    score is listed in the summary's ``failures`` and the others are written.
    """
    counts: Counter = Counter()
    failures: list[dict[str, str]] = []
    problems: list[str] = []
    pieces: list[str] = []
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="musicmoe-build-") as tmp:
        scores = iter_scores(src, tmp)
        multi = False
        with ShardWriter(out_dir, src.file_id) as writer:
            while True:
                try:
                    piece_id, xml = next(scores)
                except StopIteration:
                    break
                except Exception as err:  # music21 parse errors come in many types
                    raise PieceError(f"music21 could not parse it: {_reason(err)}") from None
                multi = multi or piece_id != src.file_id
                try:
                    if isinstance(xml, Exception):
                        raise PieceError(f"music21 could not export MusicXML: {_reason(xml)}")
                    before, failed = counts["systems_written"], counts["systems_lmx_failed"]
                    for ex in score_examples(piece_id, Path(xml), src.composer, src.rel, cfg, counts, problems):
                        writer.add(ex)
                        if heartbeat is not None:
                            heartbeat()
                    if counts["systems_written"] == before and counts["systems_lmx_failed"] > failed:
                        raise PieceError(f"no system could be linearized ({problems[-1] if problems else ''})")
                    pieces.append(piece_id)
                except Exception as err:
                    if not multi:
                        raise
                    failures.append({"file": src.rel, "piece": piece_id, "reason": _reason(err)})
                if heartbeat is not None:
                    heartbeat()
            if multi and not pieces:
                raise PieceError(f"none of its scores could be built (first: {failures[0]['reason']})")
    summary = {"file_id": src.file_id, "file": src.rel, "pieces": pieces, "failures": failures,
               "problems": problems, "counts": {k: v for k, v in sorted(counts.items()) if v}}
    _write_json(out_dir / SHARD_DIR / f"{src.file_id}{SUMMARY_SUFFIX}", summary)
    return summary


def _reason(err: BaseException) -> str:
    if isinstance(err, PieceError):
        return str(err)
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)
