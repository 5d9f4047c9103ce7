"""Evaluation metrics as ``torchmetrics.Metric`` objects with sum-reduced states (correct under DDP).

The names are loaded on first use (PEP 562 ``__getattr__``), so the torch-free SER arithmetic
(:mod:`musicmoe.metrics.ser_counts`, used by ``musicmoe ser``) can be imported without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from musicmoe.lazy import lazy_exports

_EXPORTS = {
    "musicmoe.metrics.audio": ("ChromaSimilarity", "MelDistance", "chroma", "log_mel", "multires_log_mel_distance"),
    "musicmoe.metrics.ser": ("SymbolErrorRate",),
    "musicmoe.metrics.ser_counts": ("drop_tuplet_tokens", "ser_counts", "ser_scores"),
    "musicmoe.metrics.tokens": ("TokenAccuracy",),
    "musicmoe.metrics.transcription": ("NoteF1", "note_arrays"),
}

if TYPE_CHECKING:
    from musicmoe.metrics.audio import ChromaSimilarity, MelDistance, chroma, log_mel, multires_log_mel_distance
    from musicmoe.metrics.ser import SymbolErrorRate
    from musicmoe.metrics.ser_counts import drop_tuplet_tokens, ser_counts, ser_scores
    from musicmoe.metrics.tokens import TokenAccuracy
    from musicmoe.metrics.transcription import NoteF1, note_arrays


__getattr__, __dir__, __all__ = lazy_exports(globals(), _EXPORTS)
