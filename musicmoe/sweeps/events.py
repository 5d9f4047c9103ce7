"""Read a run's scalar curves: TensorBoard event files under ``<run>/tb``, else ``<run>/metrics.jsonl``."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EVENTS_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True)
class Point:
    step: int
    value: float
    wall_time: float  # seconds since the epoch; nan when unknown


Curves = dict[str, list[Point]]


def event_dirs(run_dir: Path) -> list[Path]:
    """Folders holding TensorBoard event files of a run (``<run>/tb`` and below), oldest first."""
    root = run_dir / "tb" if (run_dir / "tb").is_dir() else run_dir
    dirs = {p.parent for p in root.rglob(EVENTS_GLOB) if p.is_file()}
    return sorted(dirs, key=lambda d: min(p.stat().st_mtime for p in d.glob(EVENTS_GLOB)))


def read_tensorboard(directory: Path) -> Curves:
    """All scalar curves of one event-file folder.

    TensorBoard's own reader drops points that a restarted writer logged again from an earlier step
    ("orphaned" data after a resume), so a requeued run reads as one curve.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs every file it opens at INFO
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [Point(int(e.step), float(e.value), float(e.wall_time)) for e in acc.Scalars(tag)]
            for tag in acc.Tags().get("scalars", [])}


def read_metrics_jsonl(path: Path) -> Curves:
    """Curves from a JSON-lines file whose records hold ``step`` and numeric metrics (bad lines are skipped)."""
    curves: Curves = {}
    bad = 0
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            wall = rec.get("wall_time", rec.get("time", math.nan))
            wall = float(wall) if isinstance(wall, (int, float)) else math.nan
            for key, value in rec.items():
                if key in ("step", "wall_time", "time", "epoch") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    curves.setdefault(key, []).append(Point(step, float(value), wall))
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path, bad)
    return curves


def read_curves(run_dir: Path) -> Curves:
    """A run's scalar curves, each sorted by step (a later point wins on a repeated step)."""
    curves: Curves = {}
    dirs = event_dirs(run_dir)
    if len(dirs) > 1:
        log.warning("%s: TensorBoard events in %d folders (%s); merging them", run_dir, len(dirs),
                    ", ".join(str(d.relative_to(run_dir)) for d in dirs))
    for d in dirs:
        for tag, points in read_tensorboard(d).items():
            curves.setdefault(tag, []).extend(points)
    if not curves and (run_dir / "metrics.jsonl").is_file():
        curves = read_metrics_jsonl(run_dir / "metrics.jsonl")
    for tag, points in curves.items():
        by_step = {p.step: p for p in points}
        curves[tag] = [by_step[s] for s in sorted(by_step)]
    return curves


def last_finite(points: list[Point]) -> Point | None:
    """The last point with a number: runs log NaN placeholders at step 0 so that TensorBoard's HParams view lists
    their metrics before the first evaluation, and those are no result."""
    return next((p for p in reversed(points) if not math.isnan(p.value)), None)


def last_step(curves: Curves) -> int | None:
    steps = [points[-1].step for points in curves.values() if points]
    return max(steps) if steps else None


def resolve_metric(name: str, tags) -> str | None:
    """The logged tag meant by ``name``: itself, or with the trainer's ``eval/`` prefix (``omr/ser``,
    ``val/omr/ser`` -> ``eval/omr/ser``); None if none is logged."""
    tags = set(tags)
    candidates = [name, f"eval/{name}"]
    if name.startswith("val/"):
        candidates.append("eval/" + name[len("val/"):])
    return next((c for c in candidates if c in tags), None)


def pick_metric(curves: Curves, wanted: str = "") -> str | None:
    """The metric to show: ``wanted`` if logged, else the first evaluation metric, else a training loss."""
    if wanted:
        return resolve_metric(wanted, curves)
    for prefix in ("eval/", "val/", "val_", "train/loss", "train_loss", "loss"):
        tags = sorted(t for t in curves if t.startswith(prefix))
        if tags:
            return tags[0]
    return sorted(curves)[0] if curves else None
