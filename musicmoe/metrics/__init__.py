"""Evaluation metrics as ``torchmetrics.Metric`` objects with sum-reduced states (correct under DDP)."""

from musicmoe.metrics.audio import ChromaSimilarity, MelDistance, chroma, log_mel, multires_log_mel_distance
from musicmoe.metrics.ser import SymbolErrorRate, drop_tuplet_tokens, ser_counts, ser_scores
from musicmoe.metrics.tokens import TokenAccuracy
from musicmoe.metrics.transcription import NoteF1, note_arrays

__all__ = [
    "ChromaSimilarity", "MelDistance", "NoteF1", "SymbolErrorRate", "TokenAccuracy", "chroma",
    "drop_tuplet_tokens", "log_mel", "multires_log_mel_distance", "note_arrays", "ser_counts", "ser_scores",
]
