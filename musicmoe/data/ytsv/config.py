"""Settings of the YTSV pipeline (``musicmoe ytsv ...``); compose with ``compose(YtsvConfig, file, overrides)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLIT_FRACTIONS = [0.85, 0.07, 0.08]


@dataclass
class YtsvConfig:
    """Where the pipeline works, which videos it takes, and the parameters of each stage.

    Segmentation follows the U-MusT paper: frames are compared every ``fps // checks_per_second`` frames
    after grayscale + Gaussian blur (``blur_sigma``); a frame differs from the previous checked one when at
    least ``min_changed_pixels`` pixels differ by more than ``pixel_threshold``.  A static section's middle
    frame is its page; its audio runs from the section's start to the end of the next transition, both
    padded by ``fps // 3`` frames (``pad_fraction`` of a second), the last page's by ``last_extra_seconds``
    more.  Leading pages are dropped until one whose share of non-silent windows (``loudness_windows`` per
    page, silent below ``silence_dbfs``) reaches ``intro_min_ratio``; trailing pages while theirs is below
    ``outro_min_ratio``.
    """

    work: str = "runs/ytsv"                 # work folder: metadata, videos/, segments/, systems/, status/
    out: str = "runs/ytsv/corpus"           # corpus folder the ``write`` stage fills (shards + manifest)
    videos: str = ""                        # folder of video files <YT Id>.<ext> (default: WORK/videos)
    workers: int = 1                        # parallel videos per task
    # ingest filters (empty / 0 = no filter)
    categories: list[str] = field(default_factory=list)        # e.g. ["piano solo"]
    instrumentations: list[str] = field(default_factory=list)  # e.g. ["solo", "duet"]
    min_staves: int = 0
    max_staves: int = 0
    ids: list[str] = field(default_factory=list)
    max_duration_s: float = 0.0
    limit: int = 0                          # keep the first N selected videos (in id order)
    # download (needs the optional extra: pip install 'musicmoe[download]')
    url_template: str = "https://www.youtube.com/watch?v={id}"
    download_format: str = "best[ext=mp4][height<=720]/best[height<=720]/best"
    socket_timeout_s: float = 30.0
    download_retries: int = 3
    # segmentation
    blur_sigma: float = 5.0
    pixel_threshold: int = 10
    min_changed_pixels: int = 1
    checks_per_second: int = 3
    pad_fraction: float = 1.0 / 3.0
    last_extra_seconds: float = 2.0
    silence_dbfs: float = -50.0
    loudness_windows: int = 100
    intro_min_ratio: float = 0.6
    outro_min_ratio: float = 0.16
    sample_rate: int = 24000
    # system detection and cropping
    detector: str = "staff"
    detector_options: dict[str, Any] = field(default_factory=dict)
    staff_height_px: int = 18
    pad_px: int = 4
    system_gap_px: int = 8                  # white rows between the stacked systems of a page
    # write
    split_fractions: list[float] = field(default_factory=lambda: list(SPLIT_FRACTIONS))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.min_staves < 0 or self.max_staves < 0 or self.limit < 0 or self.max_duration_s < 0:
            raise ValueError("min_staves, max_staves, limit and max_duration_s must be >= 0")
        if self.max_staves and self.min_staves > self.max_staves:
            raise ValueError(f"min_staves {self.min_staves} > max_staves {self.max_staves}")
        if "{id}" not in self.url_template:
            raise ValueError("url_template must contain {id}")
        if self.blur_sigma <= 0 or not 0 <= self.pixel_threshold < 255 or self.min_changed_pixels < 1:
            raise ValueError("need blur_sigma > 0, 0 <= pixel_threshold < 255, min_changed_pixels >= 1")
        if self.checks_per_second < 1 or self.pad_fraction < 0 or self.last_extra_seconds < 0:
            raise ValueError("need checks_per_second >= 1, pad_fraction >= 0, last_extra_seconds >= 0")
        if self.loudness_windows < 1 or not 0 <= self.intro_min_ratio <= 1 or not 0 <= self.outro_min_ratio <= 1:
            raise ValueError("need loudness_windows >= 1 and intro/outro ratios in [0, 1]")
        if self.sample_rate <= 0 or self.staff_height_px <= 0 or self.pad_px < 0 or self.system_gap_px < 0:
            raise ValueError("sample_rate and staff_height_px must be > 0; pad_px, system_gap_px >= 0")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError("split_fractions must be three numbers >= 0 (train, valid, test) summing to 1")
