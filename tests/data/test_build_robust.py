"""Bad inputs are skipped and reported by name, builds resume and are idempotent, crashes and hangs are contained."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from musicmoe.cli.main import main
from musicmoe.data.builder.config import CorpusConfig
from musicmoe.data.builder.runner import BuildError, build_corpus
from musicmoe.data.builder.sources import music21_corpus_root
from musicmoe.data.shards import SHARD_DIR, Corpus

M21 = music21_corpus_root()
TWO_TUNES_ABC = """X:1
T:First Tune
M:4/4
L:1/8
K:G
GABc d2B2|c2A2 B2G2|GABc d2g2|f2d2 g4|
B2d2 g2fe|d2B2 c2A2|GABc d2B2|A2F2 G4|]

X:2
T:Second Tune
M:3/4
L:1/4
K:D
D F A|d2 c|B A G|F3|E G B|e2 d|c B c|d3|]
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two good scores (one in a composer sub-folder), a corrupt MusicXML, a truncated .mxl, a non-score XML."""
    src = tmp_path / "scores"
    (src / "bach").mkdir(parents=True)
    shutil.copy(M21 / "bach" / "bwv101.7.mxl", src / "bach" / "bwv101.7.mxl")
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "two-parts.xml")
    good = (M21 / "demos" / "two-voices.xml").read_text()
    (src / "corrupt.musicxml").write_text(good[: len(good) // 2])  # cut mid-element: not well-formed
    data = (M21 / "bach" / "bwv1.6.mxl").read_bytes()
    (src / "truncated.mxl").write_bytes(data[: len(data) // 2])
    (src / "page.xml").write_text("<html><body>not a score</body></html>")
    return src


def _shards(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / SHARD_DIR).glob("*.tar")}


def test_bad_inputs_are_reported_and_the_rest_is_built(source, tmp_path, capsys):
    out = tmp_path / "corpus"
    rc = main(["data", "build", "--source", str(source), "--out", str(out), "--workers", "2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    failed = {f["file"]: f["reason"] for f in report["failures"]}
    assert set(failed) == {"corrupt.musicxml", "truncated.mxl", "page.xml"}
    assert "well-formed" in failed["corrupt.musicxml"]
    assert ".mxl" in failed["truncated.mxl"] or "zip" in failed["truncated.mxl"]
    assert "score-partwise" in failed["page.xml"]
    for name in failed:
        assert name in printed  # listed on the console too
    assert report["run"]["files_built"] == 2 and report["run"]["files_failed"] == 3
    corpus = Corpus(out)
    assert {r["piece"] for r in corpus.records} == {"bach_bwv101.7", "two-parts"}
    assert {r["piece"]: r["composer"] for r in corpus.records}["bach_bwv101.7"] == "bach"
    assert len(corpus) >= 4
    assert not list((out / SHARD_DIR).glob(".*"))  # no temporary or half-written shard left
    assert sorted(_shards(out)) == ["bach_bwv101.7.tar", "two-parts.tar"]


def test_resume_skips_done_pieces_and_rebuilds_a_deleted_shard(source, tmp_path):
    out = tmp_path / "corpus"
    cfg = CorpusConfig(source=str(source), out=str(out), workers=2)
    first = build_corpus(cfg, progress=False)
    assert first["run"]["files_built"] == 2
    before = _shards(out)
    n = first["corpus"]["examples"]

    again = build_corpus(cfg, progress=False)
    assert again["run"]["files_built"] == 0 and again["run"]["files_already_built"] == 2
    assert again["run"]["files_failed"] == 3  # bad files are retried, and fail again
    assert _shards(out) == before  # nothing rewritten
    assert again["corpus"]["examples"] == n

    victim = out / SHARD_DIR / "two-parts.tar"
    original = victim.read_bytes()
    victim.unlink()
    third = build_corpus(cfg, progress=False)
    assert third["run"]["files_built"] == 1 and third["run"]["files_already_built"] == 1
    assert victim.read_bytes() == original  # idempotent: the same bytes again
    assert _shards(out)["bach_bwv101.7.tar"] == before["bach_bwv101.7.tar"]
    assert len(Corpus(out)) == n


def test_changed_content_settings_refuse_to_mix(tmp_path, capsys):
    src = tmp_path / "scores"
    src.mkdir()
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "two-parts.xml")
    out = tmp_path / "corpus"
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--quiet"]) == 0
    rc = main(["data", "build", "--source", str(src), "--out", str(out), "--quiet", "staff_height_px=20"])
    assert rc == 2
    assert "staff_height_px" in capsys.readouterr().err
    # settings that do not change shards (workers, limit) may differ
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--quiet", "--workers", "1"]) == 0


def test_opus_file_gives_one_piece_per_tune(tmp_path):
    src = tmp_path / "scores"
    src.mkdir()
    (src / "tunes.abc").write_text(TWO_TUNES_ABC)
    report = build_corpus(CorpusConfig(source=str(src), out=str(tmp_path / "c"), workers=1), progress=False)
    assert report["failures"] == []
    corpus = Corpus(tmp_path / "c")
    assert {r["piece"] for r in corpus.records} == {"tunes-1", "tunes-2"}
    assert {r["title"] for r in corpus.records} == {"First Tune", "Second Tune"}
    assert all(r["composer"] == "" for r in corpus.records)  # music21's placeholder creator is ignored
    second = next(corpus[i] for i, r in enumerate(corpus.records) if r["piece"] == "tunes-2")
    assert second.lmx.count("measure") == second.measures[1] - second.measures[0] + 1
    assert second.midi.get_end_time() == pytest.approx(8 * 3 * 0.5, abs=0.01)  # 8 bars of 3/4 at 120 bpm


def test_hung_piece_is_killed_and_reported(tmp_path, monkeypatch):
    """A file that stops making progress is killed after the timeout; the others are built."""
    from musicmoe.data.builder import runner

    src = tmp_path / "scores"
    src.mkdir()
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "a.xml")
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "b.xml")
    real = runner.build_file

    def hang_on_b(piece, cfg, out, heartbeat=None):
        if piece.rel == "b.xml":
            time.sleep(3600)
        return real(piece, cfg, out, heartbeat)

    monkeypatch.setattr(runner, "build_file", hang_on_b)  # forked workers inherit the patch
    out = tmp_path / "c"
    t0 = time.monotonic()
    report = build_corpus(CorpusConfig(source=str(src), out=str(out), workers=2, piece_timeout_s=3), progress=False)
    assert time.monotonic() - t0 < 60
    assert [(f["file"], f["reason"]) for f in report["failures"]] == [("b.xml", "timed out after 3 s")]
    assert sorted(p.name for p in (out / SHARD_DIR).glob("*.tar")) == ["a.tar"]
    assert not list((out / SHARD_DIR).glob(".*"))


def test_crashing_worker_is_contained(tmp_path, monkeypatch):
    """A worker killed by a signal (as verovio would on a segfault) costs only its file."""
    from musicmoe.data.builder import runner

    src = tmp_path / "scores"
    src.mkdir()
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "a.xml")
    shutil.copy(M21 / "demos" / "two-parts.xml", src / "b.xml")
    real = runner.build_file

    def crash_on_b(piece, cfg, out, heartbeat=None):
        if piece.rel == "b.xml":
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(piece, cfg, out, heartbeat)

    monkeypatch.setattr(runner, "build_file", crash_on_b)  # forked workers inherit the patch
    report = build_corpus(CorpusConfig(source=str(src), out=str(tmp_path / "c"), workers=2), progress=False)
    assert [(f["file"], f["reason"]) for f in report["failures"]] == [("b.xml", "worker crashed (killed by signal 11)")]
    assert report["run"]["files_built"] == 1
    assert {r["piece"] for r in Corpus(tmp_path / "c").records} == {"a"}


def test_bad_source_is_a_clear_error(tmp_path):
    with pytest.raises(BuildError, match="neither 'music21' nor an existing folder"):
        build_corpus(CorpusConfig(source=str(tmp_path / "missing"), out=str(tmp_path / "c")), progress=False)
    with pytest.raises(BuildError, match="no composer folder"):
        build_corpus(CorpusConfig(composers=["nobody"], out=str(tmp_path / "c")), progress=False)
