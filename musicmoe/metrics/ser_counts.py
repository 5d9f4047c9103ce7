"""Symbol error rate (SER) over LMX token sequences, as defined for OLiMPiC and U-MusT; plain Python, no torch.

SER = sum over the test set of the token-level Levenshtein distance between prediction and gold, divided
by the total number of gold tokens, x 100.  "SER without tuplets" first removes the tokens ``tuplet:start``,
``tuplet:stop`` and ``NinM`` (e.g. ``3in2``) from both sequences.  Edit distances come from jiwer, which
scores whitespace-separated strings, so token lists are joined with single spaces (LMX tokens hold none).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import jiwer

_TUPLET_TOKENS = frozenset({"tuplet:start", "tuplet:stop"})
_TUPLET_RATIO = re.compile(r"^\d+in\d+$")


def drop_tuplet_tokens(tokens: Iterable[str]) -> list[str]:
    """The tokens without tuplet markup (``tuplet:start``, ``tuplet:stop``, ``NinM``)."""
    return [t for t in tokens if t not in _TUPLET_TOKENS and not _TUPLET_RATIO.match(t)]


def _edit_distances(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> int:
    """Summed token edit distance; jiwer rejects empty references, whose distance is the prediction length."""
    total = 0
    refs, hyps = [], []
    for pred, gold in zip(preds, golds):
        if len(gold) == 0:
            total += len(pred)
        else:
            refs.append(" ".join(gold))
            hyps.append(" ".join(pred))
    if refs:
        out = jiwer.process_words(refs, hyps)
        total += out.substitutions + out.deletions + out.insertions
    return total


def ser_counts(
    preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], ignore_tuplets: bool = False
) -> tuple[int, int]:
    """(edit errors, gold tokens) summed over pairs of token sequences."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold sequences")
    for seq in list(preds) + list(golds):
        if isinstance(seq, str):
            raise TypeError("pass token lists, not strings (split on whitespace first)")
    if ignore_tuplets:
        preds = [drop_tuplet_tokens(p) for p in preds]
        golds = [drop_tuplet_tokens(g) for g in golds]
    return _edit_distances(preds, golds), sum(len(g) for g in golds)


def ser_scores(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus-level ``{"ser": ..., "ser_no_tuplets": ...}`` in percent."""
    out = {}
    for name, flag in (("ser", False), ("ser_no_tuplets", True)):
        errors, total = ser_counts(preds, golds, ignore_tuplets=flag)
        if total == 0:
            raise ValueError("the gold sequences hold no tokens: SER is undefined")
        out[name] = 100.0 * errors / total
    return out
