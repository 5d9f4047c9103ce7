"""Importers on tiny copies of the published layouts: shards Corpus reads, right modalities, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from musicmoe.data.loaders import DatasetLayoutError, ImportConfig, get_loader, run_import
from musicmoe.data.shards import Corpus
from musicmoe.data.ytsv.detect import measure_staff_height


def _import(name: str, src: Path, out: Path, **kw) -> dict:
    return run_import(get_loader(name), ImportConfig(source=str(src), out=str(out), **kw), 0, 1, progress=False)


def _shard_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}


def test_olimpic(tmp_path, olimpic_dir):
    from musicmoe.codecs.lmx import linearize_score, load_musicxml

    src, systems = olimpic_dir
    out = tmp_path / "olimpic"
    report = _import("olimpic", src, out)
    corpus = Corpus(out)
    assert len(corpus) == 3
    by_key = {ex.key: ex for ex in corpus}
    assert set(by_key) == {"olimpic-1001-p1-s1", "olimpic-1001-p2-s1", "olimpic-1002-p1-s1"}
    for ex in by_key.values():
        assert ex.modalities == ("image", "lmx")
        assert abs(measure_staff_height(ex.image) - 18) <= 1.0  # normalised to the corpus convention
        assert ex.image.dtype == np.uint8 and ex.image.min() < 100 and ex.image.max() == 255
    assert by_key["olimpic-1001-p1-s1"].lmx == systems[0][1]  # the .lmx file, passed through
    # p2-s1 had no .lmx: its MusicXML was linearized by our codec
    fallback = linearize_score(load_musicxml(src / "samples" / "1001" / "p2-s1.musicxml"))
    assert by_key["olimpic-1001-p2-s1"].lmx == fallback
    assert by_key["olimpic-1001-p1-s1"].split == "train" and by_key["olimpic-1002-p1-s1"].split == "test"
    assert report["corpus"]["skipped"]["samples_bad_image"] == 1
    assert report["corpus"]["skipped"]["samples_lmx_from_musicxml"] == 1
    assert json.loads((out / "report.json").read_text())["items_written"] == 2

    before = _shard_mtimes(out)
    again = _import("olimpic", src, out)
    assert again["counts"] == {"items_already_done": 2}
    assert _shard_mtimes(out) == before and len(Corpus(out)) == 3


def test_olimpic_bad_layout(tmp_path):
    (tmp_path / "samples").mkdir()
    with pytest.raises(DatasetLayoutError, match="samples.train.txt"):
        _import("olimpic", tmp_path, tmp_path / "out")


@pytest.mark.parametrize("variant", ["lmx", "original"])
def test_grandstaff(tmp_path, grandstaff_dirs, kern_piece, variant):
    from musicmoe.codecs.lmx import read_lmx

    src = grandstaff_dirs[variant]
    out = tmp_path / variant
    report = _import("grandstaff", src, out, distorted=(variant == "original"))
    corpus = Corpus(out)
    assert len(corpus) == 2
    for ex in corpus:
        assert ex.modalities == ("image", "lmx")
        assert abs(measure_staff_height(ex.image) - 18) <= 1.0
        # one piano part on two staves, as the LMX variant writes GrandStaff's two spines
        assert "part" not in ex.lmx and "staff:1" in ex.lmx and "staff:2" in ex.lmx
        assert ex.lmx.count("measure") == kern_piece[2]  # the measures verovio engraved in the image
    if variant == "lmx":
        assert {ex.split for ex in corpus} == {"train", "valid"}
        assert corpus[0].lmx == read_lmx(src / "bach/chorales/bwv281/original_m-0-4.lmx")
    else:  # no .lmx: the **kern was read by music21 and linearized; images were the distorted ones
        assert report["corpus"]["skipped"]["samples_lmx_from_kern"] == 2
        assert all(ex.meta["image"].endswith("_distorted.jpg") for ex in corpus)
        assert corpus[0].lmx == corpus[1].lmx


def _notes(pm):
    return sorted((round(n.start, 3), n.pitch) for i in pm.instruments for n in i.notes)


def test_maestro(tmp_path, maestro_dir):
    import soundfile as sf
    from scipy.signal import resample_poly

    from musicmoe.data.loaders.common import apply_sustain

    src, pm = maestro_dir
    out = tmp_path / "maestro"
    report = _import("maestro", src, out, segment_seconds=5.0)
    assert report["counts"]["items_failed"] == 1 and "perf_b.wav" in report["failures"]["2017_perf_b"]
    corpus = Corpus(out)
    assert len(corpus) >= 4
    wav, sr = sf.read(src / "2018" / "perf_a.wav", dtype="float32")
    full = resample_poly(wav.mean(axis=1), 240, 441).astype(np.float32)
    sustained = apply_sustain(__import__("copy").deepcopy(pm))
    for ex in corpus:
        t0, t1 = ex.meta["start_seconds"], ex.meta["end_seconds"]
        assert ex.modalities == ("midi", "audio") and ex.sample_rate == 24000 and ex.split == "train"
        assert len(ex.audio) == round((t1 - t0) * 24000)
        assert abs(ex.midi.get_end_time() - (t1 - t0)) < 1e-3
        # MIDI: exactly the notes starting in the segment, time 0 = segment start
        want = [(round(n.start - t0, 3), n.pitch) for i in sustained.instruments for n in i.notes if t0 <= n.start < t1]
        assert _notes(ex.midi) == sorted(want)
        # audio: the recording's own samples at that time (resampled to 24 kHz)
        ref = full[int(round(t0 * 24000)): int(round(t0 * 24000)) + len(ex.audio)]
        inner = slice(100, len(ref) - 100)
        assert np.corrcoef(ref[inner], ex.audio[inner])[0, 1] > 0.99
    # the pedal (down from 2 s to 4 s) holds the first part's notes released meanwhile until 4 s, or until
    # the same pitch is struck again
    orig, held = pm.instruments[0].notes, sustained.instruments[0].notes
    assert any(2.0 <= a.end < 4.0 for a in orig)
    for a, b in zip(orig, held):
        if 2.0 <= a.end < 4.0:
            restrike = min((n.start for n in orig if n.pitch == a.pitch and n.start > a.start), default=9e9)
            assert b.end == pytest.approx(min(4.0, restrike))
        else:
            assert b.end == a.end


def test_musicnet(tmp_path, musicnet_dir):
    src, truth = musicnet_dir
    out = tmp_path / "musicnet"
    report = _import("musicnet", src, out, segment_seconds=8.0, workers=2)  # two items in two processes
    assert report["counts"]["items_done"] == 2
    assert report["corpus"]["skipped"]["labels_bad_rows"] == 1
    corpus = Corpus(out)
    pieces = {ex.piece for ex in corpus}
    assert pieces == {"musicnet-1727", "musicnet-2303"}
    for ex in corpus:
        assert ex.modalities == ("midi", "audio")
        assert sorted(i.program for i in ex.midi.instruments) == [40, 41, 42]
        assert ex.split in (("test",) if ex.piece == "musicnet-2303" else ("train", "valid"))
        assert ex.composer == "Bach"
        t0, t1 = ex.meta["start_seconds"], ex.meta["end_seconds"]
        pm = truth[ex.piece.split("-")[1]]
        want = sorted((round(round(n.start * 44100) / 44100 - t0, 3), n.pitch)
                      for i in pm.instruments for n in i.notes if t0 <= round(n.start * 44100) / 44100 < t1)
        assert _notes(ex.midi) == want


def test_resume_after_failure_and_sharding(tmp_path, maestro_dir):
    """Array tasks split the items; a later run converts only what is missing; failures are retried."""
    src, _ = maestro_dir
    out = tmp_path / "m"
    r0 = run_import(get_loader("maestro"), ImportConfig(source=str(src), out=str(out), segment_seconds=5.0), 0, 2,
                    progress=False)
    r1 = run_import(get_loader("maestro"), ImportConfig(source=str(src), out=str(out), segment_seconds=5.0), 1, 2,
                    progress=False)
    assert r0["items"] == 1 and r1["items"] == 1
    assert r0["counts"].get("items_failed", 0) + r1["counts"].get("items_failed", 0) == 1
    n = len(Corpus(out))
    (src / "2017" / "perf_b.wav").symlink_to(src / "2018" / "perf_a.wav")  # the missing file appears
    try:
        again = _import("maestro", src, out, segment_seconds=5.0)
    finally:
        (src / "2017" / "perf_b.wav").unlink()
    assert again["counts"]["items_already_done"] == 1 and again["counts"]["items_done"] == 1
    assert len(Corpus(out)) == 2 * n
    assert {ex.split for ex in Corpus(out)} == {"train", "valid"}
