"""The YTSV stages: ingest -> download -> segment -> detect -> write, each resumable and parallel.

Work folder layout (``cfg.work``)::

    videos.jsonl                 the selected videos (ingest), one VideoMeta per line, sorted by id
    ingest.json                  what ingest read, kept and skipped
    videos/<id>.<ext>            downloaded (or user-provided) videos (``cfg.videos`` overrides the folder)
    segments/<id>/pages.json     segmentation of a video; page_<k>.png (gray frame), page_<k>.flac (audio)
    systems/<id>.json            detected systems per page
    status/<stage>/<id>.json     the last outcome of a stage for a video: ok, or failed with the reason
    reports/<stage>-<i>of<n>.json  counts of one run of a stage (one file per array task)

A stage skips the videos whose output exists (so a re-run never redoes finished work) and retries those
that failed before.  Outputs appear atomically (a temporary name renamed when complete).  With
``shard_index``/``num_shards`` (default: the SLURM array task) a stage takes every n-th video only.
The ``write`` stage fills ``cfg.out`` with one shard per video (``ytsv-<id>``): one example per page,
image = the page's systems cropped, scaled to ``staff_height_px`` and stacked top to bottom, audio = the
page's audio; the split is by video id (``split_fractions``, salted with ``seed``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from musicmoe.data.loaders.jobs import (
    corpus_lock,
    read_json,
    resolve_shard,
    run_items,
    select_shard,
    write_json_atomic,
)
from musicmoe.data.ytsv.config import YtsvConfig
from musicmoe.data.ytsv.media import VIDEO_SUFFIXES, find_video
from musicmoe.data.ytsv.metadata import VideoMeta, filter_videos, read_metadata

log = logging.getLogger(__name__)
STAGES = ("download", "segment", "detect", "write")
VIDEOS_FILE = "videos.jsonl"
PAGES_FILE = "pages.json"


class PipelineError(RuntimeError):
    """A stage cannot start (e.g. ingest has not run); the message says what to do."""


class ItemError(RuntimeError):
    """One video failed a stage; the message is its reason in the reports."""

    plain_reason = True


# --------------------------------------------------------------------------------------------- workspace
@dataclass
class Workspace:
    cfg: YtsvConfig

    @property
    def root(self) -> Path:
        return Path(self.cfg.work)

    @property
    def videos_dir(self) -> Path:
        return Path(self.cfg.videos) if self.cfg.videos else self.root / "videos"

    def segments_dir(self, yt_id: str) -> Path:
        return self.root / "segments" / yt_id

    def systems_path(self, yt_id: str) -> Path:
        return self.root / "systems" / f"{yt_id}.json"

    def status_path(self, stage: str, yt_id: str) -> Path:
        return self.root / "status" / stage / f"{yt_id}.json"

    def status(self, stage: str, yt_id: str) -> dict[str, Any] | None:
        return read_json(self.status_path(stage, yt_id))

    def set_status(self, stage: str, yt_id: str, ok: bool, **info: Any) -> None:
        write_json_atomic(self.status_path(stage, yt_id),
                          {"ok": ok, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})

    def videos(self) -> list[VideoMeta]:
        path = self.root / VIDEOS_FILE
        if not path.is_file():
            raise PipelineError(f"{path} does not exist: run "
                                f"`musicmoe ytsv ingest METADATA.csv --work {self.root}` first")
        with open(path) as fh:
            return [VideoMeta.from_json(json.loads(line)) for line in fh if line.strip()]

    def done(self, stage: str, yt_id: str) -> bool:
        """Whether the stage's output for the video exists (the test for skipping it)."""
        if stage == "download":
            return find_video(self.videos_dir, yt_id) is not None
        if stage == "segment":
            return (self.segments_dir(yt_id) / PAGES_FILE).is_file()
        if stage == "detect":
            return self.systems_path(yt_id).is_file()
        if stage == "write":
            from musicmoe.data.shards import shard_done

            return shard_done(self.cfg.out, shard_name(yt_id))
        raise ValueError(f"unknown stage {stage!r}")


def shard_name(yt_id: str) -> str:
    return f"ytsv-{yt_id}"


# ------------------------------------------------------------------------------------------------ ingest
def ingest(csv_path: str | Path, cfg: YtsvConfig) -> dict[str, Any]:
    """Read the metadata CSV, apply the filters and write ``videos.jsonl`` + ``ingest.json``."""
    videos, problems = read_metadata(csv_path)
    selected = filter_videos(videos, cfg.categories, cfg.instrumentations, cfg.min_staves, cfg.max_staves,
                             cfg.ids, cfg.max_duration_s)
    selected.sort(key=lambda v: v.yt_id)
    if cfg.limit:
        selected = selected[: cfg.limit]
    ws = Workspace(cfg)
    ws.root.mkdir(parents=True, exist_ok=True)
    tmp = ws.root / f".{VIDEOS_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        for v in selected:
            fh.write(json.dumps(v.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(ws.root / VIDEOS_FILE)
    report = {
        "metadata": str(csv_path), "rows_read": len(videos), "rows_skipped": len(problems),
        "problems": problems[:50], "selected": len(selected),
        "selected_hours": round(sum(v.duration_s for v in selected) / 3600, 2),
        "filters": {"categories": cfg.categories, "instrumentations": cfg.instrumentations,
                    "min_staves": cfg.min_staves, "max_staves": cfg.max_staves, "ids": len(cfg.ids),
                    "max_duration_s": cfg.max_duration_s, "limit": cfg.limit},
    }
    write_json_atomic(ws.root / "ingest.json", report)
    return report


# ------------------------------------------------------------------------------------------------ stages
def _download_one(yt_id: str, cfg: YtsvConfig) -> dict[str, Any]:
    ws = Workspace(cfg)
    if (path := find_video(ws.videos_dir, yt_id)) is not None:
        return {"video": str(path), "downloaded": False}
    try:
        import yt_dlp  # type: ignore[import-not-found]
    except ImportError:
        raise ItemError(f"yt-dlp is not installed (pip install 'musicmoe[download]'); or put the video at "
                        f"{ws.videos_dir / (yt_id + '.mp4')}") from None
    ws.videos_dir.mkdir(parents=True, exist_ok=True)
    url = cfg.url_template.format(id=yt_id)
    opts = {
        "format": cfg.download_format, "outtmpl": str(ws.videos_dir / f"{yt_id}.%(ext)s"), "quiet": True,
        "no_warnings": True, "noprogress": True, "noplaylist": True, "socket_timeout": cfg.socket_timeout_s,
        "retries": cfg.download_retries, "fragment_retries": cfg.download_retries, "logger": _QuietLogger(),
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except Exception as err:  # yt-dlp wraps network errors in DownloadError; others are failures too
        text = " ".join(str(err).split()).replace("ERROR: ", "").split(" (caused by ")[0]
        raise ItemError(f"download of {url} failed: {text[:300]}") from None
    path = find_video(ws.videos_dir, yt_id)
    if path is None:
        raise ItemError(f"yt-dlp reported success for {url} but wrote no {'/'.join(VIDEO_SUFFIXES)} file")
    return {"video": str(path), "downloaded": True}


class _QuietLogger:
    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def _segment_one(yt_id: str, cfg: YtsvConfig) -> dict[str, Any]:
    from musicmoe.data.shards import encode_audio, encode_image
    from musicmoe.data.ytsv.segment import segment_video

    ws = Workspace(cfg)
    path = find_video(ws.videos_dir, yt_id)
    if path is None:
        raise ItemError(f"no video file {ws.videos_dir}/{yt_id}.<{'|'.join(s[1:] for s in VIDEO_SUFFIXES)}> "
                        f"(download it with `musicmoe ytsv download` or copy it there)")
    seg = segment_video(path, cfg)
    target = ws.segments_dir(yt_id)
    tmp = target.with_name(f".{yt_id}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pages = []
    for k, p in enumerate(seg.pages):
        assert p.image is not None and p.audio is not None
        (tmp / f"page_{k:04d}.png").write_bytes(encode_image(p.image))
        (tmp / f"page_{k:04d}.flac").write_bytes(encode_audio(p.audio, cfg.sample_rate))
        pages.append({"page": k, "frame": p.frame, "start": round(p.start, 4), "end": round(p.end, 4),
                      "voiced_ratio": round(p.voiced_ratio, 4)})
    info = {"video": path.name, "fps": seg.fps, "frames": seg.frames, "sections": len(seg.sections),
            "dropped_intro": seg.dropped_intro, "dropped_outro": seg.dropped_outro,
            "corrupt_frames": seg.corrupt_frames, "corrupt_audio_packets": seg.corrupt_audio_packets,
            "audio_seconds": round(seg.audio_seconds, 3), "sample_rate": cfg.sample_rate}
    write_json_atomic(tmp / PAGES_FILE, {**info, "pages": pages})
    if target.exists():  # a stale copy without pages.json (cannot happen with atomic renames; be safe)
        shutil.rmtree(target)
    tmp.replace(target)
    return {**info, "pages": len(pages)}


def _load_page_image(ws: Workspace, yt_id: str, k: int) -> np.ndarray:
    from musicmoe.data.shards import decode_image

    path = ws.segments_dir(yt_id) / f"page_{k:04d}.png"
    return decode_image(path.read_bytes(), str(path))


def _detect_one(yt_id: str, cfg: YtsvConfig) -> dict[str, Any]:
    from musicmoe.data.ytsv.detect import get_detector

    ws = Workspace(cfg)
    seg = read_json(ws.segments_dir(yt_id) / PAGES_FILE)
    if seg is None:
        raise ItemError("not segmented yet (run `musicmoe ytsv segment`)")
    detector = get_detector(cfg.detector, **cfg.detector_options)
    pages = []
    for p in seg["pages"]:
        image = _load_page_image(ws, yt_id, p["page"])
        boxes = detector.detect(image)
        pages.append({"page": p["page"], "systems": [b.to_json() for b in boxes]})
    n = sum(len(p["systems"]) for p in pages)
    write_json_atomic(ws.systems_path(yt_id), {"detector": cfg.detector, "pages": pages})
    return {"pages": len(pages), "systems": n, "pages_without_system": sum(not p["systems"] for p in pages)}


def page_image(image: np.ndarray, boxes: list, cfg: YtsvConfig) -> tuple[np.ndarray, list[list[int]]]:
    """The page's systems, each scaled to ``cfg.staff_height_px`` and stacked top to bottom (left aligned,
    ``system_gap_px`` white rows between); returns the image and each system's row span in it."""
    from musicmoe.data.ytsv.detect import crop, normalize_system

    crops = []
    for b in boxes:
        if b.staff_height <= 0:
            continue
        crops.append(normalize_system(crop(image, b), b.staff_height, cfg.staff_height_px, cfg.pad_px))
    if not crops:
        raise ValueError("no system with staff lines")
    width = max(c.shape[1] for c in crops)
    rows: list[list[int]] = []
    parts: list[np.ndarray] = []
    y = 0
    for i, c in enumerate(crops):
        if i:
            parts.append(np.full((cfg.system_gap_px, width), 255, np.uint8))
            y += cfg.system_gap_px
        parts.append(np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=255))
        rows.append([y, y + c.shape[0]])
        y += c.shape[0]
    return np.ascontiguousarray(np.concatenate(parts, axis=0)), rows


def _write_one(yt_id: str, cfg: YtsvConfig, meta: dict[str, Any]) -> dict[str, Any]:
    from musicmoe.data.example import Example
    from musicmoe.data.shards import ShardWriter, decode_audio
    from musicmoe.data.split import split_for
    from musicmoe.data.ytsv.detect import SystemBox

    ws = Workspace(cfg)
    seg = read_json(ws.segments_dir(yt_id) / PAGES_FILE)
    systems = read_json(ws.systems_path(yt_id))
    if seg is None or systems is None:
        raise ItemError("not segmented/detected yet (run `musicmoe ytsv segment` and `detect`)")
    by_page = {p["page"]: [SystemBox.from_json(b) for b in p["systems"]] for p in systems["pages"]}
    split = split_for(yt_id, cfg.split_fractions, salt=f"ytsv:{cfg.seed}")
    counts: Counter = Counter()
    examples = []
    for p in seg["pages"]:
        k = p["page"]
        counts["pages"] += 1
        boxes = by_page.get(k, [])
        try:
            image, rows = page_image(_load_page_image(ws, yt_id, k), boxes, cfg)
        except ValueError:
            counts["pages_without_system"] += 1
            continue
        apath = ws.segments_dir(yt_id) / f"page_{k:04d}.flac"
        audio, sr = decode_audio(apath.read_bytes(), str(apath))
        if sr != cfg.sample_rate:
            raise ItemError(f"{apath} has sample rate {sr}, the config says {cfg.sample_rate}: re-run segment")
        examples.append(Example(
            key=f"{shard_name(yt_id)}-p{k:04d}", piece=shard_name(yt_id), composer=meta.get("composer", ""),
            split=split, system=k, image=image, audio=audio, sample_rate=sr,
            meta={"source": "ytsv", "video_id": yt_id, "page": k, "start_seconds": p["start"],
                  "end_seconds": p["end"], "title": meta.get("piece", ""), "category": meta.get("category", ""),
                  "instrumentation": meta.get("instrumentation", ""), "n_systems": len(rows),
                  "system_rows": rows, "detector": systems.get("detector", ""),
                  "staff_height_px": cfg.staff_height_px, "voiced_ratio": p.get("voiced_ratio", 0.0)},
        ))
        counts["examples"] += 1
    if not examples:
        raise ItemError(f"none of its {counts['pages']} pages has a detected system")
    with ShardWriter(cfg.out, shard_name(yt_id)) as writer:
        for ex in examples:
            writer.add(ex)
    return dict(counts)


# --------------------------------------------------------------------------------------------- running
@dataclass
class StageReport:
    stage: str
    shard: tuple[int, int]
    counts: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "shard_index": self.shard[0], "num_shards": self.shard[1],
                "counts": dict(self.counts), "failures": self.failures}


def run_stage(stage: str, cfg: YtsvConfig, shard_index: int | None = None, num_shards: int | None = None,
              retry_failed: bool = True, progress: bool = True) -> StageReport:
    """Run one stage over this task's share of the videos; returns (and writes) its report."""
    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    ws = Workspace(cfg)
    shard = resolve_shard(shard_index, num_shards)
    videos = select_shard(ws.videos(), *shard)
    report = StageReport(stage, shard)
    todo = []
    for v in videos:
        if ws.done(stage, v.yt_id):
            report.counts["already_done"] += 1
            continue
        last = ws.status(stage, v.yt_id)
        if last is not None and not last.get("ok") and not retry_failed:
            report.counts["failed_before"] += 1
            report.failures[v.yt_id] = last.get("reason", "")
            continue
        todo.append(v)
    fn: Callable[[str], Any]
    if stage == "write":
        metas = {v.yt_id: v.to_json() for v in todo}
        fn = partial(_write_meta, cfg=cfg, metas=metas)
    else:
        fn = partial({"download": _download_one, "segment": _segment_one, "detect": _detect_one}[stage], cfg=cfg)
    for out in run_items(fn, [v.yt_id for v in todo], cfg.workers, desc=f"ytsv {stage}", progress=progress):
        if out.ok:
            report.counts["done"] += 1
            info = out.result or {}
            for key, val in info.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool) and key not in ("fps", "sample_rate"):
                    report.counts[key] += val
            ws.set_status(stage, out.item, True, **info)
        else:
            report.counts["failed"] += 1
            report.failures[out.item] = out.reason
            ws.set_status(stage, out.item, False, reason=out.reason)
            log.warning("ytsv %s %s: %s", stage, out.item, out.reason)
    report.counts = Counter({k: round(v, 3) if isinstance(v, float) else v for k, v in report.counts.items()})
    write_json_atomic(ws.root / "reports" / f"{stage}-{shard[0]}of{shard[1]}.json", report.to_json())
    if stage == "write":
        finish_corpus(cfg)
    return report


def _write_meta(yt_id: str, cfg: YtsvConfig, metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return _write_one(yt_id, cfg, metas.get(yt_id, {}))


def finish_corpus(cfg: YtsvConfig) -> dict[str, Any]:
    """Rebuild the corpus manifest from all shards and write its report and config."""
    out = Path(cfg.out)
    if not (out / "shards").is_dir():
        return {}
    with corpus_lock(out):
        return _finish_corpus(cfg, out)


def _finish_corpus(cfg: YtsvConfig, out: Path) -> dict[str, Any]:
    from musicmoe.config import save_config
    from musicmoe.data.shards import iter_records, write_manifest, write_report

    n = write_manifest(out)
    splits: Counter = Counter()
    seconds = 0.0
    videos: set[str] = set()
    for rec in iter_records(out):
        splits[rec.get("split", "")] += 1
        seconds += float(rec.get("audio_seconds", 0.0))
        videos.add(rec.get("video_id", ""))
    report = {"source": "ytsv", "examples": n, "videos": len(videos), "audio_hours": round(seconds / 3600, 3),
              "splits": dict(splits)}
    write_report(out, report)
    save_config(cfg, out)
    return report


def status_summary(cfg: YtsvConfig) -> dict[str, dict[str, int]]:
    """Per stage: videos done, failed (last try) and pending."""
    ws = Workspace(cfg)
    summary: dict[str, dict[str, int]] = {}
    videos = ws.videos()
    for stage in STAGES:
        c: Counter = Counter()
        for v in videos:
            if ws.done(stage, v.yt_id):
                c["done"] += 1
            elif (st := ws.status(stage, v.yt_id)) is not None and not st.get("ok"):
                c["failed"] += 1
            else:
                c["pending"] += 1
        summary[stage] = {k: c[k] for k in ("done", "failed", "pending")}
    return summary


def run_all(cfg: YtsvConfig, shard_index: int | None = None, num_shards: int | None = None,
            retry_failed: bool = True, progress: bool = True) -> list[StageReport]:
    """download, segment, detect and write, in order (each skipping what is done)."""
    return [run_stage(s, cfg, shard_index, num_shards, retry_failed, progress) for s in STAGES]
