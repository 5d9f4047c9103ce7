"""What every dataset importer shares: settings, the resumable runner (one shard per source item), and the
conversions into the corpus conventions (staff height 18 px images, 24 kHz mono audio cut into segments
with MIDI whose time 0 is the segment start)."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from musicmoe.data.example import Example
from musicmoe.data.loaders.jobs import (
    corpus_lock,
    read_json,
    resolve_shard,
    run_items,
    select_shard,
    write_json_atomic,
)

log = logging.getLogger(__name__)
SUMMARY_SUFFIX = ".summary.json"
END_MARKER = "segment-end"
_UNSAFE = re.compile(r"[^A-Za-z0-9.+_-]+")


class DatasetLayoutError(RuntimeError):
    """The source folder does not have the dataset's layout; the message names what is missing."""


class ItemError(RuntimeError):
    """One source item cannot be converted; the message is its reason in the report."""

    plain_reason = True


@dataclass
class ImportConfig:
    """Settings of ``musicmoe import DATASET SRC --out DIR``.

    Image datasets: crops are scaled so the staff height is ``staff_height_px`` and trimmed to their ink
    plus ``pad_px``.  Audio datasets: recordings are cut into ``segment_seconds`` pieces every
    ``hop_seconds`` (0 = back to back); a last piece shorter than ``min_segment_seconds`` is dropped, as
    are pieces without notes when ``skip_empty``; audio is resampled to ``sample_rate``.
    """

    source: str = ""
    out: str = ""
    name: str = ""                    # shard/piece prefix (default: the dataset's name)
    workers: int = 1
    limit: int = 0                    # convert the first N items only (0 = all)
    staff_height_px: int = 18
    pad_px: int = 4
    distorted: bool = False           # GrandStaff: use the camera-distorted images
    segment_seconds: float = 10.0
    hop_seconds: float = 0.0
    min_segment_seconds: float = 1.0
    skip_empty: bool = True
    sustain: bool = True              # MAESTRO: extend notes held by the sustain pedal
    sample_rate: int = 24000
    label_sample_rate: int = 44100    # MusicNet: the labels count samples at this rate
    velocity: int = 80                # MusicNet: its labels have no velocities
    valid_fraction: float = 0.05      # datasets with only train/test: share of train pieces moved to valid
    seed: int = 0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.limit < 0:
            raise ValueError("workers must be >= 1 and limit >= 0")
        if self.staff_height_px <= 0 or self.pad_px < 0:
            raise ValueError("staff_height_px must be > 0 and pad_px >= 0")
        if self.segment_seconds <= 0 or self.hop_seconds < 0 or self.min_segment_seconds < 0:
            raise ValueError("segment_seconds must be > 0, hop_seconds and min_segment_seconds >= 0")
        if self.sample_rate <= 0 or self.label_sample_rate <= 0 or not 1 <= self.velocity <= 127:
            raise ValueError("sample rates must be > 0 and velocity in [1, 127]")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError("valid_fraction must be in [0, 1)")


def safe_id(text: str) -> str:
    """A key-safe id (no slashes or spaces) from a path-like string."""
    out = _UNSAFE.sub("_", text.replace("\\", "/").replace("/", "_")).strip("_.")
    return re.sub("_{2,}", "_", out) or "item"


@dataclass
class Item:
    """One source item (a score folder, a piece folder, a recording): its id and what to read."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)


class Loader(Protocol):
    """A dataset: ``items`` lists the source items in a stable order (checking the layout, raising
    :class:`DatasetLayoutError` naming what is missing), ``convert`` yields an item's examples and counts its
    skipped samples in ``counts`` (raising :class:`ItemError` when nothing of it is usable)."""

    name: str

    def items(self, cfg: ImportConfig) -> list[Item]:
        ...

    def convert(self, item: Item, cfg: ImportConfig, counts: Counter) -> Iterator[Example]:
        ...


def shard_name(loader_name: str, item: Item) -> str:
    return f"{loader_name}-{item.id}"


def _convert_item(item: Item, loader: Loader, cfg: ImportConfig, prefix: str) -> dict[str, Any]:
    from musicmoe.data.shards import SHARD_DIR, ShardWriter

    counts: Counter = Counter()
    name = shard_name(prefix, item)
    with ShardWriter(cfg.out, name) as writer:
        for ex in loader.convert(item, cfg, counts):
            writer.add(ex)
            counts["examples"] += 1
    summary = {"item": item.id, "counts": dict(counts)}
    write_json_atomic(Path(cfg.out) / SHARD_DIR / f"{name}{SUMMARY_SUFFIX}", summary)
    return dict(counts)


def run_import(loader: Loader, cfg: ImportConfig, shard_index: int | None = None, num_shards: int | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Convert this task's share of the items, one shard each, skipping items whose shard exists; then
    rebuild the manifest and write ``report.json`` (all shards so far) and ``config.yaml``."""
    from musicmoe.config import save_config
    from musicmoe.data.shards import shard_done

    if not cfg.source or not Path(cfg.source).is_dir():
        raise DatasetLayoutError(f"{loader.name}: source folder {cfg.source!r} does not exist")
    if not cfg.out:
        raise DatasetLayoutError("no output folder given (--out DIR)")
    prefix = cfg.name or loader.name
    items = loader.items(cfg)
    if cfg.limit:
        items = items[: cfg.limit]
    shard = resolve_shard(shard_index, num_shards)
    mine = select_shard(items, *shard)
    run = Counter()
    failures: dict[str, str] = {}
    todo = []
    for it in mine:
        if shard_done(cfg.out, shard_name(prefix, it)):
            run["items_already_done"] += 1
        else:
            todo.append(it)
    fn = partial(_convert_item, loader=loader, cfg=cfg, prefix=prefix)
    for out in run_items(fn, todo, cfg.workers, desc=f"import {loader.name}", progress=progress):
        if out.ok:
            run["items_done"] += 1
            run.update(out.result)
        else:
            run["items_failed"] += 1
            failures[out.item.id] = out.reason
            log.warning("%s %s: %s", loader.name, out.item.id, out.reason)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    task_report = {"dataset": loader.name, "shard_index": shard[0], "num_shards": shard[1],
                   "items": len(mine), "counts": dict(run), "failures": failures}
    write_json_atomic(Path(cfg.out) / "reports" / f"import-{shard[0]}of{shard[1]}.json", task_report)
    with corpus_lock(cfg.out):
        total = finish_import(cfg, loader.name, len(items))
        save_config(cfg, cfg.out)
    return {**task_report, "corpus": total}


def finish_import(cfg: ImportConfig, dataset: str, n_items: int) -> dict[str, Any]:
    """Rebuild the manifest and ``report.json`` from every shard and summary written so far (call it under
    :func:`~musicmoe.data.loaders.jobs.corpus_lock` when array tasks may finish together)."""
    from musicmoe.data.shards import SHARD_DIR, iter_records, write_manifest, write_report

    out = Path(cfg.out)
    n = write_manifest(out) if (out / SHARD_DIR).is_dir() else 0
    counts: Counter = Counter()
    for path in sorted((out / SHARD_DIR).glob(f"*{SUMMARY_SUFFIX}")):
        counts.update((read_json(path, {}) or {}).get("counts", {}))
    splits: Counter = Counter()
    modalities: Counter = Counter()
    seconds = 0.0
    if n:
        for rec in iter_records(out):
            splits[rec.get("split", "")] += 1
            modalities[",".join(rec.get("modalities", []))] += 1
            seconds += float(rec.get("audio_seconds", 0.0))
    failures: dict[str, str] = {}
    for path in sorted((out / "reports").glob("import-*.json")):
        failures.update((read_json(path, {}) or {}).get("failures", {}))
    done = {p.name[: -len(SUMMARY_SUFFIX)] for p in (out / SHARD_DIR).glob(f"*{SUMMARY_SUFFIX}")}
    failures = {k: v for k, v in failures.items() if f"{cfg.name or dataset}-{k}" not in done}
    report = {"source": dataset, "source_folder": cfg.source, "items": n_items, "items_written": len(done),
              "items_failed": len(failures), "failures": failures, "examples": n, "splits": dict(splits),
              "modalities": dict(modalities), "audio_hours": round(seconds / 3600, 4),
              "skipped": {k: v for k, v in counts.items() if k != "examples"}}
    write_report(out, report)
    return report


# ------------------------------------------------------------------------------------------------ images
def normalize_image(image: np.ndarray, cfg: ImportConfig, name: str) -> tuple[np.ndarray, float]:
    """Scale a system image so its staff height is ``cfg.staff_height_px``, trim to ink + ``pad_px``.

    Returns the image and the staff height measured in the source; raises ``ValueError`` if no staff."""
    from musicmoe.data.ytsv.detect import binarize, measure_staff_height, normalize_system, to_gray

    gray = to_gray(image)
    staff = measure_staff_height(gray)
    if staff <= 0:
        raise ValueError(f"{name}: no five-line staff found")
    ink = binarize(gray)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    gray = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    return normalize_system(gray, staff, cfg.staff_height_px, cfg.pad_px), staff


def read_image(path: Path) -> np.ndarray:
    """Gray uint8 image of a file; ``ValueError`` naming it when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from None


# ------------------------------------------------------------------------------------------------- audio
def segment_spans(duration: float, cfg: ImportConfig) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the segments of a recording of ``duration`` seconds."""
    hop = cfg.hop_seconds or cfg.segment_seconds
    spans = []
    t = 0.0
    while t < duration:
        end = min(t + cfg.segment_seconds, duration)
        if end - t >= max(cfg.min_segment_seconds, 1e-3):
            spans.append((round(t, 6), round(end, 6)))
        t += hop
    return spans


def read_audio_span(path: Path, t0: float, t1: float, sample_rate: int, margin: float = 0.05) -> np.ndarray:
    """Mono float32 audio of ``[t0, t1)`` from a sound file, resampled to ``sample_rate`` with
    ``scipy.signal.resample_poly`` (a little context on each side is read and cut away afterwards, so
    segment edges carry no filter transients)."""
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly

    with sf.SoundFile(str(path)) as fh:
        sr = fh.samplerate
        a = max(0, int(round((t0 - margin) * sr)))
        b = min(fh.frames, int(round((t1 + margin) * sr)))
        fh.seek(a)
        data = fh.read(b - a, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if sr != sample_rate:
        g = gcd(int(sr), int(sample_rate))
        mono = resample_poly(mono, sample_rate // g, sr // g).astype(np.float32)
    lead = int(round((t0 - a / sr) * sample_rate))
    n = int(round((t1 - t0) * sample_rate))
    out = mono[lead: lead + n]
    if len(out) < n:  # the file ended early: pad with silence to keep the span's length
        out = np.pad(out, (0, n - len(out)))
    return np.ascontiguousarray(out, dtype=np.float32)


def cut_midi(pm: Any, t0: float, t1: float) -> Any:
    """Notes of ``pm`` with onsets in ``[t0, t1)``, clipped at ``t1`` and shifted so ``t0`` is time 0 (the
    corpus convention: a note belongs to the segment where it starts); a text event marks the end so
    ``get_end_time() == t1 - t0``."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    for inst in pm.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        for n in inst.notes:
            if t0 <= n.start < t1:
                end = min(n.end, t1) - t0
                start = n.start - t0
                if end - start >= 1e-3:
                    new.notes.append(pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=start, end=end))
        out.instruments.append(new)
    out.text_events.append(pretty_midi.Text(END_MARKER, t1 - t0))
    return out


def apply_sustain(pm: Any, threshold: int = 64) -> Any:
    """Extend note ends to the sustain pedal's release (CC 64 >= ``threshold`` is down), per instrument,
    as transcription targets usually are; a re-struck pitch ends the held note.  Modifies ``pm``."""
    for inst in pm.instruments:
        pedal = sorted((cc.time, cc.value >= threshold) for cc in inst.control_changes if cc.number == 64)
        if not pedal:
            continue
        downs: list[tuple[float, float]] = []
        start = None
        for t, down in pedal:
            if down and start is None:
                start = t
            elif not down and start is not None:
                downs.append((start, t))
                start = None
        if start is not None:
            downs.append((start, float("inf")))
        notes = sorted(inst.notes, key=lambda n: (n.start, n.pitch))
        for n in notes:
            for a, b in downs:
                if a <= n.end < b:
                    n.end = max(n.end, min(b, pm.get_end_time()))
                    break
        by_pitch: dict[int, list] = {}
        for n in notes:
            by_pitch.setdefault(n.pitch, []).append(n)
        for same in by_pitch.values():
            for cur, nxt in zip(same, same[1:]):
                if cur.end > nxt.start:
                    cur.end = max(cur.start + 1e-3, nxt.start)
    return pm


def midi_notes(pm: Any) -> int:
    return sum(len(i.notes) for i in pm.instruments)


def read_index(path: Path) -> list[str]:
    """Lines of a split index file (``samples.train.txt``), stripped, without empties and extensions."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def require(root: Path, names: Sequence[str], dataset: str, hint: str) -> None:
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise DatasetLayoutError(f"{root} does not look like {dataset}: missing {', '.join(missing)} ({hint})")
