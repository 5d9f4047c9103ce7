"""Note-level transcription F1 (onset, and onset+offset) with mir_eval's standard tolerances.

Matching uses ``mir_eval.transcription.match_notes``: onsets within 50 ms, pitch within 50 cents and, for
onset+offset, offsets within max(50 ms, 20% of the reference note's duration).  Counts of matched, estimated
and reference notes are summed over the whole evaluation set (micro F1), so the score is corpus-level and
correct across ranks.  Notes of all non-drum instruments are pooled.
"""

from __future__ import annotations

from typing import Any, Sequence

import mir_eval
import numpy as np
import torch
from torchmetrics import Metric


def note_arrays(pm: Any) -> tuple[np.ndarray, np.ndarray]:
    """(intervals (N, 2) seconds, pitches (N,) Hz) of a ``pretty_midi.PrettyMIDI``'s pitched notes."""
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes if n.end > n.start]
    if not notes:
        return np.zeros((0, 2)), np.zeros(0)
    intervals = np.array([[n.start, n.end] for n in notes], dtype=float)
    pitches = mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float))
    return intervals, pitches


class NoteF1(Metric):
    """Micro-averaged note F1; ``compute()`` returns a dict of onset and onset+offset P/R/F1."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, onset_tolerance: float = 0.05, offset_ratio: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.onset_tolerance = onset_tolerance
        self.offset_ratio = offset_ratio
        for name in ("onset_tp", "onset_offset_tp", "n_est", "n_ref"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Any], targets: Sequence[Any]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} references")
        for pred, ref in zip(preds, targets):
            est_iv, est_p = note_arrays(pred)
            ref_iv, ref_p = note_arrays(ref)
            self.n_est += len(est_p)
            self.n_ref += len(ref_p)
            if len(est_p) == 0 or len(ref_p) == 0:
                continue
            onset = mir_eval.transcription.match_notes(
                ref_iv, ref_p, est_iv, est_p, onset_tolerance=self.onset_tolerance, offset_ratio=None)
            both = mir_eval.transcription.match_notes(
                ref_iv, ref_p, est_iv, est_p, onset_tolerance=self.onset_tolerance, offset_ratio=self.offset_ratio)
            self.onset_tp += len(onset)
            self.onset_offset_tp += len(both)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, tp in (("onset", self.onset_tp), ("onset_offset", self.onset_offset_tp)):
            p = tp.double() / self.n_est.double() if self.n_est > 0 else torch.tensor(0.0, dtype=torch.double)
            r = tp.double() / self.n_ref.double() if self.n_ref > 0 else torch.tensor(0.0, dtype=torch.double)
            f = 2 * p * r / (p + r) if (p + r) > 0 else torch.tensor(0.0, dtype=torch.double)
            out.update({f"{prefix}_precision": p, f"{prefix}_recall": r, f"{prefix}_f1": f})
        return out
