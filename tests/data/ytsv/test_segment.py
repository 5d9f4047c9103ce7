"""Slide segmentation on the generated score video: the right pages, audio spans and audio content."""

from __future__ import annotations

import numpy as np
import pytest

from musicmoe.data.ytsv.config import YtsvConfig
from musicmoe.data.ytsv.segment import Section, pages_from_sections, segment_video, voiced_ratio

SR = 24000


@pytest.fixture(scope="module")
def segmentation(score_video):
    return segment_video(score_video.path, YtsvConfig())


def test_pages_are_the_score_pages(score_video, segmentation):
    seg = segmentation
    assert len(seg.pages) == len(score_video.pages) == 3
    assert seg.dropped_intro == 1 and seg.dropped_outro == 1  # the silent title and credits cards
    assert seg.corrupt_frames == 0
    for page, truth in zip(seg.pages, score_video.pages):
        assert page.image.shape == truth.image.shape
        diff = np.abs(page.image.astype(np.int16) - truth.image.astype(np.int16))
        assert diff.mean() < 3.0  # the same page, up to video compression
        others = [np.abs(page.image.astype(np.int16) - o.image.astype(np.int16)).mean()
                  for o in score_video.pages if o is not truth]
        assert min(others) > 3 * diff.mean()


def test_audio_spans(score_video, segmentation, ytsv_tools):
    want = ytsv_tools.expected_spans(score_video)
    shown = score_video.times
    for k, (page, (a, b)) in enumerate(zip(segmentation.pages, want)):
        assert abs(page.start - a) <= 0.5 and abs(page.end - b) <= 0.5, (k, page.start, page.end, a, b)
        # and against what the viewer sees: the span starts near the page's appearance and covers its music
        assert abs(page.start - shown[k + 1]) <= 0.5
        assert page.end >= shown[k + 2]
        assert len(page.audio) == pytest.approx((page.end - page.start) * SR, abs=2)


def test_audio_content_is_aligned(score_video, segmentation):
    """Each page's audio is the video's soundtrack at the page's span (no offset from the AAC delay)."""
    ref = score_video.audio
    for page in segmentation.pages:
        start = int(round(page.start * SR))
        seg = page.audio[: min(len(page.audio), len(ref) - start)]
        lags = range(-240, 241, 12)  # +-10 ms
        corr = [np.corrcoef(seg[1000:-1000], ref[start + lag + 1000: start + lag + len(seg) - 1000])[0, 1]
                for lag in lags]
        best = int(np.argmax(corr))
        assert corr[best] > 0.95
        assert abs(list(lags)[best]) <= 24  # within 1 ms


def test_rules_on_sections():
    # static 0-29, transition 30-34, static 35-89, transition 90-94 (fps 15, pad 5 frames)
    secs = [Section(0, 29, False), Section(30, 34, True), Section(35, 89, False), Section(90, 94, True)]
    pages = pages_from_sections(secs, 15.0, 95)
    assert [p.frame for p in pages] == [14, 62]
    assert pages[0].start == 0.0 and pages[0].end == pytest.approx(39 / 15)
    # the trailing transition is dropped, so the last page ends with its own section (+ pad)
    assert pages[1].start == pytest.approx(30 / 15) and pages[1].end == pytest.approx(94 / 15)
    # a leading transition is dropped
    assert [p.frame for p in pages_from_sections([Section(0, 9, True)] + secs[:3], 15.0, 90)] == [14, 62]


def test_voiced_ratio():
    t = np.arange(SR) / SR
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # -23 dBFS
    half = tone.copy()
    half[SR // 2:] *= 10 ** (-60 / 20)
    assert voiced_ratio(tone, -50, 100) == 1.0
    assert voiced_ratio(half, -50, 100) == pytest.approx(0.5, abs=0.02)
    assert voiced_ratio(np.zeros(SR, np.float32), -50, 100) == 0.0
