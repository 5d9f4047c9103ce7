"""The tiny corpus (3 Bach chorales built by the real CLI) is truly aligned across its four modalities.

Expectations are computed independently with music21 from the same source files: measure durations at
the score's tempo, and every note (onset, pitch) of the system's measures.
"""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from musicmoe.data.shards import Corpus, iter_records

STAFF_PX = 18


def _music21_score(source: str):
    from music21 import corpus

    score = corpus.parse(source, forceSource=True)
    marks = score.flatten().getElementsByClass("MetronomeMark")
    tempo = float(marks[0].getQuarterBPM()) if marks else 120.0
    parts = [list(p.getElementsByClass("Measure")) for p in score.parts]
    return parts, tempo


@pytest.fixture(scope="module")
def examples(tiny_corpus):
    corpus = Corpus(tiny_corpus)
    return [corpus[i] for i in range(len(corpus))]


@pytest.fixture(scope="module")
def scores(examples):
    return {src: _music21_score(src) for src in {ex.meta["source"] for ex in examples}}


def _lmx_measures_per_part(tokens: list[str]) -> list[int]:
    parts: list[list[str]] = [[]]
    for tok in tokens:
        if tok == "part":
            if parts[-1]:
                parts.append([])
            continue
        parts[-1].append(tok)
    return [p.count("measure") for p in parts]


def test_corpus_layout_and_report(tiny_corpus, examples):
    report = json.loads((tiny_corpus / "report.json").read_text())
    assert report["run"]["files_built"] == 3 and report["run"]["files_failed"] == 0
    assert report["failures"] == []
    assert report["corpus"]["examples"] == len(examples) >= 9
    assert sorted({ex.piece for ex in examples}) == ["bach_bwv1.6", "bach_bwv101.7", "bach_bwv103.6"]
    for ex in examples:
        assert ex.key == f"{ex.piece}__s{ex.system:03d}" and "/" not in ex.key
        assert ex.composer == "bach"
        assert ex.modalities == ("image", "lmx", "midi", "audio")
        assert ex.sample_rate == 24000
    # systems of a piece tile its measures exactly, in order
    by_piece: dict[str, list] = {}
    for ex in examples:
        by_piece.setdefault(ex.piece, []).append(ex)
    for piece, exs in by_piece.items():
        exs.sort(key=lambda e: e.system)
        assert exs[0].measures[0] == 0
        for a, b in zip(exs, exs[1:]):
            assert b.measures[0] == a.measures[1] + 1, piece
    assert (tiny_corpus / "config.yaml").is_file()


def test_lmx_measure_count_matches_system(examples, scores):
    for ex in examples:
        first, last = ex.measures
        counts = _lmx_measures_per_part(ex.lmx)
        parts, _ = scores[ex.meta["source"]]
        assert len(counts) == len(parts), ex.key
        assert counts == [last - first + 1] * len(parts), ex.key


def test_midi_duration_and_notes_match_the_measures(examples, scores):
    for ex in examples:
        parts, tempo = scores[ex.meta["source"]]
        first, last = ex.measures
        quarters = sum(Fraction(parts[0][k].duration.quarterLength) for k in range(first, last + 1))
        expected = float(quarters) * 60.0 / tempo
        assert ex.midi.get_end_time() == pytest.approx(expected, abs=0.01), ex.key
        assert ex.meta["duration"] == pytest.approx(expected, abs=0.01)
        # every sounding note of the measures, by onset (seconds from the system start) and pitch
        want: Counter = Counter()
        for measures in parts:
            base = measures[first].offset
            for k in range(first, last + 1):
                m = measures[k]
                for n in m.recurse().notes:
                    if n.tie is not None and n.tie.type in ("stop", "continue"):
                        continue
                    onset = float(m.offset - base + n.getOffsetInHierarchy(m)) * 60.0 / tempo
                    want.update((round(onset, 2), p.midi) for p in n.pitches)
        got = Counter((round(n.start, 2), n.pitch) for inst in ex.midi.instruments for n in inst.notes)
        assert got == want, ex.key
        assert all(n.end <= ex.midi.get_end_time() + 1e-6 for inst in ex.midi.instruments for n in inst.notes)


def test_audio_length_matches_midi(examples):
    for ex in examples:
        audio_s = len(ex.audio) / ex.sample_rate
        assert abs(audio_s - ex.midi.get_end_time()) < 0.05, ex.key
        assert ex.audio.dtype == np.float32 and np.abs(ex.audio).max() > 0.05  # not silent


def test_programs_per_part(examples):
    ex = next(e for e in examples if e.piece == "bach_bwv1.6")
    names = [inst.name for inst in ex.midi.instruments]
    programs = [inst.program for inst in ex.midi.instruments]
    assert names == ["Horn 2", "Soprano", "Alto", "Tenor", "Bass"]
    assert programs == [60, 52, 52, 52, 52]  # French horn, then voices as choir


def _staff_spans(image: np.ndarray) -> list[float]:
    """Top-to-bottom line distance of every five-line staff found in a crop (rows that are ink across most
    of the width are staff lines; a line's position is the darkness-weighted centre of its rows)."""
    ink = image < 250
    width = max(int(ink.any(axis=0).sum()), 1)
    rows = np.flatnonzero(ink.sum(axis=1) / width >= 0.6)
    dark = 255.0 - image.astype(np.float64)
    groups: list[list[int]] = []
    for r in rows:
        if groups and r == groups[-1][-1] + 1:
            groups[-1].append(r)
        else:
            groups.append([r])
    lines = [float(np.average(g, weights=dark[g].sum(axis=1))) for g in groups]
    staves: list[list[float]] = []
    for y in lines:
        if staves and y - staves[-1][-1] <= 6.5:
            staves[-1].append(y)
        else:
            staves.append([y])
    return [s[-1] - s[0] for s in staves if len(s) == 5]


def test_images_have_the_staff_height(examples):
    found = total = 0
    for ex in examples:
        img = ex.image
        assert img.dtype == np.uint8 and img.ndim == 2
        assert img.shape[0] <= 416 and img.shape == tuple(ex.meta["image_shape"])
        assert img.min() < 50 and (img == 255).mean() > 0.5  # black ink on a white page
        spans = _staff_spans(img)
        assert spans, ex.key
        assert all(abs(s - STAFF_PX) < 0.5 for s in spans), (ex.key, spans)
        found += len(spans)
        total += ex.meta["n_staves"]
    assert found >= 0.9 * total


def test_manifest_records_carry_the_metadata(tiny_corpus):
    for rec in iter_records(tiny_corpus):
        for key in ("piece", "composer", "system", "measures", "duration", "image_shape", "lmx_tokens",
                    "audio_seconds", "midi_notes", "n_measures", "tempo_bpm", "split", "source"):
            assert key in rec, key
        assert rec["n_measures"] == rec["measures"][1] - rec["measures"][0] + 1
        assert rec["split"] in ("train", "valid", "test")
