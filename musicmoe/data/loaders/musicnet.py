"""MusicNet (330 recordings of classical music with aligned note labels) into corpus shards.

Published layout::

    ROOT/train_data/<id>.wav     ROOT/train_labels/<id>.csv
    ROOT/test_data/<id>.wav      ROOT/test_labels/<id>.csv
    ROOT/musicnet_metadata.csv   (optional: id, composer, composition, movement, ensemble, ...)

A label file has one note per row: ``start_time,end_time,instrument,note,start_beat,end_beat,note_value``
with times in samples at 44.1 kHz and ``instrument`` a 1-based General MIDI program (1 piano, 41 violin,
42 viola, 43 cello, 61 horn, 69 oboe, 71 bassoon, 72 clarinet, 74 flute).  The labels become a MIDI with
one instrument per program (velocity ``cfg.velocity``: MusicNet has none), then each recording is cut into
segments like MAESTRO.  Test recordings are ``test``; a hash of the id moves ``valid_fraction`` of the
train recordings to ``valid``.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterator

from musicmoe.data.example import Example
from musicmoe.data.loaders.common import DatasetLayoutError, ImportConfig, Item, ItemError, safe_id
from musicmoe.data.loaders.maestro import segment_recording
from musicmoe.data.split import split_for

LABEL_COLUMNS = ("start_time", "end_time", "instrument", "note")


def labels_to_midi(path: Path, label_rate: int, velocity: int, counts: Counter):
    """PrettyMIDI of a MusicNet label file; malformed rows are skipped and counted."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    instruments: dict[int, pretty_midi.Instrument] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ItemError(f"{path} is missing column(s) {', '.join(missing)}")
        for row in reader:
            try:
                start, end = int(row["start_time"]) / label_rate, int(row["end_time"]) / label_rate
                program, pitch = int(row["instrument"]) - 1, int(row["note"])
                if not (0 <= program < 128 and 0 <= pitch < 128 and end > start >= 0):
                    raise ValueError
            except (ValueError, TypeError):
                counts["labels_bad_rows"] += 1
                continue
            inst = instruments.get(program)
            if inst is None:
                inst = instruments[program] = pretty_midi.Instrument(program=program,
                                                                     name=pretty_midi.program_to_instrument_name(program))
            inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    pm.instruments = [instruments[p] for p in sorted(instruments)]
    for inst in pm.instruments:
        inst.notes.sort(key=lambda n: (n.start, n.pitch))
    return pm


def read_metadata(root: Path) -> dict[str, dict[str, str]]:
    path = root / "musicnet_metadata.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row.get("id", "").strip(): row for row in csv.DictReader(fh)}


class MusicNetLoader:
    name = "musicnet"

    def items(self, cfg: ImportConfig) -> list[Item]:
        root = Path(cfg.source)
        parts = [("train", root / "train_data", root / "train_labels"),
                 ("test", root / "test_data", root / "test_labels")]
        if not any(d.is_dir() for _, d, _ in parts):
            raise DatasetLayoutError(f"{root} does not look like MusicNet: no train_data/ or test_data/ folder")
        meta = read_metadata(root)
        items = []
        for kind, data, labels in parts:
            if not data.is_dir():
                continue
            for wav in sorted(data.glob("*.wav")):
                rid = wav.stem
                items.append(Item(safe_id(rid), {"id": rid, "kind": kind, "wav": str(wav.relative_to(root)),
                                                 "labels": str((labels / f"{rid}.csv").relative_to(root)),
                                                 "meta": meta.get(rid, {})}))
        if not items:
            raise DatasetLayoutError(f"{root}: no .wav recordings in train_data/ or test_data/")
        return items

    def convert(self, item: Item, cfg: ImportConfig, counts: Counter) -> Iterator[Example]:
        root = Path(cfg.source)
        labels = root / item.data["labels"]
        if not labels.is_file():
            raise ItemError(f"missing label file {labels}")
        pm = labels_to_midi(labels, cfg.label_sample_rate, cfg.velocity, counts)
        if not pm.instruments:
            raise ItemError(f"no usable note in {labels}")
        if item.data["kind"] == "test":
            split = "test"
        else:
            split = split_for(item.data["id"], (1 - cfg.valid_fraction, cfg.valid_fraction, 0.0),
                              salt=f"musicnet:{cfg.seed}")
        info = item.data.get("meta", {})
        meta = {"recording": item.data["wav"], "title": " ".join(x for x in (info.get("composition", ""),
                                                                             info.get("movement", "")) if x),
                "ensemble": info.get("ensemble", ""), "programs": [i.program for i in pm.instruments]}
        yield from segment_recording(item, root / item.data["wav"], pm, cfg, counts, cfg.name or self.name,
                                     split, info.get("composer", ""), meta)
