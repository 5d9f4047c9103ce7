"""The YTSV stages end to end through the CLI on the generated video, with a missing and a corrupt video,
an unreachable download server, re-runs that redo nothing, and SLURM-array sharding."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from musicmoe.cli.main import main
from musicmoe.data.loaders.jobs import resolve_shard, select_shard
from musicmoe.data.shards import Corpus
from musicmoe.data.split import split_for
from musicmoe.data.ytsv.config import YtsvConfig
from musicmoe.data.ytsv.detect import measure_staff_height
from musicmoe.data.ytsv.metadata import COLUMNS

VID, BROKEN, MISSING = "bwv4-8_test", "corruptvid1", "missingvid1"
NO_NETWORK = ["url_template=http://127.0.0.1:9/{id}", "socket_timeout_s=2", "download_retries=0"]


def _write_csv(path: Path) -> Path:
    rows = [
        [VID, "J.S. Bach - Christ lag in Todes Banden BWV 4.8 (with Score)", "musicmoe", "0:30",
         "Johann Sebastian Bach", "Chorale BWV 4.8", "BWV 4", "quartet", "choir", "False", "False", "False", "True",
         "1707.0", "4-0"],
        [BROKEN, "A broken download", "musicmoe", "4:00", "Nobody", "Nothing", "", "quartet", "choir", "False",
         "False", "False", "True", "", "4-0"],
        [MISSING, "Not downloaded", "musicmoe", "5:00", "Nobody", "Nothing", "", "quartet", "choir", "False",
         "False", "False", "True", "", "4-0"],
        ["UeVecTH-lBU", "Franz Strauss - Nocturno, Op.7 (with Score)", "classicalsheetmusic3472", "6:19",
         "Franz Strauss", "Nocturno", "7", "solo", "horn solo", "False", "False", "True", "False", "", "1-0"],
    ]
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, score_video):
    """Ingest + one full run; returns the folders."""
    base = tmp_path_factory.mktemp("ytsv")
    work, out = base / "work", base / "corpus"
    (work / "videos").mkdir(parents=True)
    shutil.copy(score_video.path, work / "videos" / f"{VID}.mp4")
    rng = np.random.default_rng(1)
    (work / "videos" / f"{BROKEN}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(20000))
    csv_path = _write_csv(base / "ytsv_metadata.csv")
    assert main(["ytsv", "ingest", str(csv_path), "--work", str(work), "--category", "choir"]) == 0
    assert main(["ytsv", "run", "--work", str(work), "--out", str(out), *NO_NETWORK]) == 0
    return base, work, out


def _status(work: Path, stage: str, vid: str) -> dict:
    return json.loads((work / "status" / stage / f"{vid}.json").read_text())


def test_ingest_selects_by_category(built):
    _, work, _ = built
    ids = [json.loads(line)["yt_id"] for line in (work / "videos.jsonl").read_text().splitlines()]
    assert ids == sorted([VID, BROKEN, MISSING])
    report = json.loads((work / "ingest.json").read_text())
    assert report["rows_read"] == 4 and report["selected"] == 3


def test_examples_are_aligned_pages(built, score_video):
    _, work, out = built
    corpus = Corpus(out)
    assert [ex.key for ex in corpus] == [f"ytsv-{VID}-p{k:04d}" for k in range(3)]
    pages = json.loads((work / "segments" / VID / "pages.json").read_text())["pages"]
    split = split_for(VID, YtsvConfig().split_fractions, salt="ytsv:0")
    for ex, page, truth in zip(corpus, pages, score_video.pages):
        assert ex.modalities == ("image", "audio") and ex.sample_rate == 24000 and ex.split == split
        assert ex.composer == "Johann Sebastian Bach" and ex.meta["video_id"] == VID
        # the image holds the page's systems, each at staff height 18
        assert ex.meta["n_systems"] == len(truth.systems)
        for y0, y1 in ex.meta["system_rows"]:
            assert abs(measure_staff_height(ex.image[y0:y1]) - 18) <= 1.0
        # the audio is the page's span
        assert ex.meta["start_seconds"] == page["start"] and ex.meta["end_seconds"] == page["end"]
        assert len(ex.audio) == pytest.approx((page["end"] - page["start"]) * 24000, abs=2)
        start = int(round(page["start"] * 24000))
        ref = score_video.audio[start: start + len(ex.audio)]
        n = min(len(ref), len(ex.audio))
        assert np.corrcoef(ref[:n], ex.audio[:n])[0, 1] > 0.95
    report = json.loads((out / "report.json").read_text())
    assert report["examples"] == 3 and report["videos"] == 1


def test_failures_are_reported_per_video(built):
    _, work, _ = built
    download = json.loads((work / "reports" / "download-0of1.json").read_text())
    assert download["counts"]["already_done"] == 2  # the files the user had: not downloaded again
    miss = _status(work, "download", MISSING)
    assert not miss["ok"]
    try:
        import yt_dlp  # noqa: F401
    except ImportError:  # without the [download] extra the reason says how to get it
        assert "pip install 'musicmoe[download]'" in miss["reason"]
    else:  # a real download attempt against a port nobody listens on: a network failure, reported
        assert f"download of http://127.0.0.1:9/{MISSING} failed" in miss["reason"]
        assert "Connection refused" in miss["reason"]
    assert "no video file" in _status(work, "segment", MISSING)["reason"]
    broken = _status(work, "segment", BROKEN)
    assert not broken["ok"] and BROKEN in broken["reason"]
    seg = json.loads((work / "reports" / "segment-0of1.json").read_text())
    assert seg["counts"]["done"] == 1 and seg["counts"]["failed"] == 2
    assert set(seg["failures"]) == {BROKEN, MISSING}


def test_rerun_redoes_nothing_and_picks_up_new_videos(built, score_video, capsys):
    _, work, out = built
    outputs = [work / "segments" / VID / "pages.json", work / "systems" / f"{VID}.json",
               out / "shards" / f"ytsv-{VID}.tar"]
    before = [p.stat().st_mtime_ns for p in outputs]
    assert main(["ytsv", "run", "--work", str(work), "--out", str(out), *NO_NETWORK]) == 0
    assert [p.stat().st_mtime_ns for p in outputs] == before
    for stage in ("segment", "detect", "write"):
        report = json.loads((work / "reports" / f"{stage}-0of1.json").read_text())
        assert report["counts"]["already_done"] == 1 and "done" not in report["counts"]
    # the user copies the missing video in: only it is processed
    shutil.copy(score_video.path, work / "videos" / f"{MISSING}.mp4")
    assert main(["ytsv", "run", "--work", str(work), "--out", str(out), *NO_NETWORK]) == 0
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert len(Corpus(out)) == 6
    capsys.readouterr()
    assert main(["ytsv", "status", "--work", str(work), "--out", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["write"] == {"done": 2, "failed": 1, "pending": 0}


def test_download_without_yt_dlp(tmp_path, monkeypatch):
    from musicmoe.data.ytsv.pipeline import ingest, run_stage

    csv_path = _write_csv(tmp_path / "meta.csv")
    cfg = YtsvConfig(work=str(tmp_path / "w"), ids=[MISSING])
    ingest(csv_path, cfg)
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # as on a machine without the [download] extra
    report = run_stage("download", cfg, 0, 1, progress=False)
    reason = report.failures[MISSING]
    assert "pip install 'musicmoe[download]'" in reason and f"{MISSING}.mp4" in reason


def test_corrupt_frames_are_skipped_and_counted(tmp_path, ytsv_tools, score_video):
    from musicmoe.data.ytsv.segment import segment_video

    video = ytsv_tools.make_score_video(tmp_path, ".avi", width=480, like=score_video)
    data = bytearray(video.path.read_bytes())
    chunks = ytsv_tools.avi_video_chunks(bytes(data))
    assert len(chunks) == int(round(video.duration * video.fps))
    for frame in (100, 101, 250):  # inside the first and second page's static sections, not their middles
        data[chunks[frame]: chunks[frame] + 2000] = bytes(2000)  # its JPEG headers are gone
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    seg = segment_video(bad, YtsvConfig())
    assert seg.corrupt_frames == 3
    assert len(seg.pages) == 3
    want = ytsv_tools.expected_spans(video)
    for page, (a, b) in zip(seg.pages, want):
        assert abs(page.start - a) <= 0.5 and abs(page.end - b) <= 0.5


def test_slurm_array_sharding(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert resolve_shard(None, None) == (1, 2)
    assert resolve_shard(0, None) == (0, 2)
    assert select_shard(["a", "b", "c", "d", "e"], 1, 2) == ["b", "d"]
    with pytest.raises(ValueError):
        resolve_shard(2, 2)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert resolve_shard(None, None) == (0, 1)


def test_ytsv_corpus_is_training_data(built, tiny_corpus, tmp_path_factory, tmp_path):
    """The written pages tokenize and feed the data module as image <-> audio examples."""
    from musicmoe.config import load_config
    from musicmoe.data.datamodule import TranslationDataModule
    from musicmoe.data.tokenize import tokenize

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for the shared training.fixtures module
    from training.fixtures import ensure_codecs, tiny_overrides

    _, _, out = built
    codecs = ensure_codecs(tiny_corpus, tmp_path_factory.getbasetemp() / "musicmoe_training")
    tokens = tmp_path / "tokens"
    report = tokenize(out, tokens, load_config(None, ["tokenize.workers=0"]), image_codec=codecs["image"],
                      audio_codec=codecs["audio"], progress=False)
    assert report["examples"] == len(Corpus(out)) and not report["encode_failed"]
    split = Corpus(out)[0].split
    cfg = load_config(None, tiny_overrides(tokens, codecs, tmp_path) + [
        "data.tasks.omr=0", "data.tasks.lmx2midi=0", "data.tasks.image2audio=1.0", "data.tasks.audio2image=1.0",
        f"data.train_split={split}", "model.max_src_len=4096", "model.max_tgt_len=4096"])
    dm = TranslationDataModule(cfg)
    assert dm.prepare()["tasks"] == ["image2audio", "audio2image"]
    batch = next(iter(dm.train_dataloader()))
    batch.check(dm.vocab)
    assert int(batch.tgt_mask.sum()) > 100  # whole pages: hundreds of audio frames or image code columns
