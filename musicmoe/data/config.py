"""Settings of the multi-task training data module (owner: training)."""

from __future__ import annotations

from dataclasses import dataclass, field

from musicmoe.data.degrade import DegradeConfig
from musicmoe.data.mel_degrade import MelDegradeConfig
from musicmoe.data.mix import CorpusSource, validate_sources

IMAGE_SOURCES = ("tokens", "online")


@dataclass
class DataConfig:
    """Which token shards to train on, which tasks with which weights, batching, image degradations.

    ``tokens`` is the token folder evaluated on, and trained on when ``sources`` is empty.  ``sources`` lists the
    token folders (corpora) of a mixed run, each with a weight and curriculum (see musicmoe/data/mix.py); every
    batch then draws a corpus by its weight, a task among those the corpus has data for, then an example.
    ``tasks`` maps a task name (see musicmoe/data/tasks.py) to its sampling weight; 0 drops a task inherited from
    a defaults file.  ``curriculum`` maps a task to ``[A, B]``: its weight ramps from 0 at step A to full at B.
    Batches hold ``batch_size`` examples drawn (with replacement) by task weight; ``bucket_batches`` batches are
    drawn at once and cut by length, so a batch holds examples of similar length (1 = no bucketing).
    Examples longer than the model's ``max_src_len``/``max_tgt_len`` are skipped and counted.

    ``image_source`` decides where image *sources* come from (targets always come from the token shards):
    "tokens" reads the pre-tokenized codes (degraded copies, if any, were made by ``musicmoe data tokenize``), or
    the clean crops for a model that reads pixels; "online" reads the clean crop from ``corpus`` (default: the
    corpus the tokens were made from), applies a random degradation (``degrade``, see musicmoe/data/degrade.py)
    and encodes it with the image codec (or, with ``model.image_input: pixels``, cuts it into patches on the clean
    crop's grid) in the loader workers, so every draw sees a fresh degradation (augmentation).

    ``audio_degrade`` (``enabled: true``) likewise degrades the log-mel frames of audio sources read as features
    (``model.audio_input: mel``) in every training draw: gain, equalization, noise floor, smearing, masks (see
    musicmoe/data/mel_degrade.py).  Evaluation always reads clean sources.
    """

    tokens: str = "runs/tokens"
    sources: list[CorpusSource] = field(default_factory=list)
    tasks: dict[str, float] = field(default_factory=dict)
    curriculum: dict[str, list[int]] = field(default_factory=dict)
    batch_size: int = 8
    bucket_batches: int = 16
    num_workers: int = 0
    train_split: str = "train"
    max_items: int = 0  # use only the first N usable examples of each task (0 = all): overfitting/debug runs
    image_source: str = "tokens"
    corpus: str = ""
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    audio_degrade: MelDegradeConfig = field(default_factory=MelDegradeConfig)
    pad_to_multiple: int = 1

    def __post_init__(self) -> None:
        from musicmoe.data.tasks import validate_task_weights

        if self.batch_size <= 0:
            raise ValueError("data.batch_size must be > 0")
        if self.bucket_batches <= 0:
            raise ValueError("data.bucket_batches must be > 0 (1 = no bucketing)")
        if self.max_items < 0:
            raise ValueError("data.max_items must be >= 0 (0 = all examples)")
        if self.num_workers < 0:
            raise ValueError("data.num_workers must be >= 0")
        if self.pad_to_multiple < 1:
            raise ValueError("data.pad_to_multiple must be >= 1")
        if self.image_source not in IMAGE_SOURCES:
            raise ValueError(f"data.image_source must be one of {IMAGE_SOURCES}, got {self.image_source!r}")
        self.tasks = {str(k): float(v) for k, v in self.tasks.items()}
        self.curriculum = {str(k): [int(x) for x in v] for k, v in self.curriculum.items()}
        validate_task_weights(self.tasks, self.curriculum)
        self.sources = [s if isinstance(s, CorpusSource) else CorpusSource(**s) for s in self.sources]
        validate_sources(self.sources)
