"""Corpus-level symbol error rate as a ``torchmetrics.Metric``; the arithmetic, without torch, is in
:mod:`musicmoe.metrics.ser_counts` (``musicmoe ser`` uses it directly).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from musicmoe.metrics.ser_counts import drop_tuplet_tokens, ser_counts, ser_scores

__all__ = ["SymbolErrorRate", "drop_tuplet_tokens", "ser_counts", "ser_scores"]


class SymbolErrorRate(Metric):
    """Corpus-level SER in percent; ``update(preds, targets)`` takes lists of token lists."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, ignore_tuplets: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_tuplets = ignore_tuplets
        self.add_state("errors", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ref_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> None:
        errors, total = ser_counts(preds, targets, self.ignore_tuplets)
        self.errors += errors
        self.ref_tokens += total

    def compute(self) -> torch.Tensor:
        if self.ref_tokens == 0:
            return torch.tensor(float("nan"))
        return 100.0 * self.errors.double() / self.ref_tokens.double()
