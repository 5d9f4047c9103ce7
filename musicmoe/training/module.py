"""The LightningModule: teacher-forced training of the :class:`~musicmoe.models.translator.Translator`.

One optimizer (AdamW over weight-decay / no-decay parameter groups) and one step-wise scheduler (linear warm-up,
then cosine/linear decay) — the shape DeepSpeed accepts.  Hyper-parameters saved in every checkpoint:

* ``config``: the whole resolved run config (plain values; shown in TensorBoard's HParams dashboard);
* ``vocab``: the :class:`~musicmoe.models.vocab.VocabSpec` the model was built with;
* ``codecs``: the token shards' metadata (codec checkpoint paths and content hashes, LMX/MIDI vocabularies),
  which ``translate``/``eval`` use to turn files into tokens and back;
* ``tasks``: names of the trained tasks.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import torch

from musicmoe.data.tasks import TASK_NAMES
from musicmoe.models.batch import Batch
from musicmoe.models.config import ModelConfig
from musicmoe.models.params import active_params, count_params, param_groups
from musicmoe.models.translator import Translator
from musicmoe.models.vocab import VocabSpec
from musicmoe.schedules import lr_factor
from musicmoe.training.config import OptimConfig


def optim_config(values: Mapping[str, Any]) -> OptimConfig:
    return OptimConfig(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in values.items()})


class TranslationModule(pl.LightningModule):
    """Trains one translator on a mixture of tasks; see the module docstring for the saved hyper-parameters."""

    def __init__(
        self,
        config: dict[str, Any],
        vocab: dict[str, Any],
        codecs: dict[str, Any] | None = None,
        tasks: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the EvalCallback writes a curated HParams entry
        self.model_config = ModelConfig.from_dict(config["model"])
        self.vocab = VocabSpec.from_dict(vocab)
        self.optim_config = optim_config(config.get("optim", {}))
        self.max_steps = int(config.get("trainer", {}).get("max_steps", 1000))
        midi_config = ((codecs or {}).get("midi") or {}).get("config")  # model.ctc_midi=onsets reads its layout
        self.model = Translator(self.model_config, self.vocab, midi_config=midi_config)
        if self.model_config.compile:  # parameter names and checkpoints stay those of the eager model
            self.model.compile_forward()

    # ------------------------------------------------------------------------------------------- steps
    def forward(self, batch: Batch):  # type: ignore[override]
        return self.model(batch)

    def loss(self, out) -> torch.Tensor:
        """The loss to optimise from a :class:`~musicmoe.models.translator.ModelOutput` (``optim.loss_norm``)."""
        oc = self.optim_config
        if oc.loss_norm == "token" or not out.loss_per_task:
            return out.loss
        weights = {t: oc.loss_weights.get(TASK_NAMES[t], 1.0) for t in out.loss_per_task}
        total = sum(weights.values())
        if total <= 0:
            return out.loss
        balanced = sum(w * out.loss_per_task[t] for t, w in weights.items()) / total
        return balanced + (out.loss - out.ce_loss)  # + the weighted router losses

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:  # type: ignore[override]
        out = self.model(batch)
        loss = self.loss(out)
        n = len(batch)
        # several ranks: the logged losses are the mean over ranks and the token count their sum (rank 0 writes)
        sync = self.trainer is not None and self.trainer.world_size > 1
        # curves are indexed by the optimiser update this batch belongs to (1-based), like the evaluations
        self.log("step", float(self.global_step + 1), on_step=True, logger=True, batch_size=n)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log("train/ce_loss", out.metrics["ce_loss"], on_step=True, batch_size=n, sync_dist=sync)
        self.log("train/tokens", out.metrics["tokens"].float(), on_step=True, batch_size=n, reduce_fx="sum",
                 sync_dist=sync)
        for task_id, value in out.loss_per_task.items():  # (a task may be absent from other ranks' batches)
            self.log(f"train/loss_{TASK_NAMES[task_id]}", value.detach(), on_step=True, batch_size=n)
        for key, value in out.metrics.items():
            if key.startswith("moe/"):
                self.log(f"train/{key}", value.float(), on_step=True, batch_size=n)
        if self.trainer is not None and self.trainer.lr_scheduler_configs:
            lr = self.trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]
            self.log("train/lr", lr, on_step=True, batch_size=n)
        return loss

    # --------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):  # type: ignore[override]
        oc = self.optim_config
        fused = oc.fused and torch.cuda.is_available()
        optimizer = torch.optim.AdamW(
            param_groups(self.model, oc.weight_decay), lr=oc.lr, betas=tuple(oc.betas), eps=oc.eps,
            **({"fused": True} if fused else {}),
        )
        total, warmup = self.max_steps, oc.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, warmup, total, oc.schedule, oc.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------------------------------ info
    def on_fit_start(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"model/params": float(count_params(self.model)),
                                     "model/active_params": float(active_params(self.model))}, step=0)
