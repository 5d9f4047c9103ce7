"""Weights traced as constants: the CPU ``max-autotune`` decoding step (:func:`musicmoe.models.generation._compiled`)
compiles with inductor's freezing, so its C++ GEMM template can pack each weight and fuse bias and activation.

That template reads a frozen weight that is a view into a larger parameter from the start of the parameter's storage
(torch 2.13; one expert's matrix of a stacked (E, out, in) weight reads as expert 0's). Weights taken out of a
stacked parameter by index therefore go through :func:`own_storage`, which materializes them in such a trace; freezing
folds the copy into a constant of its own at compile time, so no kernel runs per step. Elsewhere it returns the view.
"""

from __future__ import annotations

import torch


def frozen_trace() -> bool:
    """Whether this forward is being traced by torch.compile for inductor with frozen weights."""
    if not torch.compiler.is_compiling():
        return False
    import torch._inductor.config as inductor_config

    return bool(inductor_config.freezing)


def own_storage(w: torch.Tensor) -> torch.Tensor:
    """``w``, or in a frozen trace a copy of it that starts its own storage (multiplying by 1 is exact)."""
    return w * 1 if frozen_trace() else w
