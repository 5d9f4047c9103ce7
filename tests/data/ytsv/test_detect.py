"""The staff-line system detector on rendered pages (truth from verovio's SVG) and its plug-in registry."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from musicmoe.data.ytsv.detect import (
    DetectorError,
    SystemBox,
    available_detectors,
    get_detector,
    match_systems,
    measure_staff_height,
    normalize_system,
    register_detector,
)

BENCH = Path(__file__).resolve().parents[3] / "experiments" / "bench" / "system_detect.py"


def test_bench_on_a_handful_of_pages(capsys):
    """The benchmark script, on a few pages of several composers and layouts (the full run: 300 pages)."""
    bench = runpy.run_path(str(BENCH))
    res = bench["run"](5, per_composer=1, verbose=False, small_first=True, pages_per_piece=1)
    assert res["pages"] == 5
    assert res["page_rate"] >= 0.95, res["failures"]
    assert res["system_recall"] >= 0.95 and res["system_precision"] >= 0.95


def test_staves_and_crops_on_a_page():
    from music21 import corpus

    from musicmoe.data.ytsv.synthetic import render_pages

    pages, _ = render_pages(corpus.getWork("bach/bwv4.8"), width_px=800, page_width=1500, page_height=2000)
    page = pages[0]
    boxes = get_detector("staff").detect(page.image)
    assert len(boxes) == len(page.systems) == 2
    assert match_systems(boxes, [(s.top, s.bottom) for s in page.systems], tol=page.staff_height / 8) == 2
    for box, truth in zip(boxes, page.systems):
        assert len(box.staves) == len(truth.staves) == 4
        assert box.staff_height == pytest.approx(page.staff_height, abs=1.5)
        assert box.y0 < truth.top - page.staff_height / 2 and box.y1 > truth.bottom + page.staff_height / 4
        assert box.x0 <= truth.x0 and box.x1 >= truth.x1 - 2
        crop = normalize_system(page.image[box.y0:box.y1, box.x0:box.x1], box.staff_height)
        assert abs(measure_staff_height(crop) - 18) <= 1.0
    assert boxes[0].y1 <= boxes[1].y0  # crops of neighbouring systems do not overlap
    # a blank page and a page of text have no system
    assert get_detector().detect(np.full((600, 800), 255, np.uint8)) == []
    from musicmoe.data.ytsv.synthetic import card

    assert get_detector().detect(card("Thanks for watching", (600, 800))) == []


def test_grouping_by_gaps_without_system_barlines(tmp_path):
    """Piano systems whose start barlines and braces are erased are grouped by their vertical gaps."""
    from music21 import common

    from musicmoe.data.ytsv.synthetic import render_pages

    text = (Path(common.getCorpusFilePath()) / "bach" / "bwv281.krn").read_text()
    lines = [ln.split("\t") for ln in text.splitlines() if ln and not ln.startswith("!!")]
    krn = tmp_path / "piano.krn"  # bass and soprano of the chorale as a two-staff piano piece
    krn.write_text("\n".join(f"{f[0]}\t{f[3]}" for f in lines) + "\n")
    pages, _ = render_pages(krn, width_px=800, page_width=1300, page_height=2000, max_pages=1, timing=False)
    page = pages[0]
    assert len(page.systems) >= 2 and all(len(s.staves) == 2 for s in page.systems)
    image = page.image.copy()
    sp = page.staff_height / 4
    for s in page.systems:
        image[int(s.top): int(s.bottom) + 1, max(0, int(s.x0 - 3 * sp)): int(s.x0 + 1.5 * sp)] = 255
    truth = [(s.top, s.bottom) for s in page.systems]
    joined_only = get_detector("staff", grouping="connect").detect(image)
    assert len(joined_only) == 2 * len(truth)  # nothing joins the staves any more
    boxes = get_detector("staff").detect(image)  # auto: falls back to the gaps
    assert len(boxes) == len(truth) and match_systems(boxes, truth, tol=sp / 2) == len(truth)


def test_json_roundtrip():
    from music21 import corpus

    from musicmoe.data.ytsv.synthetic import render_pages

    pages, _ = render_pages(corpus.getWork("bach/bwv66.6"), width_px=900, max_pages=1)
    box = get_detector().detect(pages[0].image)[0]
    again = SystemBox.from_json(box.to_json())
    assert again == box


def test_registry_and_plugins():
    assert {"staff", "yolo"} <= set(available_detectors())
    with pytest.raises(DetectorError, match="unknown system detector 'nope'"):
        get_detector("nope")
    with pytest.raises(DetectorError, match="bad options"):
        get_detector("staff", colour="red")

    @register_detector("whole-page")
    class WholePage:
        name = "whole-page"

        def detect(self, image):
            return [SystemBox(0, 0, image.shape[1], image.shape[0])]

    assert get_detector("whole-page").detect(np.zeros((10, 20), np.uint8))[0].x1 == 20


def test_yolo_needs_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as on a machine without it
    with pytest.raises(DetectorError, match="pip install ultralytics"):
        get_detector("yolo", weights="systems.pt")
