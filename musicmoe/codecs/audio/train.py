"""Train (or fine-tune) the EnCodec architecture on a corpus's audio: ``musicmoe codec train audio``.

Losses: L1 on the waveform, multi-resolution STFT loss, EnCodec's multi-scale mel loss, and the residual
quantizer's commitment loss; codebooks are k-means initialised on the first batch and then follow an
exponential moving average (EnCodec's own quantizer).  There is no adversarial (discriminator) loss: for the
small runs this project trains, the reconstruction losses alone give a usable tokenizer; audio quality is
buzzier than the published model's.  Set ``audio_codec.weights`` to fine-tune the published model instead.

Run folder ``{run.out_dir}/{run.name}/``: ``audio_codec.pt`` (the codec, see ``AudioCodec.save``), ``train_report.json``
(metrics before/after), ``metrics_before.json``, ``config.yaml``, ``checkpoints/last.ckpt`` (Lightning
state: ``--resume`` continues it) and ``tb/`` (TensorBoard: losses, spectral distance, audio examples).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from musicmoe.codecs.audio.codec import AudioCodec, build_model
from musicmoe.codecs.audio.config import AudioCodecConfig
from musicmoe.codecs.audio.losses import mel_loss, spectral_distance, stft_loss
from musicmoe.data.shards import Corpus, CorpusError

log = logging.getLogger(__name__)
CODEC_FILE = "audio_codec.pt"
LAST_CKPT = "checkpoints/last.ckpt"


# ------------------------------------------------------------------------------------------------- data
def _resample(audio: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr, target)
    return resample_poly(audio, target // g, sr // g).astype(np.float32)


class AudioSegments(Dataset):
    """Fixed-length crops of a corpus's audio (float32, ``segment`` samples, zero-padded if short).

    ``random=True``: item ``i`` is a crop of a random example at a random offset, both drawn from a generator
    seeded by ``(seed, i + offset)`` (reproducible; a resumed run passes ``offset`` = items already seen);
    ``length`` items.  ``random=False``: the centre crop of each of the first ``length`` examples.
    Items are ``(wave, skipped)``: ``skipped`` names the corrupt examples passed over for this item
    (comma-separated, usually empty), so the training process learns of them even from loader workers.
    """

    def __init__(self, corpus_dir: str | Path, split: str | None, segment: int, sample_rate: int,
                 length: int, random: bool = True, seed: int = 0, offset: int = 0) -> None:
        self.corpus = Corpus(corpus_dir, modalities=("audio",), split=split)
        self.indices = [i for i, r in enumerate(self.corpus.records) if "flac" in r.get("members", {})]
        if not self.indices:
            raise CorpusError(f"{corpus_dir}: no examples with audio" + (f" in split {split!r}" if split else ""))
        self.segment, self.sample_rate, self.random, self.seed = segment, sample_rate, random, seed
        self.offset = offset  # a resumed run continues the sequence of crops instead of repeating it
        self.length = length if random else min(length, len(self.indices))
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return self.length

    def _audio(self, index: int) -> np.ndarray | None:
        try:
            ex = self.corpus[index]
        except CorpusError as err:
            if ex_key := self.corpus.records[index].get("key"):
                if ex_key not in self.skipped:
                    log.warning("skipping %s", err)
                self.skipped.add(ex_key)
            return None
        return _resample(ex.audio, ex.sample_rate, self.sample_rate) if ex.audio is not None else None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        rng = np.random.default_rng((self.seed, i + self.offset))
        passed: list[str] = []
        for attempt in range(10):
            pick = self.indices[int(rng.integers(len(self.indices)))] if self.random or attempt else self.indices[i]
            audio = self._audio(pick)
            if audio is not None and len(audio):
                break
            passed.append(self.corpus.records[pick].get("key", str(pick)))
        else:
            raise CorpusError(f"{self.corpus.dir}: 10 unreadable audio examples in a row")
        n = self.segment
        if len(audio) > n:
            start = int(rng.integers(len(audio) - n + 1)) if self.random else (len(audio) - n) // 2
            audio = audio[start:start + n]
        out = np.zeros(n, dtype=np.float32)
        out[: len(audio)] = audio
        return torch.from_numpy(out), ",".join(passed)


# ----------------------------------------------------------------------------------------------- module
class AudioCodecModule(L.LightningModule):
    """EnCodec trained with reconstruction + commitment losses (no discriminator)."""

    def __init__(self, cfg: AudioCodecConfig, model: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else build_model(cfg)
        self._logged_reference = False
        self.skipped: set[str] = set()  # corrupt training examples reported by the loader
        # fine-tuning a trained codec (published weights, a checkpoint): its codebooks need no warm-up
        self.pretrained_codebooks = all(bool(layer._codebook.inited) for layer in self.model.quantizer.vq.layers)

    @property
    def quantizing(self) -> bool:
        """False during ``quantizer_warmup_steps`` of a fresh codec (plain autoencoder), True after."""
        return self.pretrained_codebooks or self.global_step >= self.cfg.train.quantizer_warmup_steps

    def forward(self, x: torch.Tensor, quantize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction of ``x`` (B, 1, L) and the commitment loss (quantizer bypassed if not ``quantize``)."""
        emb = self.model.encoder(x)
        if not quantize:
            return self.model.decoder(emb)[..., : x.shape[-1]], x.new_zeros(())
        q = self.model.quantizer(emb, self.model.frame_rate, self.model.bandwidth)
        y = self.model.decoder(q.quantized)[..., : x.shape[-1]]
        if self.training:
            reseed_dead_codes(self.model, emb.detach(), self.cfg.dead_code_threshold)
        return y, q.penalty if q.penalty is not None else x.new_zeros(())

    def losses(self, x: torch.Tensor, y: torch.Tensor, commit: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg.train
        parts = {
            "l1": torch.nn.functional.l1_loss(y, x),
            "stft": stft_loss(y, x),
            "mel": mel_loss(y, x, self.cfg.sample_rate),
            "commit": commit.mean(),
        }
        parts["loss"] = (c.l1_weight * parts["l1"] + c.stft_weight * parts["stft"]
                         + c.mel_weight * parts["mel"] + c.commit_weight * parts["commit"])
        return parts

    def training_step(self, batch: tuple[torch.Tensor, list[str]], batch_idx: int) -> torch.Tensor:
        x = batch[0][:, None]
        self.skipped.update(k for keys in batch[1] for k in keys.split(",") if k)
        y, commit = self(x, self.quantizing)
        parts = self.losses(x, y, commit)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, prog_bar=False, batch_size=len(x))
        self.log("loss", parts["loss"], prog_bar=True, logger=False, batch_size=len(x))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=len(x))
        return parts["loss"]

    def validation_step(self, batch: tuple[torch.Tensor, list[str]], batch_idx: int) -> None:
        x = batch[0][:, None]
        y, _ = self(x, self.quantizing)
        parts = self.losses(x, y, torch.zeros((), device=x.device))
        self.log("val/l1", parts["l1"], batch_size=len(x))
        self.log("val/mel", parts["mel"], batch_size=len(x))
        self.log("val/spectral_distance_db", spectral_distance(y, x), batch_size=len(x))
        tb = getattr(self.logger, "experiment", None)
        if batch_idx == 0 and tb is not None and hasattr(tb, "add_audio"):
            sr = self.cfg.sample_rate
            for j in range(min(2, len(x))):
                if not self._logged_reference:
                    tb.add_audio(f"audio/{j}_original", x[j].float().cpu().clamp(-1, 1), 0, sr)
                tb.add_audio(f"audio/{j}_reconstruction", y[j].float().cpu().clamp(-1, 1), self.global_step, sr)
            self._logged_reference = True

    def configure_optimizers(self) -> dict[str, Any]:
        from musicmoe.schedules import lr_factor

        t = self.cfg.train
        optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=(0.5, 0.9))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
            step, t.warmup_steps, t.max_steps, t.schedule, t.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def reseed_dead_codes(model: torch.nn.Module, emb: torch.Tensor, threshold: float) -> int:
    """Move codes whose EMA usage count fell below ``threshold`` onto random current encoder vectors.

    Done per residual level on that level's input; a re-seeded code gets a usage count of ``2 * threshold``
    (about 70 steps' grace at decay 0.99) so it is not re-seeded again before it had a chance.  Returns the
    number of codes moved.  Single-process only (the random picks are not synchronised across ranks).
    """
    if threshold <= 0:
        return 0
    quantizer = model.quantizer
    n_q = quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, model.bandwidth)
    residual, moved = emb, 0
    for layer in quantizer.vq.layers[:n_q]:
        book = layer._codebook
        if bool(book.inited):
            dead = book.cluster_size < threshold
            n_dead = int(dead.sum())
            if n_dead:
                vectors = layer.project_in(residual.transpose(1, 2)).reshape(-1, book.embed.shape[1])
                picked = vectors[torch.randint(0, len(vectors), (n_dead,), device=vectors.device)]
                book.embed[dead] = picked
                book.embed_avg[dead] = picked * (2 * threshold)
                book.cluster_size[dead] = 2 * threshold
                moved += n_dead
        residual = residual - layer.decode(layer.encode(residual))
    return moved


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: AudioCodecConfig, batches: list[tuple[torch.Tensor, Any]]
             ) -> dict[str, float]:
    """Reconstruction metrics of ``model`` (encode -> quantize -> decode) over validation batches.

    Works on a copy, so codebooks still empty (untrained model) are k-means-initialised on these batches
    without touching ``model``.
    """
    clone = build_model(cfg)  # deepcopy fails on weight_norm modules
    clone.load_state_dict(model.state_dict())
    module = AudioCodecModule(cfg, clone.to(next(model.parameters()).device)).eval()
    totals: dict[str, float] = {"l1": 0.0, "mel": 0.0, "stft": 0.0, "spectral_distance_db": 0.0}
    for batch in batches:
        x = batch[0][:, None]
        y, _ = module(x)
        parts = module.losses(x, y, torch.zeros(()))
        for k in ("l1", "mel", "stft"):
            totals[k] += float(parts[k]) / len(batches)
        totals["spectral_distance_db"] += spectral_distance(y, x) / len(batches)
    return totals


# -------------------------------------------------------------------------------------------- entry point
class AudioCodecTrainError(RuntimeError):
    """Training cannot start (existing run without --resume, no audio in the corpus, ...)."""


def _initial_model(cfg: AudioCodecConfig) -> tuple[torch.nn.Module, str]:
    if cfg.checkpoint:
        codec = AudioCodec.load(cfg.checkpoint)
        if codec.config.codebooks != cfg.codebooks or codec.config.hop_length != cfg.hop_length:
            raise AudioCodecTrainError(f"{cfg.checkpoint}: its architecture differs from audio_codec's")
        return codec.model, f"fine-tuned from {cfg.checkpoint}"
    if cfg.weights:
        return AudioCodec.from_published(cfg.weights, cfg).model, f"fine-tuned from published {cfg.weights}"
    return build_model(cfg), "random init"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def train_audio_codec(cfg: Any, resume: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """See :func:`_train_audio_codec`; runs with ``audio_codec.train.threads`` torch threads, restored afterwards."""
    from musicmoe.runtime import torch_threads

    with torch_threads(cfg.audio_codec.train.threads):
        return _train_audio_codec(cfg, resume, run_dir)


def _train_audio_codec(cfg: Any, resume: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the audio codec of ``cfg.audio_codec`` (root config) on the corpus's audio.

    Reads ``audio_codec.train.corpus`` (default ``corpus.out``); writes ``{run.out_dir}/{run.name}`` (or
    ``run_dir``) as described in the module docstring and returns the training report (also
    ``train_report.json``).  An existing run is continued only with ``resume=True``.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from musicmoe.config import save_config

    acfg: AudioCodecConfig = cfg.audio_codec
    tcfg = acfg.train
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.run.out_dir) / cfg.run.name
    last = run_dir / LAST_CKPT
    if last.is_file() and not resume:
        raise AudioCodecTrainError(f"{run_dir} already holds a training checkpoint ({last}): pass --resume "
                                   "to continue it, or choose another run.name")
    ckpt_path = str(last) if resume and last.is_file() else None
    if resume and ckpt_path is None:
        log.warning("nothing to resume in %s: starting a new run", run_dir)
    start_step = int(torch.load(ckpt_path, map_location="cpu", weights_only=True).get("global_step", 0)) \
        if ckpt_path else 0
    corpus_dir = Path(tcfg.corpus or cfg.corpus.out)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)

    segment = int(round(tcfg.segment_seconds * acfg.sample_rate))
    try:
        train = AudioSegments(corpus_dir, "train", segment, acfg.sample_rate, tcfg.max_steps * tcfg.batch_size,
                              random=True, seed=cfg.run.seed, offset=start_step * tcfg.batch_size)
    except CorpusError as err:
        raise AudioCodecTrainError(str(err)) from None
    try:
        val = AudioSegments(corpus_dir, tcfg.val_split, segment, acfg.sample_rate, tcfg.val_examples, random=False)
        val_source = tcfg.val_split
    except CorpusError:  # tiny corpora may have no validation piece
        log.warning("%s has no audio in split %r: validating on train examples", corpus_dir, tcfg.val_split)
        val = AudioSegments(corpus_dir, "train", segment, acfg.sample_rate, tcfg.val_examples, random=False)
        val_source = "train"
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)

    workers = tcfg.num_workers
    train_loader = DataLoader(train, batch_size=tcfg.batch_size, shuffle=False, drop_last=True,
                              num_workers=workers, persistent_workers=workers > 0)
    val_loader = DataLoader(val, batch_size=tcfg.batch_size, shuffle=False)
    val_batches = list(val_loader)

    model, origin = _initial_model(acfg)
    before_file = run_dir / "metrics_before.json"
    if before_file.is_file():
        before = json.loads(before_file.read_text())
    else:
        before = evaluate(model, acfg, val_batches)
        _write_json(before_file, before)
    module = AudioCodecModule(acfg, model)

    interactive = sys.stderr.isatty()
    trainer = L.Trainer(
        default_root_dir=run_dir, max_steps=tcfg.max_steps, max_epochs=-1, accelerator=tcfg.accelerator,
        devices=1, precision=tcfg.precision,  # type: ignore[arg-type]
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step}", auto_insert_metric_name=False,
                            every_n_train_steps=tcfg.ckpt_every, save_top_k=0, save_last=True),
            TQDMProgressBar(refresh_rate=1 if interactive else max(1, tcfg.log_every)),
        ],
        val_check_interval=min(tcfg.val_every, tcfg.max_steps), check_val_every_n_epoch=None,
        num_sanity_val_steps=0, log_every_n_steps=tcfg.log_every, enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    trainer.save_checkpoint(last)
    steps = trainer.global_step - start_step
    skipped = module.skipped | train.skipped | val.skipped
    module.model.cpu()
    after = evaluate(module.model, acfg, val_batches)

    saved_cfg = replace(acfg, weights="", checkpoint="")
    codec = AudioCodec(module.model, saved_cfg, {"origin": origin, "corpus": str(corpus_dir),
                                                 "global_step": trainer.global_step, "val_after": after})
    codec_path = codec.save(run_dir / CODEC_FILE)
    report = {
        "run_dir": str(run_dir), "codec": str(codec_path), "content_hash": codec.content_hash,
        "corpus": str(corpus_dir), "origin": origin, "val_source": val_source,
        "train_examples": len(train.indices), "val_examples": len(val),
        "global_step": trainer.global_step, "steps_this_run": steps, "seconds": round(seconds, 2),
        "steps_per_second": round(steps / seconds, 3) if seconds > 0 else None,
        "val_before": before, "val_after": after,
        "skipped_audio": {"count": len(skipped), "keys": sorted(skipped)},
    }
    _write_json(run_dir / "train_report.json", report)
    if report["skipped_audio"]["count"]:
        log.warning("skipped %d unreadable audio example(s): %s", report["skipped_audio"]["count"],
                    ", ".join(report["skipped_audio"]["keys"]))
    log.info("audio codec %s: val mel loss %.3f -> %.3f, spectral distance %.2f -> %.2f dB, L1 %.4f -> %.4f "
             "(%d steps, %.2f steps/s)", codec_path, before["mel"], after["mel"], before["spectral_distance_db"],
             after["spectral_distance_db"], before["l1"], after["l1"], trainer.global_step,
             report["steps_per_second"] or 0.0)
    return report
