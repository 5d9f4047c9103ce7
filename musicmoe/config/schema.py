"""The root config: one typed section per stage of the pipeline.

Each section's dataclass lives beside the code it configures; this module only assembles them, so a key's
meaning is documented where it is used.  ``compose(Config, file, overrides)`` validates against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from musicmoe.codecs.audio.config import AudioCodecConfig
from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.midi.config import MidiCodecConfig
from musicmoe.data.builder.config import CorpusConfig
from musicmoe.data.config import DataConfig
from musicmoe.data.tokenize_config import TokenizeConfig
from musicmoe.models.config import ModelConfig
from musicmoe.sweeps.config import ClusterConfig
from musicmoe.training.config import EvalConfig, OptimConfig, TrainerConfig

CHECK_OPS = ("<=", ">=", "<", ">")
_CHECK_OP = re.compile(r"(<=|>=|<|>)")
_CHECK_METRIC = re.compile(r"[A-Za-z0-9_]+/[A-Za-z0-9_]+")


@dataclass(frozen=True)
class CheckSide:
    """One side of a check: ``factor * metric`` (``metric`` None: the constant ``factor``)."""

    factor: float
    metric: str | None

    def __str__(self) -> str:
        if self.metric is None:
            return f"{self.factor:g}"
        return self.metric if self.factor == 1.0 else f"{self.factor:g} * {self.metric}"


@dataclass(frozen=True)
class Check:
    """A parsed ``run.checks`` entry: ``left op right``."""

    text: str
    left: CheckSide
    op: str
    right: CheckSide

    @property
    def metrics(self) -> list[str]:
        return [s.metric for s in (self.left, self.right) if s.metric is not None]


def parse_check(text: str, where: str = "run.checks") -> Check:
    """``"omr/ser < 0.5 * omr/ser_shuffled"`` -> :class:`Check`; ``ValueError`` naming ``where`` if malformed.

    A check compares two sides with one of ``<  <=  >  >=``; a side is a metric ``<task>/<name>`` of the
    evaluation results, a number, or a number times a metric (``0.5 * omr/ser_shuffled``).  At least one side
    names a metric, and every task is a known task name (``omr``, ``amt``, ``lmx2midi``, ...).
    """
    from musicmoe.data.tasks import ALIASES, TASK_NAMES

    def bad(why: str) -> ValueError:
        return ValueError(f"{where} entry {text!r}: {why}; a check looks like 'omr/ser < 0.5 * omr/ser_shuffled' "
                          f"(METRIC or NUMBER or NUMBER * METRIC on each side, one of {' '.join(CHECK_OPS)})")

    if not isinstance(text, str) or not text.strip():
        raise bad("empty check")
    parts = _CHECK_OP.split(text)
    if len(parts) != 3:
        raise bad("needs exactly one comparison" if len(parts) > 3 else "no comparison operator")

    def side(part: str) -> CheckSide:
        factors = [f.strip() for f in part.split("*")]
        if not 1 <= len(factors) <= 2 or not all(factors):
            raise bad(f"cannot read {part.strip()!r}")
        factor, metric = 1.0, None
        for item in factors:
            if _CHECK_METRIC.fullmatch(item):
                if metric is not None:
                    raise bad(f"{part.strip()!r} multiplies two metrics")
                task = item.split("/")[0]
                if task in ALIASES:
                    raise bad(f"metrics are named by the task's name: {ALIASES[task]}, not {task}")
                if task not in TASK_NAMES:
                    raise bad(f"unknown task {task!r} in {item!r} (tasks: {', '.join(TASK_NAMES)})")
                metric = item
                continue
            try:
                value = float(item)
            except ValueError:
                raise bad(f"{item!r} is neither a number nor a metric <task>/<name>") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise bad(f"{item!r} is not a finite number")
            factor *= value
        return CheckSide(factor, metric)

    left, right = side(parts[0]), side(parts[2])
    if left.metric is None and right.metric is None:
        raise bad("names no metric")
    return Check(" ".join(text.split()), left, parts[1], right)


@dataclass
class RunConfig:
    """Identity and output location of a run, and the checks ``musicmoe run`` applies to its results.

    ``checks``: each entry compares evaluation metrics of the held-out split (see :func:`parse_check`), e.g.
    ``"omr/ser < 0.5 * omr/ser_shuffled"``; ``musicmoe run`` exits 1 when one fails or names a missing metric.
    """

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    checks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name must be a non-empty name without '/', got {self.name!r}")
        self.checks = list(self.checks)
        for i, text in enumerate(self.checks):
            parse_check(text, f"run.checks[{i}]")


@dataclass
class Config:
    """Everything a musicmoe command can be configured with (see configs/ for the shipped files)."""

    run: RunConfig = field(default_factory=RunConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    midi_codec: MidiCodecConfig = field(default_factory=MidiCodecConfig)
    image_codec: ImageCodecConfig = field(default_factory=ImageCodecConfig)
    audio_codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
