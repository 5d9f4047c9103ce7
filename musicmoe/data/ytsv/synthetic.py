"""Score pages and score-following videos made from real scores, with their ground truth.

Used to test and measure the YTSV pipeline on material whose answers are known: verovio engraves a score
into pages (its SVG names every system, so the true staff positions are read from the staff-line paths),
resvg rasterises a page, verovio's timemap says when each page's first measure sounds, and
:func:`write_score_video` writes an mp4 that holds each page for its music (cross-fading between pages)
with the synthesized audio muxed in, as score videos on YouTube do.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

SVG_NS = "http://www.w3.org/2000/svg"
_G = f"{{{SVG_NS}}}g"
_PATH = f"{{{SVG_NS}}}path"
_SVG = f"{{{SVG_NS}}}svg"
_HLINE = re.compile(r"^\s*M\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*L\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*$")
_TRANSLATE = re.compile(r"translate\(\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*\)")
SERIF_FAMILY = "DejaVu Serif"  # resvg draws no text without a serif family it can find


@dataclass
class TrueSystem:
    """A system's staves in page pixels: ``staves`` holds (top line y, bottom line y) per staff."""

    staves: list[tuple[float, float]]
    x0: float
    x1: float
    n_measures: int = 0

    @property
    def top(self) -> float:
        return self.staves[0][0]

    @property
    def bottom(self) -> float:
        return self.staves[-1][1]


@dataclass
class RenderedPage:
    """One engraved page: gray image (white 255), its true systems, and when its music starts (seconds)."""

    image: np.ndarray
    systems: list[TrueSystem]
    start_seconds: float
    measure_ids: list[str] = field(default_factory=list)

    @property
    def staff_height(self) -> float:
        """Median distance between a staff's top and bottom line, in pixels."""
        return float(np.median([b - t for s in self.systems for t, b in s.staves]))


def _classes(el: ET.Element) -> list[str]:
    return el.get("class", "").split()


def _lines(staff: ET.Element) -> list[tuple[float, float, float]]:
    out = []
    for p in staff.findall(_PATH):
        m = _HLINE.match(p.get("d", ""))
        if m and abs(float(m.group(2)) - float(m.group(4))) < 1e-6 and float(m.group(3)) > float(m.group(1)):
            out.append((float(m.group(2)), float(m.group(1)), float(m.group(3))))
    return out


def _page_systems(root: ET.Element, scale: float) -> tuple[list[TrueSystem], list[str]]:
    dx = dy = 0.0
    for g in root.iter(_G):
        if "page-margin" in _classes(g) and (m := _TRANSLATE.search(g.get("transform", ""))):
            dx, dy = float(m.group(1)), float(m.group(2))
    systems: list[TrueSystem] = []
    measures: list[str] = []
    for g in root.iter(_G):
        if "system" not in _classes(g):
            continue
        ids = [e.get("id", "") for e in g.iter(_G) if "measure" in _classes(e)]
        measures += ids
        # staff n of every measure of the system: union of its line extents
        per_staff: dict[str, list[tuple[float, float, float]]] = {}
        for m in (e for e in g.iter(_G) if "measure" in _classes(e)):
            for k, staff in enumerate(e for e in m.iter(_G) if "staff" in _classes(e)):
                per_staff.setdefault(str(k), []).extend(_lines(staff))
        staves = []
        xs0, xs1 = [], []
        for lines in per_staff.values():
            ys = sorted({round(y, 3) for y, _, _ in lines})
            if len(ys) < 2:
                continue
            staves.append(((ys[0] + dy) * scale, (ys[-1] + dy) * scale))
            xs0.append((min(x for _, x, _ in lines) + dx) * scale)
            xs1.append((max(x for _, _, x in lines) + dx) * scale)
        if staves:
            staves.sort()
            systems.append(TrueSystem(staves, min(xs0), max(xs1), len(ids)))
    return systems, measures


def render_pages(score: str | Path, width_px: int = 1280, page_width: int = 2100, page_height: int = 1500,
                 options: dict | None = None, max_pages: int = 0,
                 timing: bool = True) -> tuple[list[RenderedPage], bytes]:
    """Engrave ``score`` (any file verovio reads: .mxl, .musicxml, .krn, .mei ...) into pages of
    ``width_px`` pixels width (the first ``max_pages`` only, if > 0); returns the pages and verovio's MIDI
    (whose time matches ``start_seconds``).  ``timing=False`` skips the timemap and MIDI (faster; start
    times are then 0 and the MIDI empty)."""
    import base64
    import io

    import resvg_py
    import verovio
    from PIL import Image

    verovio.enableLog(verovio.LOG_ERROR)
    tk = verovio.toolkit()
    opts = {"pageWidth": page_width, "pageHeight": page_height, "scale": 100, "header": "none",
            "footer": "none", "breaks": "auto", "adjustPageHeight": False, "xmlIdSeed": 1, "expandNever": True}
    opts.update(options or {})
    tk.setOptions(opts)
    if not tk.loadFile(str(score)):
        raise ValueError(f"verovio could not load {score}")
    onsets: dict[str, float] = {}
    timemap = tk.renderToTimemap({"includeMeasures": True}) if timing else []
    for entry in timemap if isinstance(timemap, list) else []:
        if "measureOn" in entry:
            onsets.setdefault(entry["measureOn"], float(entry.get("tstamp", 0.0)) / 1000.0)
    pages: list[RenderedPage] = []
    n_pages = tk.getPageCount() if max_pages <= 0 else min(max_pages, tk.getPageCount())
    for page_no in range(1, n_pages + 1):
        svg = tk.renderToSVG(page_no)
        root = ET.fromstring(svg)
        inner = next(e for e in root.iter(_SVG) if "definition-scale" in _classes(e))
        view_w = float(inner.get("viewBox", "0 0 1 1").split()[2])
        svg_w = float(root.get("width", "1").removesuffix("px"))
        zoom = width_px / svg_w
        systems, measures = _page_systems(root, svg_w / view_w * zoom)
        png = resvg_py.svg_to_bytes(svg_string=svg, zoom=zoom, background="#ffffff", serif_family=SERIF_FAMILY)
        with Image.open(io.BytesIO(bytes(png))) as im:
            gray = np.asarray(im.convert("L"), dtype=np.uint8)
        start = min((onsets[m] for m in measures if m in onsets), default=0.0)
        pages.append(RenderedPage(gray, systems, start, measures))
    midi = base64.b64decode(tk.renderToMIDI()) if timing else b""
    return pages, midi


def card(text: str, shape: tuple[int, int]) -> np.ndarray:
    """A plain title/credits card (white, one line of text), like the intro and outro of score videos."""
    import cv2

    img = np.full(shape, 255, np.uint8)
    size = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 2.0, 3)[0]
    org = ((shape[1] - size[0]) // 2, (shape[0] + size[1]) // 2)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 2.0, 0, 3, cv2.LINE_AA)
    return img


def write_score_video(path: str | Path, frames: Sequence[np.ndarray], times: Sequence[float], audio: np.ndarray,
                      sample_rate: int, fps: int = 15, fade: float = 0.2, size: tuple[int, int] | None = None) -> Path:
    """Write a video showing ``frames[k]`` from ``times[k]`` to ``times[k+1]`` (the last until the audio
    ends), cross-fading over ``fade`` seconds centred on each change, with ``audio`` muxed in.

    ``.mp4``: MPEG-4 video + AAC audio (like a downloaded video); ``.avi``: Motion-JPEG video (every frame
    stands alone, so single frames can be corrupted in tests) + 16-bit PCM audio."""
    from fractions import Fraction

    import av

    path = Path(path)
    h, w = size or frames[0].shape[:2]
    h, w = h - h % 2, w - w % 2
    pages = [_fit(f, (h, w)) for f in frames]
    total = len(audio) / sample_rate
    n_frames = int(round(total * fps))
    bounds = list(times[1:])
    mjpeg = path.suffix.lower() == ".avi"
    pix = "yuvj420p" if mjpeg else "yuv420p"
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("mjpeg" if mjpeg else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix
        vs.bit_rate = 4_000_000
        vs.codec_context.time_base = Fraction(1, fps)
        as_ = out.add_stream("pcm_s16le" if mjpeg else "aac", rate=sample_rate)
        as_.layout = "mono"
        cache: dict[int, av.VideoFrame] = {}
        for i in range(n_frames):
            t = i / fps
            k = min(max(int(np.searchsorted(times, t, side="right")) - 1, 0), len(pages) - 1)
            frame = None
            for j, b in enumerate(bounds):  # inside a fade window: blend the pages before and after b
                if abs(t - b) < fade / 2:
                    a = (t - (b - fade / 2)) / fade
                    mix = ((1 - a) * pages[j] + a * pages[j + 1]).astype(np.uint8)
                    frame = av.VideoFrame.from_ndarray(mix, format="gray").reformat(format=pix)
            if frame is None:
                if k not in cache:
                    cache[k] = av.VideoFrame.from_ndarray(pages[k], format="gray").reformat(format=pix)
                frame = cache[k]
            frame.pts = i
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        chunk = 1024
        pcm = np.clip(audio, -1, 1).astype(np.float32)
        for s in range(0, len(pcm), chunk):
            data = pcm[None, s:s + chunk]
            if mjpeg:
                data = (data * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format="s16" if mjpeg else "fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = s
            for packet in as_.encode(frame):
                out.mux(packet)
        for packet in as_.encode():
            out.mux(packet)
    tmp.replace(path)
    return path


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Paste ``img`` (gray) centred on a white canvas of ``shape``, shrinking it if it does not fit."""
    import cv2

    h, w = shape
    s = min(1.0, h / img.shape[0], w / img.shape[1])
    if s < 1.0:
        img = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((h, w), 255, np.uint8)
    y, x = (h - img.shape[0]) // 2, (w - img.shape[1]) // 2
    canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas
