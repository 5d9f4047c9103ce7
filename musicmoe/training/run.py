"""``musicmoe train``: the run folder contract, resuming, and building the Lightning ``Trainer``.

A run ``D/N`` (``run.out_dir``/``run.name``) holds::

    config.yaml        the resolved config of the latest start
    checkpoints/       last.ckpt (a file, or a DeepSpeed checkpoint folder), written every
                       trainer.checkpoint_every_n_steps steps, at the end and on SIGUSR1
    tb/version_0/      TensorBoard events; the same folder across restarts
    metrics.jsonl      one JSON line per evaluation: {"step": s, "<task>/<metric>": value, ...}

Starting a run whose folder has a checkpoint resumes from it (``trainer.resume=true``): same global step,
optimiser, scheduler and sampler state.  Events and metric lines written after that checkpoint by the
interrupted attempt are dropped (TensorBoard ``purge_step``, metrics.jsonl rewritten), so every curve has each
step once.  Train metrics are logged at step ``s`` = the optimiser update they belong to (1-based); evaluation
at step ``s`` measures the weights after update ``s``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from musicmoe.config import save_config
from musicmoe.config.schema import Config

log = logging.getLogger(__name__)

LAST = "last.ckpt"


@dataclasses.dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def tb(self) -> Path:
        return self.root / "tb"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


def init_from_codecs(model: Any, codecs: dict[str, Any]) -> list[str]:
    """Start the image/audio code embeddings of a fresh ``model`` from its codecs' codebooks (the modalities done).

    Codes that the codec puts close together then start close together for the translator too
    (:meth:`~musicmoe.models.translator.Translator.init_codebook_embeddings`)."""
    from musicmoe.training.codecs import load_codec

    done = []
    for name in ("image", "audio"):
        path = (codecs.get(name) or {}).get("path", "")
        if not path:
            continue
        vectors = load_codec(name, path).codebook_vectors()
        spec = model.vocab[name]
        if tuple(vectors.shape[:2]) != (spec.codebooks, spec.vocab_size):
            log.warning("%s codec %s has codebooks %s, the model's %s vocabulary (%d x %d): embeddings not "
                        "initialised from it", name, path, tuple(vectors.shape[:2]), name, spec.codebooks,
                        spec.vocab_size)
            continue
        model.init_codebook_embeddings(name, vectors)
        done.append(name)
    if done:
        log.info("code embeddings of %s initialised from the codecs' codebooks", ", ".join(done))
    return done


def run_paths(cfg: Config) -> RunPaths:
    return RunPaths(Path(cfg.run.out_dir) / cfg.run.name)


def checkpoint_step(path: str | Path) -> int:
    """Global step stored in a Lightning checkpoint file or a DeepSpeed checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        states = sorted(path.glob("*/mp_rank_*_model_states.pt")) or sorted(path.glob("mp_rank_*_model_states.pt"))
        if not states:
            raise FileNotFoundError(f"{path} is not a DeepSpeed checkpoint folder (no mp_rank_*_model_states.pt)")
        path = states[0]
    blob = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if "global_step" not in blob:
        raise ValueError(f"{path} holds no global_step: not a training checkpoint")
    return int(blob["global_step"])


def find_resume_checkpoint(paths: RunPaths) -> tuple[Path | None, int]:
    """The run's newest usable checkpoint (last.ckpt or a Lightning hpc_ckpt_*) and its global step.

    An unreadable checkpoint is skipped when another one is usable; when every checkpoint is unreadable the
    run refuses to start (a silent fresh start would overwrite the run's history).
    """
    best: tuple[Path | None, int] = (None, 0)
    if not paths.checkpoints.is_dir():
        return best
    candidates = [c for c in [paths.last, *sorted(paths.checkpoints.glob("hpc_ckpt_*.ckpt"))] if c.exists()]
    errors = []
    for cand in candidates:
        try:
            step = checkpoint_step(cand)
        except Exception as err:  # a half-written checkpoint must not block the restart if another one is fine
            log.warning("ignoring unreadable checkpoint %s: %s", cand, err)
            errors.append(f"{cand}: {err}")
            continue
        if best[0] is None or step > best[1]:
            best = (cand, step)
    if candidates and best[0] is None:
        raise ValueError(f"the run's checkpoints cannot be read ({'; '.join(errors)}); remove them to start the run "
                         f"afresh, or set trainer.resume=false")
    return best


def truncate_metrics(path: Path, step: int) -> int:
    """Drop metric lines logged after ``step`` (by an attempt that died before its next checkpoint)."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(rec.get("step", 0)) > step:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        tmp.replace(path)
    return dropped


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain containers (what the checkpoint's hyper-parameters hold)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def _progress_callbacks(cfg: Config) -> tuple[list[Any], bool]:
    from lightning.pytorch.callbacks import RichProgressBar

    from musicmoe.training.callbacks import PlainProgress

    mode = cfg.trainer.progress
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return [RichProgressBar(leave=True)], True
    if mode == "plain":
        return [PlainProgress(cfg.trainer.progress_every)], False
    return [], False


def build_trainer(cfg: Config, paths: RunPaths, resume_step: int, extra_callbacks: list[Any] = ()):
    """The Lightning ``Trainer`` of a run (logger, checkpoints, evaluation, progress, strategy)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from musicmoe.training.callbacks import EvalCallback, FinalCheckpoint, RequeueOnSignal
    from musicmoe.training.strategies import build_strategy, resolve_precision, use_cuda

    tc, oc = cfg.trainer, cfg.optim
    logger = TensorBoardLogger(save_dir=str(paths.root), name="tb", version="version_0", default_hp_metric=False,
                               purge_step=resume_step + 1 if resume_step > 0 else None)
    # one last.ckpt, always overwritten (no "last-v1.ckpt" when an earlier attempt or SIGUSR1 wrote the file)
    checkpoint = ModelCheckpoint(dirpath=str(paths.checkpoints), save_last=True, save_top_k=0,
                                 every_n_train_steps=tc.checkpoint_every_n_steps, save_on_train_epoch_end=False,
                                 enable_version_counter=False)
    progress, rich = _progress_callbacks(cfg)
    callbacks: list[Any] = [
        EvalCallback(cfg, paths.metrics),
        RequeueOnSignal(paths.last),
        FinalCheckpoint(paths.last),
        *progress,
        *extra_callbacks,
        checkpoint,
    ]
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    deepspeed = tc.strategy == "deepspeed"
    return pl.Trainer(
        accelerator="gpu" if use_cuda(tc) else "cpu",
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=build_strategy(tc, oc.grad_clip),
        precision=resolve_precision(tc),
        max_steps=tc.max_steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        gradient_clip_val=None if deepspeed or oc.grad_clip <= 0 else oc.grad_clip,
        log_every_n_steps=tc.log_every_n_steps,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=rich,
        enable_model_summary=False,
        default_root_dir=str(paths.checkpoints),
        use_distributed_sampler=False,
        deterministic=tc.deterministic,
        detect_anomaly=tc.detect_anomaly,
        plugins=plugins,
    )


# What a resumed run may change: how long it runs, how it reports and evaluates (and checks its results: run.checks
# of `musicmoe run`), where and on how many workers it loads data; anything else would continue the checkpoint as a
# different experiment under the same name.
RESUME_MAY_CHANGE = ("trainer.max_steps", "trainer.progress", "trainer.progress_every", "trainer.log_every_n_steps",
                     "trainer.checkpoint_every_n_steps", "trainer.resume", "data.num_workers", "run.out_dir",
                     "run.name", "run.checks")
RESUME_MAY_CHANGE_PREFIXES = ("eval.", "cluster.")


def _fixed_on_resume(key: str) -> bool:
    return key not in RESUME_MAY_CHANGE and not key.startswith(RESUME_MAY_CHANGE_PREFIXES)


def check_resume_config(cfg: Config, paths: RunPaths) -> None:
    """``ConfigError`` when the run folder's saved config differs from ``cfg`` in a key that defines the run."""
    from musicmoe.config import ConfigError, config_differences, load_saved

    if not paths.config.is_file():
        return
    try:
        old = load_saved(Config, paths.config)
    except ConfigError as err:
        raise ConfigError(f"{paths.config} cannot be read with the current config schema ({err}); start a new "
                          f"run (run.name=...) or trainer.resume=false") from None
    diffs = config_differences(old, cfg, _fixed_on_resume)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} keys)" if len(diffs) > 8 else "")
        raise ConfigError(f"{paths.root} holds a checkpoint of a run with a different config ({shown}): resuming "
                          f"would mix two experiments under one name. Use another run.name, set "
                          f"trainer.resume=false to start this folder afresh, or repeat the saved values")


def train(cfg: Config, extra_callbacks: list[Any] = ()) -> dict[str, Any]:
    """Train (or resume) the run ``cfg.run.out_dir/cfg.run.name``; returns a summary dict."""
    import lightning.pytorch as pl

    from musicmoe.data.datamodule import TranslationDataModule
    from musicmoe.training.callbacks import install_signal_handler
    from musicmoe.training.module import TranslationModule

    for name in ("lightning.pytorch", "lightning.fabric"):  # Lightning prints its own lines: no duplicates via root
        logging.getLogger(name).propagate = False
    paths = run_paths(cfg)
    paths.root.mkdir(parents=True, exist_ok=True)
    ckpt, step = find_resume_checkpoint(paths) if cfg.trainer.resume else (None, 0)
    if ckpt is not None:
        check_resume_config(cfg, paths)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    if rank == 0:
        save_config(cfg, paths.root)
        if ckpt is not None:
            dropped = truncate_metrics(paths.metrics, step)
            log.info("resuming %s from %s (step %d; %d later metric lines dropped)", paths.root, ckpt, step, dropped)
        elif paths.metrics.exists():
            paths.metrics.unlink()  # a fresh start: old lines belong to a discarded attempt
    if ckpt is not None and step >= cfg.trainer.max_steps:
        log.info("%s already trained to step %d (trainer.max_steps=%d)", paths.root, step, cfg.trainer.max_steps)
        return {"run_dir": str(paths.root), "global_step": step, "resumed_from": str(ckpt), "trained": False}
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)
    datamodule = TranslationDataModule(cfg)
    info = datamodule.prepare()
    module = TranslationModule(config=config_dict(cfg), vocab=info["vocab"], codecs=info["codecs"],
                               tasks=info["tasks"])
    if ckpt is None and cfg.model.init_from_codecs:
        init_from_codecs(module.model, info["codecs"])
    trainer = build_trainer(cfg, paths, step if ckpt is not None else 0, list(extra_callbacks))
    previous = install_signal_handler()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt is not None else None)
    finally:
        import signal

        signal.signal(signal.SIGUSR1, previous)
    return {"run_dir": str(paths.root), "global_step": trainer.global_step,
            "resumed_from": str(ckpt) if ckpt is not None else None, "trained": True,
            "interrupted": trainer.interrupted, "rank": trainer.global_rank, "world_size": trainer.world_size}
