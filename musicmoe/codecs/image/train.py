"""Training of the image codec with Lightning (``musicmoe codec train image``).

Run folder ``{run.out_dir}/{run.name}`` (or ``run_dir``):

- ``config.yaml``                 the resolved root config
- ``checkpoints/last.ckpt``       Lightning checkpoint, every ``image_codec.train.ckpt_every`` steps and at the
                                  end; ``resume=True`` (``--resume``) continues from it
- ``tb/``                         TensorBoard: train/{loss,recon,commit,psnr,lr}, codes/{perplexity,dead_frac}_q<i>
                                  (usage over the last ``log_every`` steps), val/{mse,psnr}, val/reconstructions
                                  (originals above their reconstructions), data/skipped_images
- ``val_reconstructions.png``     the latest validation grid
- ``image_codec.pt``              the exported codec file (``ImageCodec.load``), written at the end
- ``train_report.json``           steps, speed, PSNR, skipped images, content hash
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, RandomSampler
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio

from musicmoe.codecs.image.codec import ImageCodec, config_from_dict, ink_to_image
from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.image.data import Collate, SystemImages, split_train_val
from musicmoe.codecs.image.model import RQVAEOutput
from musicmoe.config import save_config
from musicmoe.data.shards import Corpus
from musicmoe.schedules import lr_factor

log = logging.getLogger(__name__)

CODEC_FILE = "image_codec.pt"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
MAX_EMPTY_BATCHES = 20
MIN_EPOCH_BATCHES = 100  # tiny corpora: an "epoch" repeats whole shuffles so Lightning's per-epoch overhead stays small


class ImageCodecTrainError(RuntimeError):
    """Training cannot start or go on (existing run without --resume, no readable images, ...)."""


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [0, 1]."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def code_usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-codebook perplexity ``exp(entropy)`` and fraction of unused codes, from counts ``(Q, K)``."""
    counts = counts.double()
    p = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
    return entropy.exp(), (counts == 0).double().mean(dim=1)


def reconstruction_grid(pairs: list[tuple[np.ndarray, np.ndarray]], gap: int = 4) -> np.ndarray:
    """Stack (original, reconstruction) pairs vertically, each original above its reconstruction (uint8)."""
    rows: list[np.ndarray] = []
    width = max(max(a.shape[1], b.shape[1]) for a, b in pairs)
    for orig, recon in pairs:
        for img in (orig, recon):
            rows.append(np.pad(img, ((0, 0), (0, width - img.shape[1])), constant_values=255))
            rows.append(np.full((gap // 2, width), 160, np.uint8))
        rows.append(np.full((gap, width), 0, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


class ImageCodecModule(L.LightningModule):
    """Trains an :class:`ImageCodec`: reconstruction (L1/L2 on ink or BCE on logits) + commitment loss, AdamW."""

    def __init__(self, codec_config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg: ImageCodecConfig = config_from_dict(codec_config, "image codec module")
        self.codec = ImageCodec(self.cfg)
        self.tcfg = self.cfg.train
        self.register_buffer(
            "code_counts", torch.zeros(self.cfg.codebooks, self.cfg.codebook_size, dtype=torch.long), persistent=False
        )
        self.val_mse = MeanSquaredError()
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.skipped: dict[str, str] = {}  # key -> first error
        self.skip_events = 0
        self.first_train_psnr: float | None = None
        self.last_train_psnr: float | None = None
        self._empty_streak = 0
        self._val_pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.grid_path: Path | None = None

    # ----------------------------------------------------------------------------------------- helpers
    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for key, error in skipped:
            self.skip_events += 1
            if key not in self.skipped:
                self.skipped[key] = error
                log.warning("skipping unreadable image %s: %s", key, error)

    def recon_loss(self, out: RQVAEOutput, target: torch.Tensor) -> torch.Tensor:
        """The configured reconstruction loss of a forward pass (BCE on the decoder's logits, else L1/L2 on ink)."""
        loss, recon = self.tcfg.loss, out.recon
        if loss == "bce":
            return F.binary_cross_entropy_with_logits(out.logits, target)
        total = recon.new_zeros(())
        if "l1" in loss:
            total = total + F.l1_loss(recon, target)
        if "l2" in loss:
            total = total + F.mse_loss(recon, target)
        return total

    # ---------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._note_skipped(batch["skipped"])
        if self.skipped:
            self.log("data/skipped_images", float(len(self.skipped)))
        ink = batch["ink"]
        if ink is None:
            self._empty_streak += 1
            if self._empty_streak >= MAX_EMPTY_BATCHES:
                raise ImageCodecTrainError(
                    f"{MAX_EMPTY_BATCHES} batches in a row had no readable image "
                    f"({len(self.skipped)} unreadable: {', '.join(list(self.skipped)[:5])} ...)"
                )
            return None
        self._empty_streak = 0
        out = self.codec(ink)
        recon = self.recon_loss(out, ink)
        loss = recon + out.commit_loss
        with torch.no_grad():
            psnr = psnr_from_mse(F.mse_loss(out.recon, ink).item())
            for q in range(self.cfg.codebooks):
                self.code_counts[q] += torch.bincount(out.codes[:, q].reshape(-1), minlength=self.cfg.codebook_size)
        if self.first_train_psnr is None:
            self.first_train_psnr = psnr
        self.last_train_psnr = psnr
        bs = ink.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/recon", recon, batch_size=bs)
        self.log("train/commit", out.commit_loss, batch_size=bs)
        self.log("train/psnr", psnr, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        if (self.global_step + 1) % self.tcfg.log_every == 0:
            perplexity, dead = code_usage(self.code_counts)
            for q in range(self.cfg.codebooks):
                self.log(f"codes/perplexity_q{q}", perplexity[q].item())
                self.log(f"codes/dead_frac_q{q}", dead[q].item())
            self.code_counts.zero_()
        return loss

    # -------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_pairs = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._note_skipped(batch["skipped"])
        ink = batch["ink"]
        if ink is None or not self.codec.initialized:
            return
        out = self.codec(ink)
        for i, (h, w) in enumerate(batch["sizes"]):
            pred, target = out.recon[i, 0, :h, :w].contiguous(), ink[i, 0, :h, :w].contiguous()
            self.val_mse.update(pred, target)
            self.val_psnr.update(pred, target)
            if len(self._val_pairs) < 4:
                self._val_pairs.append((ink_to_image(target), ink_to_image(pred)))
        self.log("val/mse", self.val_mse, batch_size=ink.shape[0])
        self.log("val/psnr", self.val_psnr, prog_bar=True, batch_size=ink.shape[0])

    def on_validation_epoch_end(self) -> None:
        if not self._val_pairs or self.trainer.sanity_checking:
            return
        grid = reconstruction_grid(self._val_pairs)
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_image("val/reconstructions", grid, self.global_step, dataformats="HW")
        if self.grid_path is not None:
            from PIL import Image

            tmp = self.grid_path.with_name(f".{self.grid_path.name}.tmp")
            Image.fromarray(grid).save(tmp, format="PNG")
            tmp.replace(self.grid_path)

    # ------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        tcfg = self.tcfg
        decay = [p for p in self.codec.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.codec.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tcfg.lr,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
            step, tcfg.warmup_steps, tcfg.max_steps, tcfg.schedule, tcfg.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ProgressLog(Callback):
    """One log line every ``every`` steps (used instead of a progress bar when stderr is not a terminal)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every or step == self._step0:
            return
        m = trainer.callback_metrics
        rate = (step - self._step0) / max(time.perf_counter() - self._t0, 1e-9)
        val = f" val/psnr {float(m['val/psnr']):.2f}" if "val/psnr" in m else ""
        log.info("step %d/%d loss %.4f psnr %.2f%s (%.2f steps/s)", step, trainer.max_steps,
                 float(m.get("train/loss", float("nan"))), float(m.get("train/psnr", float("nan"))), val, rate)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _loaders(corpus: Corpus, icfg: ImageCodecConfig, train_idx: list[int], val_idx: list[int]):
    tcfg = icfg.train
    collate = Collate(icfg.patch)
    train_set = SystemImages(corpus, train_idx, crop_width=tcfg.crop_width)
    sampler = RandomSampler(train_set, num_samples=max(len(train_set), tcfg.batch_size * MIN_EPOCH_BATCHES))
    train_loader = DataLoader(
        train_set, batch_size=tcfg.batch_size, sampler=sampler, num_workers=tcfg.num_workers, collate_fn=collate,
        persistent_workers=tcfg.num_workers > 0,
    )
    if not val_idx:
        return train_loader, None
    val_set = SystemImages(corpus, val_idx, crop_width=0)
    return train_loader, DataLoader(val_set, batch_size=1, shuffle=False, num_workers=0, collate_fn=collate)


def _trainer(run_dir: Path, tcfg: Any, validate: bool) -> L.Trainer:
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
        every_n_train_steps=tcfg.ckpt_every, save_top_k=0, save_last=True,
    )
    interactive = sys.stderr.isatty()
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=tcfg.max_steps,
        accelerator=tcfg.accelerator,
        devices=1,
        precision=tcfg.precision,
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False),
        callbacks=[checkpoint] if interactive else [checkpoint, ProgressLog(tcfg.log_every)],
        enable_progress_bar=interactive,
        log_every_n_steps=tcfg.log_every,
        val_check_interval=tcfg.val_every if validate else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )


def train_image_codec(cfg: Any, resume: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """See :func:`_train_image_codec`; runs with ``image_codec.train.threads`` torch threads, restored afterwards."""
    from musicmoe.runtime import torch_threads

    with torch_threads(cfg.image_codec.train.threads):
        return _train_image_codec(cfg, resume, run_dir)


def _train_image_codec(cfg: Any, resume: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the image codec described by ``cfg.image_codec`` (root :class:`~musicmoe.config.schema.Config`).

    Reads images from ``image_codec.train.corpus`` (default ``corpus.out``); writes the run folder described in
    the module docstring and returns the training report (also ``train_report.json``).  An existing run is
    continued only with ``resume=True``.
    """
    icfg: ImageCodecConfig = cfg.image_codec
    tcfg = icfg.train
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.run.out_dir) / cfg.run.name
    last = run_dir / LAST_CKPT
    if last.is_file() and not resume:
        raise ImageCodecTrainError(
            f"{run_dir} already holds a training checkpoint ({last}): pass --resume to continue it, "
            "or choose another run.name"
        )
    ckpt_path = str(last) if resume and last.is_file() else None
    if resume and ckpt_path is None:
        log.warning("nothing to resume in %s: starting a new run", run_dir)
    start_step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"]) if ckpt_path else 0

    corpus_dir = tcfg.corpus or cfg.corpus.out
    corpus = Corpus(corpus_dir, modalities=("image",))
    try:
        train_idx, val_idx, val_source = split_train_val(corpus, tcfg.val_split, tcfg.val_images)
        log.info("image codec: %d training systems, %d validation systems (%s) from %s",
                 len(train_idx), len(val_idx), val_source, corpus_dir)
        L.seed_everything(cfg.run.seed, workers=True, verbose=False)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir)

        module = ImageCodecModule(dataclasses.asdict(icfg))
        module.grid_path = run_dir / "val_reconstructions.png"
        train_loader, val_loader = _loaders(corpus, icfg, train_idx, val_idx)
        trainer = _trainer(run_dir, tcfg, validate=val_loader is not None)
        start = time.perf_counter()
        with warnings.catch_warnings():
            # training windows are random crops of a reshuffled corpus: resuming mid-epoch only changes which
            # random windows come next, so Lightning's warning about non-resumable loaders does not apply
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch")
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
        seconds = time.perf_counter() - start
        steps = trainer.global_step - start_step
        trainer.save_checkpoint(last)
        final: dict[str, float] = {}
        if val_loader is not None:
            metrics = trainer.validate(module, dataloaders=val_loader, verbose=False)
            final = {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}
        codec_path = run_dir / CODEC_FILE
        content_hash = module.codec.save(codec_path)
    finally:
        corpus.close()

    report = {
        "run_dir": str(run_dir), "codec": str(codec_path), "content_hash": content_hash,
        "corpus": str(corpus_dir), "train_systems": len(train_idx), "val_systems": len(val_idx),
        "val_source": val_source, "global_step": trainer.global_step, "steps_this_run": steps,
        "seconds": round(seconds, 2), "steps_per_second": round(steps / seconds, 3) if seconds > 0 else None,
        "first_train_psnr": module.first_train_psnr, "last_train_psnr": module.last_train_psnr,
        "val_mse": final.get("val/mse"), "val_psnr": final.get("val/psnr"),
        "skipped_images": {"count": len(module.skipped), "reads": module.skip_events, "keys": module.skipped},
    }
    _write_json(run_dir / "train_report.json", report)
    if module.skipped:
        log.warning("skipped %d unreadable image(s) (%d reads): %s", len(module.skipped), module.skip_events,
                    ", ".join(sorted(module.skipped)))
    log.info("image codec %s (hash %s): val PSNR %s dB after %d steps (%.2f steps/s)", codec_path, content_hash,
             report["val_psnr"], trainer.global_step, report["steps_per_second"] or 0.0)
    return report
