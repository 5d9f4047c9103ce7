"""The task registry: every translation task is a (source modality, target modality) pair.

Task names are ``<source>2<target>`` (``image2audio``, ``lmx2midi``, ...), with the two classic tasks under their
usual names: ``omr`` (image -> lmx, optical music recognition) and ``amt`` (audio -> midi, automatic music
transcription); ``image2lmx`` and ``audio2midi`` are accepted as aliases.  A task's integer id is its position
in :data:`TASK_NAMES` (fixed: new tasks are only ever appended), so ids in old checkpoints keep their meaning.

The curriculum (as U-MusT introduced tasks progressively) is a linear ramp of a task's sampling weight:
0 before step ``A``, rising linearly to the full weight at step ``B`` (a step function when ``A == B``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from musicmoe import MODALITIES

# Append only: the position is the task id stored in checkpoints.
TASK_NAMES: tuple[str, ...] = (
    "omr", "amt", "image2audio", "midi2audio", "image2midi", "lmx2image", "audio2image", "lmx2midi", "midi2lmx",
    "lmx2audio", "audio2lmx", "midi2image",
)
ALIASES: dict[str, str] = {"image2lmx": "omr", "audio2midi": "amt"}
_PAIRS: dict[str, tuple[str, str]] = {"omr": ("image", "lmx"), "amt": ("audio", "midi")}


@dataclass(frozen=True)
class Task:
    """One translation direction."""

    name: str
    source: str
    target: str

    @property
    def id(self) -> int:
        return TASK_NAMES.index(self.name)

    @property
    def modalities(self) -> tuple[str, str]:
        return (self.source, self.target)

    def __str__(self) -> str:
        return f"{self.name} ({self.source} -> {self.target})"


def _build() -> dict[str, Task]:
    tasks = {}
    for name in TASK_NAMES:
        src, tgt = _PAIRS.get(name) or name.split("2")
        assert src in MODALITIES and tgt in MODALITIES and src != tgt, name
        tasks[name] = Task(name, src, tgt)
    return tasks


TASKS: dict[str, Task] = _build()


def get_task(name: str | int) -> Task:
    """The task named ``name`` (an alias or an id also work); ``ValueError`` lists the valid names."""
    if isinstance(name, int):
        if not 0 <= name < len(TASK_NAMES):
            raise ValueError(f"task id {name} out of range 0..{len(TASK_NAMES) - 1}")
        return TASKS[TASK_NAMES[name]]
    key = ALIASES.get(name, name)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    return TASKS[key]


def task_for(source: str, target: str) -> Task:
    """The task translating ``source`` into ``target``."""
    for task in TASKS.values():
        if task.source == source and task.target == target:
            return task
    raise ValueError(f"no task translates {source!r} into {target!r}; modalities are {MODALITIES}")


def parse_tasks(text: str | Sequence[str]) -> list[Task]:
    """Tasks from ``"omr,amt"`` or a list of names, in the given order, without duplicates."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    out: list[Task] = []
    for name in names:
        if name:
            task = get_task(name)
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError("no task given")
    return out


def ramp(step: int, start: int, end: int) -> float:
    """Curriculum factor in [0, 1]: 0 before ``start``, linear up to 1 at ``end``."""
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start + 1) / (end - start + 1)


def task_weights(
    weights: Mapping[str, float], curriculum: Mapping[str, Sequence[int]], step: int
) -> dict[str, float]:
    """Sampling weight of every task at optimiser step ``step`` (tasks with zero base weight are left out)."""
    out: dict[str, float] = {}
    for name, weight in weights.items():
        if weight <= 0:
            continue
        task = get_task(name).name
        span = curriculum.get(name) or curriculum.get(task)
        out[task] = float(weight) * (ramp(step, int(span[0]), int(span[1])) if span else 1.0)
    return out


def validate_task_weights(weights: Mapping[str, float], curriculum: Mapping[str, Sequence[int]]) -> None:
    """``ValueError`` naming the key for unknown tasks, negative weights, bad or dangling curriculum spans."""
    for name, weight in weights.items():
        try:
            get_task(name)
        except ValueError as err:
            raise ValueError(f"data.tasks: {err}") from None
        if weight < 0:
            raise ValueError(f"data.tasks.{name}: weight must be >= 0, got {weight}")
    for name, span in curriculum.items():
        if name not in weights:
            raise ValueError(f"data.curriculum.{name}: the task is not in data.tasks")
        if len(span) != 2 or not 0 <= span[0] <= span[1]:
            raise ValueError(f"data.curriculum.{name}: must be [start_step, end_step] with 0 <= start <= end, "
                             f"got {list(span)}")
    active = [n for n, w in weights.items() if w > 0]
    if active and all(n in curriculum and curriculum[n][0] > 0 for n in active):
        raise ValueError("data.curriculum: every task starts later than step 0, so there is nothing to train on at "
                         "first; leave at least one task out of the curriculum (or start its ramp at 0)")
