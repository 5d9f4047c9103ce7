"""MAESTRO (v1-v3: piano performances, aligned MIDI and audio) into corpus shards.

Published layout::

    ROOT/maestro-v3.0.0.csv      canonical_composer, canonical_title, split, year, midi_filename,
                                 audio_filename, duration (paths relative to ROOT, e.g. 2018/<name>.midi)
    ROOT/<year>/<name>.midi, ROOT/<year>/<name>.wav

One shard per performance; each is cut into ``segment_seconds`` pieces: audio resampled to 24 kHz mono,
MIDI with time 0 at the segment start (notes belong to the segment they start in, sustain pedal applied
to note ends when ``sustain``).  Split ``validation`` becomes ``valid``.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterator

from musicmoe.data.example import Example
from musicmoe.data.loaders.common import (
    DatasetLayoutError,
    ImportConfig,
    Item,
    ItemError,
    apply_sustain,
    cut_midi,
    midi_notes,
    read_audio_span,
    safe_id,
    segment_spans,
)

COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration")
SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def find_csv(root: Path) -> Path:
    found = sorted(root.glob("maestro-v*.csv"))
    if not found:
        raise DatasetLayoutError(f"{root} does not look like MAESTRO: no maestro-v*.csv (e.g. maestro-v3.0.0.csv)")
    return found[-1]


def audio_duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def segment_recording(item: Item, audio: Path, pm, cfg: ImportConfig, counts: Counter, prefix: str,
                      split: str, composer: str, meta: dict) -> Iterator[Example]:
    """Examples of one recording cut into segments (shared with MusicNet)."""
    import numpy as np

    try:
        duration = audio_duration(audio)
    except Exception as err:  # soundfile raises RuntimeError/LibsndfileError on corrupt files
        raise ItemError(f"unreadable audio {audio}: {err}") from None
    midi_end = pm.get_end_time()
    if midi_end > duration + 1.0:
        counts["recordings_midi_longer_than_audio"] += 1
    written = 0
    for k, (t0, t1) in enumerate(segment_spans(duration, cfg)):
        counts["segments"] += 1
        midi = cut_midi(pm, t0, t1)
        if cfg.skip_empty and midi_notes(midi) == 0:
            counts["segments_empty"] += 1
            continue
        try:
            seg = read_audio_span(audio, t0, t1, cfg.sample_rate)
        except Exception as err:  # a corrupt block in the file
            counts["segments_bad_audio"] += 1
            if counts["segments_bad_audio"] > 3:
                raise ItemError(f"unreadable audio {audio}: {err}") from None
            continue
        if not np.isfinite(seg).all():
            counts["segments_bad_audio"] += 1
            continue
        written += 1
        yield Example(key=f"{prefix}-{item.id}-{k:04d}", piece=f"{prefix}-{item.id}", composer=composer,
                      split=split, system=k, midi=midi, audio=seg, sample_rate=cfg.sample_rate,
                      meta={"source": prefix, "start_seconds": t0, "end_seconds": t1, **meta})
    if not written:
        raise ItemError(f"no usable segment ({dict(counts)})")


class MaestroLoader:
    name = "maestro"

    def items(self, cfg: ImportConfig) -> list[Item]:
        root = Path(cfg.source)
        path = find_csv(root)
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetLayoutError(f"{path} is missing column(s) {', '.join(missing)}; MAESTRO's CSV has "
                                         f"{', '.join(COLUMNS)}")
            rows = list(reader)
        items = []
        seen: set[str] = set()
        for row in rows:
            item_id = safe_id(Path(row["midi_filename"]).with_suffix("").as_posix())
            if item_id in seen:
                continue
            seen.add(item_id)
            items.append(Item(item_id, dict(row)))
        return sorted(items, key=lambda it: it.id)

    def convert(self, item: Item, cfg: ImportConfig, counts: Counter) -> Iterator[Example]:
        import pretty_midi

        root = Path(cfg.source)
        row = item.data
        midi_path, audio_path = root / row["midi_filename"], root / row["audio_filename"]
        for p in (midi_path, audio_path):
            if not p.is_file():
                raise ItemError(f"missing file {p}")
        try:
            pm = pretty_midi.PrettyMIDI(str(midi_path))
        except Exception as err:  # mido/pretty_midi raise many types on corrupt MIDI
            raise ItemError(f"unreadable MIDI {midi_path}: {type(err).__name__}: {err}") from None
        if cfg.sustain:
            apply_sustain(pm)
        split = SPLITS.get(row["split"].strip().lower())
        if split is None:
            raise ItemError(f"unknown split {row['split']!r} (expected train, validation or test)")
        meta = {"title": row["canonical_title"], "year": row["year"], "recording": row["audio_filename"]}
        yield from segment_recording(item, audio_path, pm, cfg, counts, cfg.name or self.name, split,
                                     row["canonical_composer"], meta)
