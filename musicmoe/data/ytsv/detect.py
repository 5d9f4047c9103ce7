"""System detection on score pages: a classical staff-line detector (default) and a registry for others.

The default :class:`StaffLineDetector` works on the page alone:

1. binarize (darker than the paper by a tenth of the page's contrast, so thin anti-aliased lines count)
   and keep only long horizontal strokes (a morphological opening with a 1 x L kernel);
2. the horizontal projection profile of what is left gives the staff-line rows (rows holding one stroke
   longer than a fraction of the page width); consecutive rows with the same horizontal extent are one
   line (a beam lying on a line has another extent and stays apart);
3. a staff is five lines with the same span, each the nearest such line below the previous one, with
   equal gaps (within a tolerance);
4. two neighbouring staves belong to one system when a stroke joins them at their left end (the system's
   start barline, its brace or bracket), else they are separate systems; on a page where no staves are
   joined at all (``grouping="auto"``), staves are grouped by their vertical gaps instead when the gaps fall
   into two separated sizes that make systems of equal staff counts;
5. a system's crop box spans its staves plus the ink above and below up to the whitest row between it and
   its neighbours, and sideways the ink that continues the staves without a wide white gap (brace, part
   labels, a final barline).

``normalize_system`` scales a crop so its staff height (distance between the top and bottom line of a
staff) is 18 px, the corpus' convention.

Other detectors (e.g. a YOLO checkpoint) plug in through :func:`register_detector`; ``get_detector(name,
**options)`` builds one.  Every detector returns :class:`SystemBox` es in reading order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

TARGET_STAFF_HEIGHT = 18
TWIN_PX = 2.5  # row groups this close belong to one drawn line


class DetectorError(RuntimeError):
    """A detector cannot be built (unknown name, missing package or checkpoint); the message says which."""


@dataclass
class Staff:
    """Five staff lines: their centre rows and the staff's horizontal extent (pixels)."""

    lines: list[float]
    x0: int
    x1: int

    @property
    def top(self) -> float:
        return self.lines[0]

    @property
    def bottom(self) -> float:
        return self.lines[-1]

    @property
    def height(self) -> float:
        return self.lines[-1] - self.lines[0]

    @property
    def spacing(self) -> float:
        return self.height / (len(self.lines) - 1)


@dataclass
class SystemBox:
    """A detected system: crop box ``[x0, x1) x [y0, y1)`` in page pixels, its staves and a confidence."""

    x0: int
    y0: int
    x1: int
    y1: int
    staves: list[Staff] = field(default_factory=list)
    score: float = 1.0

    @property
    def staff_height(self) -> float:
        """Median staff height of its staves (0 when the detector found no staff lines)."""
        return float(np.median([s.height for s in self.staves])) if self.staves else 0.0

    @property
    def top(self) -> float:
        return self.staves[0].top if self.staves else float(self.y0)

    @property
    def bottom(self) -> float:
        return self.staves[-1].bottom if self.staves else float(self.y1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "SystemBox":
        staves = [Staff(list(s["lines"]), int(s["x0"]), int(s["x1"])) for s in obj.get("staves", [])]
        return cls(int(obj["x0"]), int(obj["y0"]), int(obj["x1"]), int(obj["y1"]), staves, float(obj.get("score", 1.0)))


@runtime_checkable
class SystemDetector(Protocol):
    """Finds the systems of a page (uint8 gray, white 255) and returns them top to bottom."""

    name: str

    def detect(self, image: np.ndarray) -> list[SystemBox]:
        ...


_REGISTRY: dict[str, Callable[..., SystemDetector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., SystemDetector]], Callable[..., SystemDetector]]:
    """Decorator: make a detector factory available as ``get_detector(name, **options)``."""

    def deco(factory: Callable[..., SystemDetector]) -> Callable[..., SystemDetector]:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


def get_detector(name: str = "staff", **options: Any) -> SystemDetector:
    """Build the detector registered as ``name`` with ``options`` (its constructor's keyword arguments)."""
    if name not in _REGISTRY:
        raise DetectorError(f"unknown system detector {name!r}; available: {', '.join(available_detectors())}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:
        raise DetectorError(f"bad options for detector {name!r}: {err}") from None


# ------------------------------------------------------------------------------------------ staff lines
def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray from gray, BGR or BGRA input."""
    import cv2

    if image.ndim == 2:
        return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image.astype(np.uint8), code)
    raise ValueError(f"expected a 2-D gray or 3-channel image, got shape {image.shape}")


def binarize(gray: np.ndarray, level: float = 0.2) -> np.ndarray:
    """Ink mask (bool): pixels darker than the paper by more than ``level`` of the paper-to-ink contrast.

    A lenient threshold on purpose: thin staff lines rasterised at small sizes are anti-aliased into two
    light-gray rows that a mid-gray (Otsu) threshold misses.  A page without contrast has no ink.
    """
    paper = float(np.percentile(gray, 75))
    dark = float(np.percentile(gray, 0.5))
    if paper - dark < 40:
        return np.zeros(gray.shape, dtype=bool)
    return gray < paper - level * (paper - dark)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges of the True runs of a 1-D mask."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _line_extent(row: np.ndarray, min_len: int) -> tuple[int, int] | None:
    """First and last column of the ink runs of a row that are at least ``min_len`` long."""
    runs = [(a, b) for a, b in _runs(row) if b - a >= min_len]
    if not runs:
        return None
    return runs[0][0], runs[-1][1]


def find_staves(gray: np.ndarray, min_line_frac: float = 0.08, spacing_tol: float = 0.25,
                max_spacing_frac: float = 0.06, n_lines: int = 5) -> list[Staff]:
    """All staves of a page, top to bottom (see the module docstring, steps 1-3)."""
    import cv2

    h, w = gray.shape
    ink = binarize(gray, level=0.1)  # faint, anti-aliased lines of small renderings too
    kernel_len = max(15, int(w * min_line_frac / 2))
    opened = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_OPEN, np.ones((1, kernel_len), np.uint8)) > 0
    profile = opened.sum(axis=1)
    min_len = max(kernel_len, int(w * min_line_frac))
    # rows holding one long stroke; consecutive rows with the same extent form one line (a beam or a
    # tremolo bar lying on a staff line has another extent, so it does not merge with the line)
    groups: list[list[tuple[int, int, int]]] = []
    for r in np.flatnonzero(profile >= min_len):
        e = _line_extent(opened[r], min_len)
        if e is None:
            continue
        last = groups[-1][-1] if groups else None
        tol = max(4.0, 0.03 * (e[1] - e[0]))
        if last is not None and last[0] == r - 1 and abs(last[1] - e[0]) <= tol and abs(last[2] - e[1]) <= tol:
            groups[-1].append((int(r), e[0], e[1]))
        else:
            groups.append([(int(r), e[0], e[1])])
    lines: list[tuple[float, int, int, int]] = []  # centre, thickness, x0, x1
    for g in groups:
        if len(g) > max(4, h // 100):  # a thick band is a filled area, not a line
            continue
        rs = np.array([r for r, _, _ in g])
        weights = profile[rs].astype(np.float64)
        lines.append((float((rs * weights).sum() / weights.sum()), len(g), min(a for _, a, _ in g),
                      max(b for _, _, b in g)))
    lines.sort()
    return _chain_staves(lines, max(4.0, h * max_spacing_frac, w * max_spacing_frac / 2), spacing_tol, n_lines)


def _chain_staves(lines: list[tuple[float, int, int, int]], max_gap: float, spacing_tol: float,
                  n_lines: int) -> list[Staff]:
    """Chain lines with the same horizontal extent (a staff's lines start and end together; beams and
    other long strokes between them do not) into staves of ``n_lines`` equally spaced lines; the staff's
    extent is the median of its lines'."""
    used = [False] * len(lines)
    staves: list[Staff] = []
    for i, (_, _, x0, x1) in enumerate(lines):
        if used[i]:
            continue
        tol = max(4.0, 0.03 * (x1 - x0))

        def same_ends(j: int) -> bool:
            return abs(lines[j][2] - x0) <= tol and abs(lines[j][3] - x1) <= tol

        def same_span(j: int) -> bool:  # one end of a faint line can be lost to compression
            a, b = lines[j][2], lines[j][3]
            return min(b, x1) - max(a, x0) >= 0.9 * max(b - a, x1 - x0)

        chain = [i]
        while len(chain) < n_lines:
            # the next line is the nearest one below with this staff's span (strokes of other lengths
            # between the lines are skipped, lines of the same span are not).  A line drawn across two
            # pixel rows can come as two row groups a pixel or two apart ("twins"): of those, the one
            # with the same ends is taken, and the twin of the last line is passed over.
            last = lines[chain[-1]][0]
            matches = []
            for j in range(chain[-1] + 1, len(lines)):
                if lines[j][0] - last > max_gap:
                    break
                if lines[j][0] - last > TWIN_PX and (same_ends(j) or same_span(j)):
                    matches.append(j)
            if not matches:
                break
            near = lines[matches[0]][0]
            twins = [j for j in matches if lines[j][0] - near <= TWIN_PX]
            pick = ([j for j in twins if same_ends(j)] or twins)[0]
            if used[pick]:
                break
            chain.append(pick)
        if len(chain) < n_lines:
            continue
        ys = [lines[k][0] for k in chain]
        gaps = np.diff(ys)
        if gaps.min() >= 3 and gaps.max() <= gaps.min() * (1 + spacing_tol):
            for k in chain:
                used[k] = True
            staves.append(Staff(ys, int(np.median([lines[k][2] for k in chain])),
                                int(np.median([lines[k][3] for k in chain]))))
    return staves


def _joined(ink: np.ndarray, a: Staff, b: Staff) -> bool:
    """True if a stroke near the staves' left ends joins ``a`` (above) to ``b`` (below)."""
    import cv2

    sp = (a.spacing + b.spacing) / 2
    r0, r1 = int(np.ceil(a.bottom + 1)), int(np.floor(b.top - 1))
    if r1 <= r0:
        return True
    left = min(a.x0, b.x0)
    c0, c1 = max(0, int(left - 3 * sp)), min(ink.shape[1], int(left + 1.5 * sp))
    band = ink[r0:r1, c0:c1].astype(np.uint8)
    if band.size == 0:
        return False
    k = max(3, int(sp / 2)) | 1
    band = cv2.dilate(band, np.ones((1, k), np.uint8))  # curved strokes (braces) count too
    return bool(band.mean(axis=0).max() >= 0.9)


def group_systems(gray: np.ndarray, staves: list[Staff], grouping: str = "auto") -> list[list[Staff]]:
    """Staves grouped into systems (step 4); ``grouping`` is ``connect``, ``gaps`` or ``auto``."""
    if not staves:
        return []
    ink = binarize(gray)
    joined = [_joined(ink, a, b) for a, b in zip(staves, staves[1:])]
    if grouping == "gaps" or (grouping == "auto" and len(staves) > 2 and not any(joined)):
        gap_joined = _gap_grouping(staves)
        if gap_joined is not None or grouping == "gaps":
            joined = gap_joined or [False] * len(joined)
    systems = [[staves[0]]]
    for s, j in zip(staves[1:], joined):
        if j:
            systems[-1].append(s)
        else:
            systems.append([s])
    return systems


def _gap_grouping(staves: list[Staff], min_ratio: float = 1.25) -> list[bool] | None:
    """Join neighbours whose gap is in the smaller of two separated gap sizes (the largest jump between
    sorted gaps at least ``min_ratio``), when that makes systems of equal staff counts (>= 2); else None."""
    gaps = np.array([b.top - a.bottom for a, b in zip(staves, staves[1:])])
    if len(gaps) < 2:
        return None
    order = np.sort(gaps)
    jumps = order[1:] / np.maximum(order[:-1], 1e-6)
    k = int(np.argmax(jumps))
    if jumps[k] < min_ratio:
        return None
    joined = [bool(g <= order[k]) for g in gaps]
    sizes, n = [], 1
    for j in joined:
        if j:
            n += 1
        else:
            sizes.append(n)
            n = 1
    sizes.append(n)
    if len(set(sizes)) != 1 or sizes[0] < 2:
        return None
    return joined


def system_boxes(gray: np.ndarray, systems: list[list[Staff]]) -> list[SystemBox]:
    """Crop boxes of grouped staves (step 5)."""
    h, w = gray.shape
    ink = binarize(gray)
    row_ink = ink.sum(axis=1)
    boxes: list[SystemBox] = []
    bounds: list[int] = []
    for upper, lower in zip(systems, systems[1:]):
        a, b = int(upper[-1].bottom) + 1, int(lower[0].top)
        mid = row_ink[a:b]
        if len(mid) == 0:
            bounds.append(a)
            continue
        # the whitest row, preferring the middle of the gap on ties
        centre = (len(mid) - 1) / 2
        order = np.lexsort((np.abs(np.arange(len(mid)) - centre), mid))
        bounds.append(a + int(order[0]))
    for i, staves in enumerate(systems):
        sh = float(np.median([s.height for s in staves]))
        sp = sh / 4
        top = bounds[i - 1] if i > 0 else max(0, int(staves[0].top - 2 * sh))
        bottom = bounds[i] if i < len(bounds) else min(h, int(staves[-1].bottom + 2 * sh) + 1)
        cols_ink = ink[top:bottom].any(axis=0)
        x0 = _extend(cols_ink, int(min(s.x0 for s in staves) - 3 * sp), -1, int(2 * sp))
        x1 = _extend(cols_ink, int(max(s.x1 for s in staves) + sp), +1, int(2 * sp)) + 1
        band = ink[top:bottom, x0:x1]
        rows = np.flatnonzero(band.any(axis=1))
        cols = np.flatnonzero(band.any(axis=0))
        if rows.size:
            top, bottom = top + int(rows[0]), top + int(rows[-1]) + 1
        if cols.size:
            x0, x1 = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
        boxes.append(SystemBox(x0, top, x1, bottom, list(staves)))
    return boxes


def _extend(cols_ink: np.ndarray, start: int, direction: int, gap: int) -> int:
    """From column ``start``, walk in ``direction`` while ink continues (part labels left of a brace, a
    final barline); stop before the first ``gap`` white columns or at the image edge."""
    w = len(cols_ink)
    c = min(max(start, 0), w - 1)
    white = 0
    while 0 <= c + direction < w and white < max(gap, 1):
        c += direction
        white = white + 1 if not cols_ink[c] else 0
    return c - direction * white if white >= max(gap, 1) else c


@register_detector("staff")
@dataclass
class StaffLineDetector:
    """The classical detector (module docstring).  Options: ``min_line_frac`` (shortest staff line as a
    fraction of the page width), ``spacing_tol`` (allowed relative spread of a staff's line gaps),
    ``grouping`` (``auto``, ``connect`` or ``gaps``)."""

    min_line_frac: float = 0.08
    spacing_tol: float = 0.25
    grouping: str = "auto"
    name: str = "staff"

    def __post_init__(self) -> None:
        if self.grouping not in ("auto", "connect", "gaps"):
            raise ValueError(f"grouping must be auto, connect or gaps, got {self.grouping!r}")
        if not 0 < self.min_line_frac < 1:
            raise ValueError("min_line_frac must be in (0, 1)")

    def detect(self, image: np.ndarray) -> list[SystemBox]:
        gray = to_gray(image)
        staves = find_staves(gray, self.min_line_frac, self.spacing_tol)
        return system_boxes(gray, group_systems(gray, staves, self.grouping))


@register_detector("yolo")
class YoloDetector:
    """A user's YOLO system-detection checkpoint (``ultralytics``), e.g. the one YTSV's authors trained.

    Boxes come from the model; each box's staff height is then measured with the staff-line finder, so
    crops are normalised the same way as with the default detector.  Needs ``pip install ultralytics``.
    """

    name = "yolo"

    def __init__(self, weights: str = "", conf: float = 0.4, device: str = "cpu") -> None:
        try:
            from ultralytics import YOLO  # type: ignore[import-not-found]
        except ImportError:
            raise DetectorError("the 'yolo' system detector needs the ultralytics package "
                                "(pip install ultralytics) and a checkpoint: weights=PATH") from None
        from pathlib import Path

        if not weights or not Path(weights).is_file():
            raise DetectorError(f"the 'yolo' system detector needs weights=PATH of a checkpoint; got {weights!r}")
        self.model = YOLO(weights)
        self.conf, self.device = conf, device

    def detect(self, image: np.ndarray) -> list[SystemBox]:
        import cv2

        gray = to_gray(image)
        result = self.model(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), device=self.device, verbose=False)[0]
        boxes = []
        for (x0, y0, x1, y1), conf in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist()):
            if conf < self.conf:
                continue
            x0, y0, x1, y1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
            staves = find_staves(gray[y0:y1, x0:x1])
            for s in staves:
                s.lines = [y + y0 for y in s.lines]
                s.x0, s.x1 = s.x0 + x0, s.x1 + x0
            boxes.append(SystemBox(x0, y0, x1, y1, staves, float(conf)))
        return sorted(boxes, key=lambda b: (b.y0, b.x0))


# ----------------------------------------------------------------------------------------- normalising
def crop(image: np.ndarray, box: SystemBox) -> np.ndarray:
    return to_gray(image)[box.y0:box.y1, box.x0:box.x1]


def normalize_system(image: np.ndarray, staff_height: float, target: int = TARGET_STAFF_HEIGHT,
                     pad: int = 4) -> np.ndarray:
    """Scale a gray crop so ``staff_height`` becomes ``target`` px, and pad it with ``pad`` px of white."""
    import cv2

    if staff_height <= 0:
        raise ValueError("staff_height must be > 0")
    s = target / staff_height
    h, w = image.shape[:2]
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    out = cv2.resize(to_gray(image), size, interpolation=interp)
    if pad:
        out = np.pad(out, pad, constant_values=255)
    return np.ascontiguousarray(out)


def measure_staff_height(image: np.ndarray) -> float:
    """Median staff height of an image (a system crop or a page); 0 if it has no staff."""
    staves = find_staves(to_gray(image))
    return float(np.median([s.height for s in staves])) if staves else 0.0


# ----------------------------------------------------------------------------------------- evaluation
def match_systems(detected: list[SystemBox], truth: list[tuple[float, float]], tol: float) -> int:
    """How many true systems (top line y, bottom line y) have a detected system whose first and last
    staff lines lie within ``tol`` px of theirs (one-to-one)."""
    used: set[int] = set()
    hits = 0
    for top, bottom in truth:
        for j, box in enumerate(detected):
            if j not in used and box.staves and abs(box.top - top) <= tol and abs(box.bottom - bottom) <= tol:
                used.add(j)
                hits += 1
                break
    return hits
