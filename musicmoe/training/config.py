"""Settings of optimisation, the Lightning trainer and evaluation (owner: training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from musicmoe.schedules import SCHEDULES

STRATEGIES = ("auto", "ddp", "deepspeed")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PROGRESS = ("auto", "rich", "plain", "none")
DECODINGS = ("greedy", "beam", "top_p", "ctc", "rescore")
# Default decoding budget per target modality (eval.decode_budget): tokens, or frames for audio.
DECODE_BUDGET = {"lmx": 768, "midi": 1024, "image": 1024, "audio": 2048}


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then a ``schedule`` decay to ``min_lr_ratio * lr`` at ``trainer.max_steps``.

    Weight decay applies to matrices only (biases, norms and embeddings form a no-decay group).
    ``grad_clip`` is the global gradient-norm limit (0 = off; under DeepSpeed it becomes ``gradient_clipping``).

    The training loss (cross-entropies are always averaged over a frame's codebooks, "nats per code"):
    ``loss_norm: task`` = sum over the tasks present in the batch of ``w_t * mean CE of task t`` / sum of those
    ``w_t`` (``loss_weights``, default 1 per task), so a task's share of the gradient is its weight, not its
    token count; ``loss_norm: token`` = the mean over every predicted target position of the batch (long audio
    and image targets then dominate). How often a task is sampled is ``data.tasks``, a separate knob.
    """

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    fused: bool = False  # torch's fused AdamW kernel (CUDA only)
    loss_norm: str = "task"  # "task" (per-task means, weighted) or "token" (mean over all target positions)
    loss_weights: dict[str, float] = field(default_factory=dict)  # task name -> weight (default 1)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.loss_norm not in ("task", "token"):
            raise ValueError(f"optim.loss_norm must be 'task' or 'token', got {self.loss_norm!r}")
        from musicmoe.data.tasks import TASK_NAMES

        self.loss_weights = {str(k): float(v) for k, v in dict(self.loss_weights).items()}
        for name, w in self.loss_weights.items():
            if name not in TASK_NAMES:
                raise ValueError(f"optim.loss_weights: unknown task {name!r}; tasks are {', '.join(TASK_NAMES)}")
            if w < 0:
                raise ValueError(f"optim.loss_weights.{name} must be >= 0, got {w}")


@dataclass
class TrainerConfig:
    """The Lightning ``Trainer``: hardware, strategy, precision, cadence of logging and checkpoints.

    ``strategy``: "auto", "ddp" or "deepspeed" (ZeRO ``deepspeed_stage``; extra DeepSpeed JSON keys in
    ``deepspeed_config``, e.g. ``{zero_optimization: {overlap_comm: true}}``).  On a machine without CUDA the
    DeepSpeed strategy runs through :class:`musicmoe.training.strategies.CPUDeepSpeedStrategy` (gloo).
    ``precision`` "auto" is bf16-mixed on a GPU and 32-true on the CPU.
    ``progress``: "auto" (rich bar in a terminal, a plain line every ``progress_every`` steps otherwise).
    """

    max_steps: int = 1000
    accelerator: str = "auto"
    strategy: str = "auto"
    deepspeed_stage: int = 2
    deepspeed_config: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500
    progress: str = "auto"
    progress_every: int = 50
    resume: bool = True  # continue from the run's own last checkpoint when one exists
    deterministic: bool = False
    detect_anomaly: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "devices", "num_nodes", "accumulate_grad_batches", "log_every_n_steps",
                     "checkpoint_every_n_steps", "progress_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy == "deepspeed_stage_2":  # Lightning's registry name, accepted as a spelling
            self.strategy, self.deepspeed_stage = "deepspeed", 2
        if self.strategy not in STRATEGIES:
            raise ValueError(f"trainer.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.deepspeed_stage not in (0, 1, 2, 3):
            raise ValueError(f"trainer.deepspeed_stage must be 0, 1, 2 or 3, got {self.deepspeed_stage}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"trainer.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        if self.progress not in PROGRESS:
            raise ValueError(f"trainer.progress must be one of {PROGRESS}, got {self.progress!r}")
        self.deepspeed_config = dict(self.deepspeed_config)
        if "train_micro_batch_size_per_gpu" in self.deepspeed_config or "optimizer" in self.deepspeed_config:
            raise ValueError("trainer.deepspeed_config must not set the batch size or an optimizer: they come from "
                             "data.batch_size and the optim section")


@dataclass
class EvalConfig:
    """Validation loss and generation metrics on a cadence, per task (see musicmoe/training/evaluate.py).

    Every ``every_n_steps`` optimiser steps (0 = never during training) the model's teacher-forced loss is
    measured on up to ``loss_examples`` validation examples per task, and ``max_examples`` examples per task are
    generated with ``decoding`` and scored: SER (LMX targets), note F1 (MIDI targets), log-mel distance, chroma
    similarity and round-trip transcription F1 (audio targets), token accuracy and read-back SER (image
    targets).  ``log_examples`` generated examples per task are logged as images/audio to TensorBoard.

    ``shuffled_baseline``: also measure every task with each example given *another* example's source (the
    evaluated set rotated by one): ``<task>/loss_shuffled``, ``<task>/source_gap`` (= loss_shuffled - loss, nats
    per target token; ~0 for a model that ignores its input) and the target's main metrics as ``<name>_shuffled``
    (the language-model-only baseline; its generations double the decoding time).

    ``spread_folds`` (> 1; single-process evaluation only, as ``musicmoe eval`` and ``musicmoe run``): the evaluated
    examples are also split into that many disjoint folds by piece (a hash of the piece id, so a piece's systems stay
    together) and each target's main metric is scored per fold: ``<name>_fold_median``, ``_fold_min`` and
    ``_fold_max``, the spread of the figure over held-out subsets.

    ``decoding`` is the strategy of every task unless ``task_decoding`` names one for it (e.g. ``{omr: rescore}``):
    ``greedy``, ``beam`` (``beam_size``), ``top_p`` (``top_p``, ``temperature``), or, for LMX/MIDI targets of a
    model trained with an auxiliary CTC loss (``model.ctc_weight > 0``), ``ctc`` (the CTC head's best path) or
    ``rescore`` (attention greedy and CTC best path, the better by ``(1 - ctc_weight) * attention + ctc_weight *
    CTC`` log-likelihood; see musicmoe/models/generation.py). The shuffled-source baseline decodes alike.

    Decoding budget (generated tokens, or frames for audio) per target modality: ``decode_budget`` (merged over
    the defaults, so ``eval.decode_budget.lmx=512`` changes one entry), or one ``max_new_tokens`` for every target
    when it is > 0.  Never the reference's length; always capped at the model's ``max_tgt_len - 2``.  The
    defaults exceed the longest references of the shipped corpora (chorale systems: ~410 LMX tokens, ~500 MIDI
    tokens, ~480 image code positions, ~1200 audio frames at 75 frames/s).
    """

    every_n_steps: int = 500
    split: str = "valid"
    tasks: list[str] = field(default_factory=list)  # empty = every trained task
    max_examples: int = 8
    loss_examples: int = 64
    batch_size: int = 8
    decoding: str = "greedy"
    task_decoding: dict[str, str] = field(default_factory=dict)  # task name -> decoding (overrides `decoding`)
    ctc_weight: float = 0.5  # weight of the CTC log-likelihood in `rescore`
    beam_size: int = 4
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 0  # > 0: the budget of every target modality (overrides decode_budget); 0 = decode_budget
    decode_budget: dict[str, int] = field(default_factory=lambda: dict(DECODE_BUDGET))
    roundtrip: bool = True  # score generated audio with the model's own amt, generated images with its own omr
    shuffled_baseline: bool = True  # also score every task with other examples' sources (see above)
    spread_folds: int = 5  # > 1: the main metrics also on that many disjoint folds of pieces (see above)
    log_examples: int = 2

    def decoding_of(self, task: str) -> str:
        """The decoding strategy of ``task`` (``task_decoding``, else ``decoding``)."""
        return self.task_decoding.get(task, self.decoding)

    def budget(self, modality: str) -> int:
        """Generated-token budget for a ``modality`` target (before the model's own ``max_tgt_len`` cap)."""
        return self.max_new_tokens or self.decode_budget[modality]

    def __post_init__(self) -> None:
        budget = dict(self.decode_budget)
        unknown = sorted(set(budget) - set(DECODE_BUDGET))
        if unknown:
            raise ValueError(f"eval.decode_budget: unknown modality {unknown}; valid: {', '.join(DECODE_BUDGET)}")
        for name, value in budget.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"eval.decode_budget.{name} must be an integer >= 1, got {value!r}")
        self.decode_budget = {**DECODE_BUDGET, **budget}
        for name in ("every_n_steps", "max_examples", "loss_examples", "max_new_tokens", "log_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"eval.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.beam_size < 1:
            raise ValueError("eval.batch_size and eval.beam_size must be >= 1")
        if self.decoding not in DECODINGS:
            raise ValueError(f"eval.decoding must be one of {DECODINGS}, got {self.decoding!r}")
        from musicmoe.data.tasks import TASKS

        self.task_decoding = {str(k): str(v) for k, v in dict(self.task_decoding).items()}
        for name, value in self.task_decoding.items():
            if name not in TASKS:
                raise ValueError(f"eval.task_decoding: unknown task {name!r}; valid: {', '.join(TASKS)}")
            if value not in DECODINGS:
                raise ValueError(f"eval.task_decoding.{name} must be one of {DECODINGS}, got {value!r}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"eval.ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"eval.top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise ValueError(f"eval.temperature must be > 0, got {self.temperature}")
        self.tasks = list(self.tasks)
