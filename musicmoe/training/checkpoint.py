"""Loading trained models for evaluation and translation, and ``musicmoe export``.

Three inputs are accepted everywhere a checkpoint is named:

* a Lightning checkpoint file (``last.ckpt`` of a run trained with ``auto``/``ddp``);
* a DeepSpeed checkpoint folder (``last.ckpt/`` of a ZeRO run): gathered into fp32 weights with
  Lightning's ``convert_zero_checkpoint_to_fp32_state_dict``;
* an exported model file (``musicmoe export``): ``{"format": "musicmoe-model", "version", "hparams",
  "state_dict"}`` with the translator's fp32 weights and the run's hyper-parameters (config, vocabulary,
  codec record, tasks) — one self-contained file for eval and translate (not for resuming training).
A run folder is also accepted: its ``checkpoints/last.ckpt`` is used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "musicmoe-model"
VERSION = 1
PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint is missing or unreadable; the message names the path."""


def resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").exists():
        return path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # zip/pickle errors come in many types
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None


def is_deepspeed_checkpoint(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/mp_rank_*_model_states.pt"))


def _from_deepspeed(path: Path) -> dict[str, Any]:
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory(prefix="musicmoe-export-") as tmp:
        out = Path(tmp) / "fp32.ckpt"
        try:
            convert_zero_checkpoint_to_fp32_state_dict(str(path), str(out))
        except Exception as err:
            raise CheckpointError(f"cannot convert DeepSpeed checkpoint {path}: {err}") from None
        return _torch_load(out)


def load_payload(path: str | Path) -> dict[str, Any]:
    """``{"hparams", "state_dict"}`` (translator weights, fp32, without the Lightning prefix) of any input."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        if not is_deepspeed_checkpoint(path):
            raise CheckpointError(f"{path} is a folder but not a DeepSpeed checkpoint (no */mp_rank_*_model_states.pt)")
        blob = _from_deepspeed(path)
    else:
        blob = _torch_load(path)
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path} is not a musicmoe checkpoint")
    if blob.get("format") == FORMAT:
        return {"hparams": blob["hparams"], "state_dict": blob["state_dict"]}
    if "state_dict" not in blob or "hyper_parameters" not in blob:
        raise CheckpointError(f"{path} is neither a musicmoe training checkpoint nor an exported model")
    hp = dict(blob["hyper_parameters"])
    if "vocab" not in hp or "config" not in hp:
        raise CheckpointError(f"{path} was not written by `musicmoe train` (no vocab/config hyper-parameters)")
    state = {k[len(PREFIX):]: v.float() if v.is_floating_point() else v
             for k, v in blob["state_dict"].items() if k.startswith(PREFIX)}
    return {"hparams": hp, "state_dict": state, "global_step": blob.get("global_step")}


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """``(Translator in eval mode, hparams)`` from a checkpoint file/folder or an exported model."""
    from musicmoe.models.config import ModelConfig
    from musicmoe.models.translator import Translator
    from musicmoe.models.vocab import VocabSpec

    payload = load_payload(path)
    hp = payload["hparams"]
    midi = ((hp.get("codecs") or {}).get("midi") or {}).get("config")
    model = Translator(ModelConfig.from_dict(hp["config"]["model"]), VocabSpec.from_dict(hp["vocab"]), midi_config=midi)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")
    return model.to(device).eval(), hp


def export_model(path: str | Path, out: str | Path) -> Path:
    """Write the single-file fp32 model of any checkpoint input (atomically)."""
    payload = load_payload(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "hparams": payload["hparams"],
            "state_dict": payload["state_dict"], "global_step": payload.get("global_step")}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.save(blob, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
