"""Slide segmentation of a score video into pages and their audio, as the U-MusT paper describes.

1. Every ``fps // 3`` frames a frame is converted to grayscale, blurred (Gaussian, sigma 5) and compared
   with the previously checked frame: it *changed* if some pixel differs by more than 10.
2. Runs of checks with the same state are sections: static (the page stands still) or transition.
3. A static section's middle frame is a page image; its audio runs from the section's first frame to the
   last frame of the following transition, both padded by ``fps / 3`` frames; the last page's audio gets
   2 s more.  A transition at the very start or end is dropped.
4. Silent intro and outro pages (title cards, credits) are dropped by loudness: from the front, pages are
   dropped until one has at least 60% non-silent windows (100 windows per page, silent below -50 dBFS);
   from the back, while a page has less than 16%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from musicmoe.data.ytsv.config import YtsvConfig
from musicmoe.data.ytsv.media import iter_frames, read_audio, video_info


class SegmentError(RuntimeError):
    """A video cannot be segmented (no frames, no audio, no page); the message says why."""


@dataclass
class Section:
    start: int      # first frame
    end: int        # last frame (inclusive)
    moving: bool    # a transition (True) or a static section


@dataclass
class Page:
    """A page found in a video: the frame shown, its audio span (seconds) and its share of non-silence."""

    frame: int
    start: float
    end: float
    voiced_ratio: float = 0.0
    image: np.ndarray | None = field(default=None, repr=False)
    audio: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Segmentation:
    pages: list[Page]
    fps: float
    frames: int
    sections: list[Section]
    dropped_intro: int = 0
    dropped_outro: int = 0
    corrupt_frames: int = 0
    corrupt_audio_packets: int = 0
    audio_seconds: float = 0.0


def _prepare(frame: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    return cv2.GaussianBlur(gray, (0, 0), sigma)


def find_sections(path: str | Path, cfg: YtsvConfig, stats: dict | None = None) -> tuple[list[Section], float, int]:
    """Static and transition sections of the video (step 1-2); returns them, the fps and the frame count."""
    import cv2

    info = video_info(path)
    fps = info.fps
    step = max(1, int(fps // cfg.checks_per_second))
    stats = stats if stats is not None else {}
    sections: list[Section] = []
    start, moving = 0, False
    prev: np.ndarray | None = None
    for index, frame in iter_frames(path, lambda i: i % step == 0, stats=stats):
        cur = _prepare(frame, cfg.blur_sigma)
        if prev is None or prev.shape != cur.shape:
            prev = cur
            continue
        diff = cv2.absdiff(cur, prev)
        changed = int(np.count_nonzero(diff > cfg.pixel_threshold)) >= cfg.min_changed_pixels
        if changed != moving:
            sections.append(Section(start, index - 1, moving))
            start, moving = index, changed
        prev = cur
    frames = int(stats.get("frames", 0))
    if frames == 0 or prev is None:
        raise SegmentError(f"no frame could be read from {path}")
    sections.append(Section(start, frames - 1, moving))
    return sections, fps, frames


def pages_from_sections(sections: list[Section], fps: float, frames: int, pad_fraction: float = 1 / 3) -> list[Page]:
    """Step 3 without the audio: each static section's middle frame and padded span (seconds)."""
    secs = list(sections)
    if secs and secs[0].moving:
        secs = secs[1:]
    if secs and secs[-1].moving:
        secs = secs[:-1]
    pad = int(fps * pad_fraction)
    pages: list[Page] = []
    for i in range(0, len(secs), 2):
        static = secs[i]
        if static.moving:  # cannot happen after the trimming above (sections alternate), kept as a guard
            continue
        end = secs[i + 1].end if i + 1 < len(secs) else static.end
        a = max(0, static.start - pad)
        b = min(frames, end + pad)
        pages.append(Page(static.start + (static.end - static.start) // 2, a / fps, b / fps))
    return pages


def voiced_ratio(audio: np.ndarray, silence_dbfs: float, windows: int) -> float:
    """Share of the ``windows`` equal parts of ``audio`` whose RMS level is above ``silence_dbfs``."""
    n = len(audio) // windows
    if n < 1:
        return 0.0
    chunks = audio[: n * windows].reshape(windows, n).astype(np.float64)
    rms = np.sqrt(np.mean(chunks ** 2, axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-12))
    return float(np.mean(level > silence_dbfs))


def _unpadded(pages: list[Page], i: int, pad_s: float) -> tuple[float, float]:
    """Page ``i``'s span without the padding added between pages (the first start and last end keep it)."""
    a = pages[i].start + (pad_s if i > 0 else 0.0)
    b = pages[i].end - (pad_s if i < len(pages) - 1 else 0.0)
    return a, max(a, b)


def drop_silent(pages: list[Page], audio: np.ndarray, sr: int, fps: float,
                cfg: YtsvConfig) -> tuple[list[Page], int, int]:
    """Step 4: drop silent intro and outro pages; returns the kept pages and how many were dropped."""
    pad_s = int(fps * cfg.pad_fraction) / fps
    for i, p in enumerate(pages):
        a, b = _unpadded(pages, i, pad_s)
        p.voiced_ratio = voiced_ratio(audio[int(a * sr): int(b * sr) + 1], cfg.silence_dbfs, cfg.loudness_windows)
    # as in the paper: if no page is loud enough to end the intro, nothing is dropped as intro
    first = next((i for i, p in enumerate(pages) if p.voiced_ratio >= cfg.intro_min_ratio), 0)
    kept = pages[first:]
    last = len(kept)
    while last > 0 and kept[last - 1].voiced_ratio < cfg.outro_min_ratio:
        last -= 1
    return kept[:last], first, len(kept) - last


def segment_video(path: str | Path, cfg: YtsvConfig) -> Segmentation:
    """Pages of a score video with their images (gray) and audio (mono, ``cfg.sample_rate``)."""
    import cv2

    stats: dict = {}
    sections, fps, frames = find_sections(path, cfg, stats)
    corrupt_frames = int(stats.get("corrupt_frames", 0))
    pages = pages_from_sections(sections, fps, frames, cfg.pad_fraction)
    audio = read_audio(path, cfg.sample_rate, stats)
    sr = cfg.sample_rate
    pages, n_intro, n_outro = drop_silent(pages, audio, sr, fps, cfg)
    if not pages:
        raise SegmentError(f"no page with sound found in {path} ({len(sections)} sections)")
    for i, p in enumerate(pages):
        end = p.end + (cfg.last_extra_seconds if i == len(pages) - 1 else 0.0)
        p.end = min(end, len(audio) / sr)
        p.audio = audio[int(round(p.start * sr)): int(round(p.end * sr))].copy()
    wanted = {p.frame: p for p in pages}
    frame_stats: dict = {}
    for index, frame in iter_frames(path, lambda i: i in wanted, stats=frame_stats):
        wanted[index].image = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    missing = [p for p in pages if p.image is None]
    if missing:  # the middle frame itself is corrupt: the page cannot be shown
        pages = [p for p in pages if p.image is not None]
        corrupt_frames += len(missing)
        if not pages:
            raise SegmentError(f"no page frame of {path} could be decoded")
    return Segmentation(pages, fps, frames, sections, n_intro, n_outro, corrupt_frames,
                        int(stats.get("corrupt_audio_packets", 0)), len(audio) / sr)
