"""Training callbacks: evaluation on a cadence, plain progress lines, SIGUSR1 save-and-requeue, final checkpoint.

SLURM sends ``SIGUSR1`` some seconds before a job's time limit (``--signal=SIGUSR1@90``).  Lightning's own
handler saves a checkpoint *inside the signal handler*, i.e. at an arbitrary point of a step.  Here the handler
only raises a flag; at the next step boundary every rank agrees to stop, ``last.ckpt`` is written (so the run
resumes from its usual checkpoint with the exact global step, optimiser and sampler state), the job is requeued
with ``scontrol requeue`` (rank 0, when running under SLURM) and training stops cleanly.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from musicmoe.data.tasks import Task, get_task
from musicmoe.training.codecs import CodecSet
from musicmoe.training.evaluate import Evaluator, append_jsonl, eval_dataset, log_samples, metric_names

log = logging.getLogger(__name__)

_SIGNAL_RECEIVED = {"flag": False}


def _on_sigusr1(signum: int, frame: Any) -> None:  # noqa: ARG001
    _SIGNAL_RECEIVED["flag"] = True


def install_signal_handler() -> Any:
    """Route SIGUSR1 to the requeue flag (main thread only); returns the previous handler."""
    _SIGNAL_RECEIVED["flag"] = False
    return signal.signal(signal.SIGUSR1, _on_sigusr1)


def slurm_job_id() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class RequeueOnSignal(Callback):
    """After SIGUSR1: save ``last.ckpt`` at the next step boundary, requeue the SLURM job, stop training."""

    def __init__(self, last_path: str | Path) -> None:
        self.last_path = Path(last_path)
        self.stopped_at: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        if trainer.fit_loop._should_accumulate():
            return
        stop = trainer.strategy.reduce_boolean_decision(_SIGNAL_RECEIVED["flag"], all=False)
        if not stop or self.stopped_at is not None:
            return
        self.stopped_at = trainer.global_step
        log.warning("SIGUSR1 received: saving %s at step %d and stopping", self.last_path, trainer.global_step)
        trainer.save_checkpoint(self.last_path)
        job = slurm_job_id()
        if trainer.is_global_zero and job:
            result = subprocess.call(["scontrol", "requeue", job])
            log.warning("scontrol requeue %s -> exit %d", job, result)
        trainer.should_stop = True


class FinalCheckpoint(Callback):
    """Write ``last.ckpt`` when training ends on a step the periodic checkpoint did not cover.

    (``ModelCheckpoint`` itself only saves at the end when it has not saved at all in this session.)
    """

    def __init__(self, last_path: str | Path) -> None:
        self.last_path = Path(last_path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        cb = trainer.checkpoint_callback
        if _SIGNAL_RECEIVED["flag"] or (cb is not None and not getattr(cb, "_last_checkpoint_saved", "")):
            return  # RequeueOnSignal has just saved, or ModelCheckpoint.on_train_end will
        if getattr(cb, "_last_global_step_saved", -1) != trainer.global_step:
            trainer.save_checkpoint(self.last_path)


class PlainProgress(Callback):
    """One log line every ``every`` optimiser steps (for SLURM logs and other non-terminals)."""

    def __init__(self, every: int = 50, stream: Any = None) -> None:
        self.every = every
        self.stream = stream
        self._t0 = 0.0
        self._s0 = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._s0 = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        step = trainer.global_step
        if not trainer.is_global_zero or trainer.fit_loop._should_accumulate():
            return
        if step % self.every and step != trainer.max_steps:
            return
        rate = (step - self._s0) / max(time.monotonic() - self._t0, 1e-9)
        metrics = trainer.callback_metrics
        parts = [f"step {step}/{trainer.max_steps}"]
        for key in ("train/loss", "train/lr"):
            if key in metrics:
                parts.append(f"{key.split('/')[-1]} {float(metrics[key]):.4g}")
        parts.append(f"{rate:.2f} steps/s")
        print(" | ".join(parts), file=self.stream or sys.stderr, flush=True)


def flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested config values into scalars for TensorBoard's HParams dashboard."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value))
        elif value is None:
            out[name] = "none"
        else:
            out[name] = value
    return out


class EvalCallback(Callback):
    """Every ``eval.every_n_steps`` steps (and at the end): evaluate, log to TensorBoard and metrics.jsonl.

    Every metric key of the evaluator (the shuffled baselines ``<task>/<name>_shuffled`` and ``<task>/source_gap``
    included) is logged as ``eval/<key>``.  Runs inside the training loop before the checkpoint of the same step
    is written, so a resumed run never repeats or misses an evaluation.  On a new run it also writes the HParams
    dashboard entry (the config with the evaluation metrics as its columns).
    """

    def __init__(self, cfg: Any, metrics_path: Path) -> None:
        self.cfg = cfg
        self.metrics_path = Path(metrics_path)
        self.every = cfg.eval.every_n_steps
        self._dataset = None
        self._last = -1
        self.history: list[dict[str, Any]] = []

    def _tasks(self, pl_module: Any) -> list[Task]:
        names = self.cfg.eval.tasks or list(pl_module.hparams.get("tasks") or [])
        return [get_task(n) for n in names]

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step == 0 and trainer.is_global_zero and trainer.logger is not None:
            placeholders = {f"eval/{t.name}/{m}": math.nan for t in self._tasks(pl_module)
                            for m in metric_names(t, self.cfg.eval.shuffled_baseline)}
            trainer.logger.log_hyperparams(flat_hparams(dict(pl_module.hparams["config"])), placeholders)

    def _run(self, trainer: Any, pl_module: Any) -> None:
        step = trainer.global_step
        if step == self._last:
            return
        self._last = step
        if self._dataset is None:
            self._dataset = eval_dataset(self.cfg.data.tokens, self.cfg.eval.split)
        codecs = CodecSet(pl_module.hparams.get("codecs"))
        evaluator = Evaluator(pl_module.model, codecs, self.cfg.eval, pl_module.hparams.get("tasks") or [],
                              autocast=trainer.precision_plugin.forward_context)
        strategy = trainer.strategy

        def reduce(t: torch.Tensor) -> torch.Tensor:
            if trainer.world_size == 1:
                return t
            return strategy.reduce(t.to(pl_module.device), reduce_op="sum").cpu()

        started = time.perf_counter()
        metrics, samples = evaluator.evaluate(self._dataset, self._tasks(pl_module), trainer.global_rank,
                                              trainer.world_size, reduce, keep_samples=self.cfg.eval.log_examples)
        seconds = time.perf_counter() - started
        if not trainer.is_global_zero:
            return
        record = {"step": step, **{k: (None if v != v else v) for k, v in metrics.items()},
                  "eval_seconds": round(seconds, 2)}
        append_jsonl(self.metrics_path, record)
        self.history.append(record)
        if trainer.logger is not None:
            trainer.logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=step)
            writer = getattr(trainer.logger, "experiment", None)
            if writer is not None and hasattr(writer, "add_image"):
                sr = codecs.audio.sample_rate if codecs.available("audio") else None
                log_samples(writer, samples, step, sr)
        log.info("step %d eval (%.1f s): %s", step, seconds,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.every <= 0 or trainer.fit_loop._should_accumulate():
            return
        if trainer.global_step % self.every == 0:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.every > 0 and not trainer.interrupted and trainer.global_step > 0 and not _SIGNAL_RECEIVED["flag"]:
            self._run(trainer, pl_module)
