"""A real score-following video made here: a Bach chorale (music21's bwv4.8) engraved by verovio into three
pages, its MIDI synthesized, a silent title card before and a silent credits card after, each page held
while its music plays with 0.2 s cross-fades, written as mp4 (MPEG-4 + AAC) with the audio muxed in."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

FPS = 15
FADE = 0.2
SR = 24000
INTRO = 3.0
OUTRO = 3.0


@dataclass
class ScoreVideo:
    path: Path
    pages: list            # RenderedPage of the three music pages (images exactly as shown)
    frames: list[np.ndarray]  # everything shown: title card, pages, credits card
    times: list[float]     # when each of ``frames`` appears
    audio: np.ndarray      # the muxed audio (24 kHz)
    fps: int = FPS
    fade: float = FADE

    @property
    def duration(self) -> float:
        return len(self.audio) / SR


def _even(img: np.ndarray) -> np.ndarray:
    return img[: img.shape[0] - img.shape[0] % 2, : img.shape[1] - img.shape[1] % 2]


def make_score_video(folder: Path, suffix: str = ".mp4", width: int = 800,
                     like: ScoreVideo | None = None) -> ScoreVideo:
    """Render, synthesize and write the video; ``like`` reuses another video's pages and audio (scaled to
    ``width``) and only writes a new file."""
    if like is not None:
        import cv2

        from musicmoe.data.ytsv.synthetic import write_score_video

        scale = width / like.frames[0].shape[1]
        frames = [_even(cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)) for f in like.frames]
        path = write_score_video(folder / f"{like.path.stem}{suffix}", frames, like.times, like.audio, SR,
                                 fps=like.fps, fade=like.fade)
        return ScoreVideo(path, like.pages, frames, like.times, like.audio, like.fps, like.fade)

    return _render_score_video(folder, suffix, width)


def _render_score_video(folder: Path, suffix: str, width: int) -> ScoreVideo:
    import pretty_midi
    from music21 import corpus

    from musicmoe.data.synth import synthesize
    from musicmoe.data.ytsv.synthetic import card, render_pages, write_score_video

    pages, midi = render_pages(corpus.getWork("bach/bwv4.8"), width_px=width, page_width=1500, page_height=2000)
    for p in pages:
        p.image = _even(p.image)
    with warnings.catch_warnings():  # verovio writes its tempo on the staff tracks; it is constant here
        warnings.simplefilter("ignore", RuntimeWarning)
        pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    music = synthesize(pm, SR)
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(int(INTRO * SR), np.float32), music, np.zeros(int(OUTRO * SR), np.float32)])
    audio += rng.normal(0, 10 ** (-70 / 20), len(audio)).astype(np.float32)  # room noise, far below -50 dBFS
    shape = pages[0].image.shape
    frames = [card("J. S. Bach - BWV 4.8", shape), *[p.image for p in pages], card("Thanks for watching", shape)]
    times = [0.0, *[INTRO + p.start_seconds for p in pages], INTRO + len(music) / SR]
    path = write_score_video(folder / f"bwv4-8_test{suffix}", frames, times, audio, SR, fps=FPS, fade=FADE)
    return ScoreVideo(path, pages, frames, times, audio)


@pytest.fixture(scope="session")
def score_video(tmp_path_factory) -> ScoreVideo:
    return make_score_video(tmp_path_factory.mktemp("video"))


def avi_video_chunks(data: bytes) -> list[int]:
    """Offsets of the JPEG data of each video frame in an AVI (chunks ``00dc`` holding a JPEG)."""
    out = []
    i = data.find(b"00dc")
    while i >= 0:
        if data[i + 8: i + 10] == b"\xff\xd8":
            out.append(i + 8)
        i = data.find(b"00dc", i + 4)
    return out


def expected_spans(video: ScoreVideo, pad_fraction: float = 1 / 3, extra: float = 2.0) -> list[tuple[float, float]]:
    """The audio spans the paper's rule gives for the music pages, worked out from the schedule alone.

    What is shown at time t is page k, or a blend of pages j and j+1 inside a fade; a check (every
    fps // 3 frames) sees a change when the shown content differs from the previous check's."""
    fps, step = video.fps, video.fps // 3
    bounds = video.times[1:]

    def shown(t: float) -> float:
        for j, b in enumerate(bounds):
            if abs(t - b) < video.fade / 2:
                return j + (t - (b - video.fade / 2)) / video.fade
        return float(np.searchsorted(video.times, t, side="right") - 1)

    n = int(round(video.duration * fps))
    sections, start, moving = [], 0, False
    for i in range(step, n, step):
        changed = abs(shown(i / fps) - shown((i - step) / fps)) > 1e-6
        if changed != moving:
            sections.append((start, i - 1, moving))
            start, moving = i, changed
    sections.append((start, n - 1, moving))
    static = [k for k, s in enumerate(sections) if not s[2]]
    pad = int(fps * pad_fraction)
    spans = []
    for k in static[1:-1]:  # the title and credits cards are dropped as silent
        a = sections[k][0] - pad
        nxt = sections[k + 1][1] if k + 1 < len(sections) else sections[k][1]
        spans.append((a / fps, (nxt + pad) / fps))
    s, e = spans[-1]
    spans[-1] = (s, min(e + extra, video.duration))
    return spans


@pytest.fixture(scope="session")
def ytsv_tools() -> SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not importable in importlib mode)."""
    return SimpleNamespace(make_score_video=make_score_video, expected_spans=expected_spans,
                           avi_video_chunks=avi_video_chunks)
