"""Token accuracy of generated code sequences against the reference codes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric


class TokenAccuracy(Metric):
    """Fraction of positions (over all codebooks) where prediction equals reference.

    Sequences are compared position by position; a length mismatch counts the missing or extra positions as
    errors, so the denominator is the longer of the two lengths.  Arrays are ``(T,)`` or ``(Q, T)``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        for pred, tgt in zip(preds, targets):
            pred = np.atleast_2d(np.asarray(pred))
            tgt = np.atleast_2d(np.asarray(tgt))
            if pred.shape[0] != tgt.shape[0] and pred.size:
                raise ValueError(f"codebook count differs: {pred.shape[0]} vs {tgt.shape[0]}")
            n = min(pred.shape[-1], tgt.shape[-1])
            longest = max(pred.shape[-1], tgt.shape[-1])
            self.correct += int((pred[:, :n] == tgt[:, :n]).sum()) if n else 0
            self.total += int(tgt.shape[0] * longest)

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            return torch.tensor(float("nan"))
        return self.correct.double() / self.total.double()
