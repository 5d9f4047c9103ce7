"""Evaluation metrics as ``torchmetrics.Metric`` objects with sum-reduced states (correct under DDP).

The names are loaded on first use (PEP 562 ``__getattr__``), so the torch-free SER arithmetic
(:mod:`musicmoe.metrics.ser_counts`, used by ``musicmoe ser``) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "musicmoe.metrics.audio": ("ChromaSimilarity", "MelDistance", "chroma", "log_mel", "multires_log_mel_distance"),
    "musicmoe.metrics.ser": ("SymbolErrorRate",),
    "musicmoe.metrics.ser_counts": ("drop_tuplet_tokens", "ser_counts", "ser_scores"),
    "musicmoe.metrics.tokens": ("TokenAccuracy",),
    "musicmoe.metrics.transcription": ("NoteF1", "note_arrays"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from musicmoe.metrics.audio import ChromaSimilarity, MelDistance, chroma, log_mel, multires_log_mel_distance
    from musicmoe.metrics.ser import SymbolErrorRate
    from musicmoe.metrics.ser_counts import drop_tuplet_tokens, ser_counts, ser_scores
    from musicmoe.metrics.tokens import TokenAccuracy
    from musicmoe.metrics.transcription import NoteF1, note_arrays


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
