"""Engrave MusicXML with verovio at a fixed layout and cut each system out as a grayscale image.

Verovio lays the whole score out (automatic system breaks, one tall page where it fits), and its SVG has
one ``g.system`` group per system holding ``g.measure`` groups in score order.  The i-th measure of the SVG
is the i-th ``<measure>`` of every MusicXML part (checked), and verovio's timemap gives each measure's
onset in quarter notes (repeats are not expanded: ``expandNever``), so a system maps to a measure range and
a time span.  A system is rendered alone (the others hidden) with resvg at the zoom that makes the distance
between the top and bottom line of a staff exactly ``staff_height_px``, in a band around its staves that
is just large enough to tell whether its ink fits ``max_height_px``; then the crop is trimmed to its ink.
"""

from __future__ import annotations

import base64
import io
import json
import re
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicmoe.data.builder.config import CorpusConfig

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)
_G = f"{{{SVG_NS}}}g"
_PATH = f"{{{SVG_NS}}}path"
_SVG = f"{{{SVG_NS}}}svg"
_LINE = re.compile(r"^\s*M\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*L\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*$")
_TRANSLATE = re.compile(r"translate\(\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*\)")
SERIF_FAMILY = "DejaVu Serif"  # resvg draws no text at all without a serif family it can find


class EngraveError(RuntimeError):
    """Verovio could not engrave a score, or its output does not match the MusicXML."""


def verovio_options(cfg: CorpusConfig) -> dict[str, Any]:
    """The fixed layout: page width from the config, no header/footer, automatic breaks, no repeats."""
    opts: dict[str, Any] = {
        "pageWidth": cfg.page_width, "pageHeight": 60000, "adjustPageHeight": True, "scale": 100,
        "pageMarginTop": 50, "pageMarginBottom": 50, "pageMarginLeft": 50, "pageMarginRight": 50,
        "header": "none", "footer": "none", "breaks": "auto", "condense": "none",
        "expandNever": True, "font": cfg.font, "xmlIdSeed": 1,
    }
    opts.update(cfg.verovio_options)
    return opts


def _classes(el: ET.Element) -> list[str]:
    return el.get("class", "").split()


@dataclass
class System:
    """One engraved system: its page, measure range (0-based inclusive) and staff-line extent."""

    index: int
    page: int
    element: ET.Element
    measures: tuple[int, int]
    n_staves: int
    top: float       # y of the top staff line (page units, page-margin frame)
    bottom: float    # y of the bottom staff line
    offset_y: float  # the page-margin translation to add for page coordinates


@dataclass
class Engraving:
    """Verovio's layout, timing and MIDI of one score."""

    pages: list[ET.Element]
    systems: list[System]
    measure_qstamps: list[float]     # onset of each measure in quarter notes from the start
    end_qstamp: float                # end of the last sounding event
    tempo_bpm: float                 # first tempo of the timemap
    midi: bytes
    staff_span: float                # median distance top-to-bottom line of five-line staves (page units)
    px_per_unit: float               # SVG pixels per page unit at zoom 1
    page_width_units: float
    extra: dict[str, Any] = field(default_factory=dict)

    def zoom(self, staff_height_px: int) -> float:
        return staff_height_px / (self.staff_span * self.px_per_unit)


def _staff_lines(staff: ET.Element) -> list[float]:
    ys = []
    for p in staff.findall(_PATH):
        m = _LINE.match(p.get("d", ""))
        if m and abs(float(m.group(2)) - float(m.group(4))) < 1e-6 and float(m.group(3)) > float(m.group(1)):
            ys.append(float(m.group(2)))
    return ys


def engrave(xml_text: str, cfg: CorpusConfig, n_measures: int) -> Engraving:
    """Lay out a MusicXML score; ``n_measures`` (of every part) must match verovio's measures."""
    import verovio

    tk = verovio.toolkit()
    tk.setOptions(verovio_options(cfg))
    if not tk.loadData(xml_text):
        raise EngraveError("verovio could not load the MusicXML")
    pages: list[ET.Element] = []
    systems: list[System] = []
    measure_ids: list[str] = []
    spans: list[float] = []
    px_per_unit = width_units = 0.0
    for page_no in range(tk.getPageCount()):
        root = ET.fromstring(tk.renderToSVG(page_no + 1))
        pages.append(root)
        inner = next((e for e in root.iter(_SVG) if "definition-scale" in _classes(e)), None)
        if inner is None or not inner.get("viewBox"):
            raise EngraveError("verovio SVG has no definition-scale viewBox")
        width_units = float(inner.get("viewBox", "").split()[2])
        px_per_unit = float(root.get("width", "0").removesuffix("px")) / width_units
        offset_y = 0.0
        for g in root.iter(_G):
            if "page-margin" in _classes(g) and (m := _TRANSLATE.search(g.get("transform", ""))):
                offset_y = float(m.group(2))
        for g in root.iter(_G):
            if "system" not in _classes(g):
                continue
            ids = [e.get("id", "") for e in g.iter(_G) if "measure" in _classes(e)]
            if not ids:
                continue
            ys: list[float] = []
            for staff in (e for e in g.iter(_G) if "staff" in _classes(e)):
                lines = _staff_lines(staff)
                if lines:
                    ys += lines
                    if len(lines) == 5:
                        spans.append(max(lines) - min(lines))
            n_staves = max((sum(1 for e in m.iter(_G) if "staff" in _classes(e))
                            for m in g.iter(_G) if "measure" in _classes(m)), default=0)
            if not ys:
                raise EngraveError(f"system {len(systems)} has no staff lines in verovio's SVG")
            first = len(measure_ids)
            measure_ids += ids
            systems.append(System(len(systems), page_no, g, (first, len(measure_ids) - 1), n_staves,
                                  min(ys), max(ys), offset_y))
    if len(measure_ids) != n_measures:
        raise EngraveError(f"verovio engraved {len(measure_ids)} measures, the MusicXML parts have {n_measures}")
    if not spans:
        raise EngraveError("no five-line staff found in verovio's SVG")

    timemap = tk.renderToTimemap({"includeMeasures": True, "includeRests": True})
    if isinstance(timemap, str):
        timemap = json.loads(timemap)
    onsets: dict[str, float] = {}
    end_q = 0.0
    tempo = 0.0
    for entry in timemap:
        q = float(entry.get("qstamp", 0.0))
        end_q = max(end_q, q)
        if "measureOn" in entry:
            onsets.setdefault(entry["measureOn"], q)
        if not tempo and entry.get("tempo"):
            tempo = float(entry["tempo"])
    missing = [i for i, mid in enumerate(measure_ids) if mid not in onsets]
    if missing:
        raise EngraveError(f"verovio's timemap has no onset for measures {missing[:5]}")
    qstamps = [onsets[mid] for mid in measure_ids]
    if any(b < a for a, b in zip(qstamps, qstamps[1:])):
        raise EngraveError("verovio's measure onsets are not increasing")
    midi = base64.b64decode(tk.renderToMIDI())
    return Engraving(pages, systems, qstamps, max(end_q, qstamps[-1]), tempo or 120.0, midi,
                     statistics.median(spans), px_per_unit, width_units)


def _system_svg(eng: Engraving, system: System, y0: float, band_units: float) -> str:
    """SVG text of the system's page with every other system left out, cut to a horizontal band."""
    page = eng.pages[system.page]
    cache = eng.extra.setdefault(("page", system.page), {})
    if not cache:
        cache["parents"] = {c: p for p in page.iter() for c in p}
        cache["holds_system"] = {id(a) for s in eng.systems if s.page == system.page
                                 for a in _ancestors(s.element, cache["parents"])}
    parents, holds_system = cache["parents"], cache["holds_system"]
    on_path = {id(a) for a in _ancestors(system.element, parents)}

    def copy(el: ET.Element) -> ET.Element:
        new = ET.Element(el.tag, dict(el.attrib))
        new.text, new.tail = el.text, el.tail
        for child in el:
            if id(child) in on_path and child is not system.element:
                new.append(copy(child))
            elif child is system.element or id(child) not in holds_system:
                new.append(child)
        return new

    root = copy(page)
    root.set("height", f"{band_units * eng.px_per_unit:.3f}px")
    inner = next(e for e in root.iter(_SVG) if "definition-scale" in _classes(e))
    inner.set("viewBox", f"0 {y0:.3f} {eng.page_width_units:.3f} {band_units:.3f}")
    return ET.tostring(root, encoding="unicode")


def _ancestors(el: ET.Element, parents: dict[ET.Element, ET.Element]) -> list[ET.Element]:
    out = [el]
    while out[-1] in parents:
        out.append(parents[out[-1]])
    return out


def render_system(eng: Engraving, system: System, cfg: CorpusConfig) -> tuple[np.ndarray | None, str]:
    """The system's crop (uint8, white 255), or ``(None, reason)`` with reason ``too_tall`` or ``empty``."""
    import resvg_py
    from PIL import Image

    zoom = eng.zoom(cfg.staff_height_px)
    scale = eng.px_per_unit * zoom                      # output pixels per page unit
    staves_px = (system.bottom - system.top) * scale
    if staves_px + 1 > cfg.max_height_px:
        return None, "too_tall"
    margin = (cfg.max_height_px - staves_px) + 2        # ink reaching past this is taller than allowed
    y0 = system.top + system.offset_y - margin / scale
    band_units = (system.bottom - system.top) + 2 * margin / scale
    svg = _system_svg(eng, system, y0, band_units)
    png = resvg_py.svg_to_bytes(svg_string=svg, zoom=zoom, background="#ffffff", serif_family=SERIF_FAMILY)
    with Image.open(io.BytesIO(bytes(png))) as im:
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
    ink = gray < cfg.ink_threshold
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None, "empty"
    if rows[0] == 0 or rows[-1] == gray.shape[0] - 1:
        return None, "too_tall"
    crop = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    if cfg.pad_px:
        crop = np.pad(crop, cfg.pad_px, constant_values=255)
    if crop.shape[0] > cfg.max_height_px:
        return None, "too_tall"
    return np.ascontiguousarray(crop), ""
