"""Score-image degradations applied at load time: blur, JPEG, small rotation, resize jitter, 1-px shifts.

The augmentations the U-MusT/OLiMPiC line of OMR work uses to make clean engravings look scanned or
photographed.  Each runs with its own probability and strength from :class:`DegradeConfig`, on a uint8
grayscale image (white = 255), drawing every random number from the numpy ``Generator`` it is given, so a
seeded generator reproduces the same image.  All operations keep the size and dtype except ``resize``,
which scales the image (and so the staff height) by a factor drawn from ``resize_range``.
Order: resize, rotate, blur, shift, JPEG (compression last, as in a real pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPS = ("resize", "rotate", "blur", "shift", "jpeg")


@dataclass
class DegradeConfig:
    """Probabilities (``p_*``) and strengths of the degradations; all ``p_*`` = 0 (or ``enabled=False``)
    leaves images untouched."""

    enabled: bool = True
    p_resize: float = 0.3
    resize_range: list[float] = field(default_factory=lambda: [0.9, 1.1])  # scale factor (staff 16.2-19.8 px)
    p_rotate: float = 0.3
    rotate_degrees: float = 1.0        # angle drawn uniformly from [-d, d]
    p_blur: float = 0.3
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.0])  # Gaussian sigma range, pixels
    p_shift: float = 0.5
    shift_px: int = 1                  # content moves by up to this many pixels in x and y, never 0 (white fill)
    p_jpeg: float = 0.3
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 90])

    def __post_init__(self) -> None:
        for op in OPS:
            p = getattr(self, f"p_{op}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"degrade.p_{op} must be a probability in [0, 1], got {p}")
        for name, lo_min in (("resize_range", 1e-3), ("blur_sigma", 0.0), ("jpeg_quality", 1)):
            rng = getattr(self, name)
            if len(rng) != 2 or rng[0] > rng[1] or rng[0] < lo_min:
                raise ValueError(f"degrade.{name} must be [low, high] with {lo_min} <= low <= high, got {rng}")
        if self.jpeg_quality[1] > 100:
            raise ValueError(f"degrade.jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if not 0.0 <= self.rotate_degrees <= 45.0:
            raise ValueError(f"degrade.rotate_degrees must be in [0, 45], got {self.rotate_degrees}")
        if self.shift_px < 0:
            raise ValueError(f"degrade.shift_px must be >= 0, got {self.shift_px}")

    @property
    def active(self) -> bool:
        return self.enabled and any(getattr(self, f"p_{op}") > 0 for op in OPS)


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"degrade expects a 2-D uint8 grayscale image, got {image.dtype} {image.shape}")


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Scale by ``scale`` (area averaging when shrinking, linear when growing); at least 1x1."""
    import cv2

    h, w = image.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, same size, white where the rotation uncovers the canvas."""
    import cv2

    h, w = image.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (white beyond the border)."""
    import cv2

    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the content ``dx`` pixels right and ``dy`` down; uncovered pixels are white."""
    h, w = image.shape
    out = np.full_like(image, 255)
    src = image[max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
    out[max(0, dy): max(0, dy) + src.shape[0], max(0, dx): max(0, dx) + src.shape[1]] = src
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` and decode again."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _offset(k: int, s: int) -> tuple[int, int]:
    """The k-th (mod count) non-zero offset (dx, dy) with |dx|, |dy| <= s; (0, 0) when s = 0."""
    offsets = [(dx, dy) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if dx or dy]
    return offsets[k % len(offsets)] if offsets else (0, 0)


def degrade(image: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator,
            applied: list[str] | None = None) -> np.ndarray:
    """A degraded copy of ``image`` (never modified in place); names of the applied ops go to ``applied``.

    Every call draws the same count of random numbers whatever the probabilities, so changing one ``p_*``
    does not reshuffle the others' draws for later images.
    """
    _check(image)
    u = rng.random(len(OPS))
    scale = rng.uniform(*cfg.resize_range)
    angle = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
    sigma = rng.uniform(*cfg.blur_sigma)
    dx, dy = _offset(int(rng.integers(0, 2**31)), cfg.shift_px)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    out = image
    if not cfg.enabled:
        return image.copy()
    do = {op: bool(u[i] < getattr(cfg, f"p_{op}")) for i, op in enumerate(OPS)}
    if do["resize"] and scale != 1.0:
        out = resize(out, scale)
    if do["rotate"] and angle != 0.0:
        out = rotate(out, angle)
    if do["blur"] and sigma > 0:
        out = blur(out, sigma)
    if do["shift"] and (dx or dy):
        out = shift(out, dx, dy)
    if do["jpeg"]:
        out = jpeg(out, quality)
    if applied is not None:
        applied.extend(op for op in OPS if do[op])
    return out.copy() if out is image else out


class Degrader:
    """``Degrader(cfg)(image, rng)``: a picklable callable for datasets (identity when the config is inactive)."""

    def __init__(self, cfg: DegradeConfig | None = None) -> None:
        self.cfg = cfg or DegradeConfig()

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.active:
            _check(image)
            return image
        return degrade(image, self.cfg, rng)
