"""Lightning strategies built from :class:`~musicmoe.training.config.TrainerConfig`.

Lightning's ``DeepSpeedStrategy`` refuses to run without CUDA.  DeepSpeed itself runs on the CPU (its CPU
accelerator, gloo collectives), so :class:`CPUDeepSpeedStrategy` skips that one check; it is built with the gloo
backend and an explicit CPU device list (without it Lightning fails with "selected device indices [None] don't
match").  This keeps the DeepSpeed code path (ZeRO engine, folder checkpoints, resume) testable on a laptop;
on GPUs the plain ``DeepSpeedStrategy`` is used.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy

from musicmoe.training.config import TrainerConfig


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes (gloo); for tests and CPU-only machines."""

    def setup_environment(self) -> None:
        # skip DeepSpeedStrategy's CUDA-only check, keep the DDP environment setup
        DDPStrategy.setup_environment(self)


def deepspeed_config(cfg: TrainerConfig, grad_clip: float) -> dict[str, Any]:
    """The DeepSpeed JSON: ZeRO stage from ``cfg``, the user's extra keys merged over our defaults.

    No optimizer or scheduler is declared here: Lightning hands DeepSpeed the one optimizer and scheduler of
    ``configure_optimizers``; the micro batch size, accumulation and the bf16 section are filled in by Lightning.
    """
    config: dict[str, Any] = {
        "zero_optimization": {
            "stage": cfg.deepspeed_stage,
            "contiguous_gradients": True,
            "overlap_comm": cfg.deepspeed_stage >= 2 and torch.cuda.is_available(),
            "allgather_bucket_size": 2e8,
            "reduce_bucket_size": 2e8,
        },
        "gradient_clipping": grad_clip,
        "zero_allow_untested_optimizer": True,
    }
    return _deep_merge(config, copy.deepcopy(cfg.deepspeed_config))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def use_cuda(cfg: TrainerConfig) -> bool:
    """Whether the run uses CUDA GPUs ("auto" = when available)."""
    if cfg.accelerator == "cpu":
        return False
    if cfg.accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.accelerator={cfg.accelerator!r} but no CUDA GPU is available")
        return True
    return torch.cuda.is_available()


def resolve_precision(cfg: TrainerConfig) -> str:
    """``precision`` with "auto" resolved: bf16-mixed on GPUs that support it, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if use_cuda(cfg) and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_strategy(cfg: TrainerConfig, grad_clip: float = 0.0) -> Strategy | str:
    """A Lightning strategy (object or registry name) for ``cfg``."""
    cuda = use_cuda(cfg)
    if cfg.strategy == "deepspeed":
        ds_config = deepspeed_config(cfg, grad_clip)
        if cuda:
            return DeepSpeedStrategy(config=ds_config)
        return CPUDeepSpeedStrategy(config=ds_config, process_group_backend="gloo",
                                    parallel_devices=[torch.device("cpu", i) for i in range(cfg.devices)])
    if cfg.strategy == "ddp":
        return DDPStrategy(process_group_backend="nccl" if cuda else "gloo")
    return "auto"
