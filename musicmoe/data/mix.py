"""Training on several token folders at once: per-corpus sampling weights and a curriculum.

Every corpus (our engraved corpus, YTSV, OLiMPiC, GrandStaff, MAESTRO, MusicNet ...) becomes a token folder with
``musicmoe data tokenize``; ``data.sources`` lists the folders a run samples from, each with a ``weight``, the
optimiser step it joins at (``start_step``) and how many steps its weight takes to ramp linearly from 0 to full
(``ramp_steps``, 0 = at once)::

    data:
      sources:
        - {path: runs/tokens, weight: 1.0}
        - {path: runs/ytsv/tokens, name: ytsv, weight: 2.0, start_step: 5000, ramp_steps: 5000}

A batch draws a corpus by :func:`mixture_weights`, then a task by ``data.tasks`` among the tasks that corpus has
both modalities for (MAESTRO has MIDI and audio: AMT yes, OMR no), then an example.  The data module numbers each
(corpus, task) pair as one *stream* (:func:`stream_id`).  All folders must share the vocabularies and codecs
(:func:`merge_token_meta`), since one model reads them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STREAM_STRIDE = 1000  # stream id = corpus index * STREAM_STRIDE + task id (task ids are < 100)


@dataclass
class CorpusSource:
    """One token folder of a mix: its path, sampling weight and curriculum (when it joins, how fast)."""

    path: str = ""
    weight: float = 1.0
    start_step: int = 0
    ramp_steps: int = 0
    name: str = ""          # in logs and skip counts; default: the folder's name (its parent's for ``tokens``)

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("data.sources: every source needs a path (a token folder)")
        if self.weight < 0:
            raise ValueError(f"data.sources: {self.path}: weight must be >= 0, got {self.weight}")
        if self.start_step < 0 or self.ramp_steps < 0:
            raise ValueError(f"data.sources: {self.path}: start_step and ramp_steps must be >= 0")
        if not self.name:
            p = Path(self.path)
            self.name = p.parent.name if p.name == "tokens" and p.parent.name else p.name

    def factor(self, step: int) -> float:
        """0 before ``start_step``, then a linear ramp over ``ramp_steps`` steps to 1 (the tasks' curriculum ramp)."""
        from musicmoe.data.tasks import ramp

        return ramp(step, self.start_step, self.start_step + max(self.ramp_steps, 1) - 1)


def validate_sources(sources: Sequence[CorpusSource]) -> None:
    """``ValueError`` for duplicate names or a mix with no corpus active at step 0."""
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"data.sources: names must be unique (set name: for folders with the same name): {dupes}")
    if sources:
        mixture_weights(sources, 0)


def mixture_weights(sources: Sequence[CorpusSource], step: int) -> list[float]:
    """Sampling probability of each corpus at ``step`` (weight x curriculum factor, normalised to sum 1).

    Raises ``ValueError`` when no corpus is active at ``step``."""
    raw = [s.weight * s.factor(step) for s in sources]
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"data.sources: no source has a positive weight at step {step} "
                         f"(start steps: {[s.start_step for s in sources]})")
    return [r / total for r in raw]


def stream_id(corpus: int, task_id: int) -> int:
    """The sampler's key for (corpus index, task id); corpus 0's streams are the task ids themselves."""
    return corpus * STREAM_STRIDE + task_id


def split_stream(stream: int) -> tuple[int, int]:
    """``(corpus index, task id)`` of a stream id."""
    return divmod(int(stream), STREAM_STRIDE)


def stream_weights(corpus_weights: Sequence[float], task_w: Mapping[int, float],
                   tasks_of: Sequence[Sequence[int]]) -> dict[int, float]:
    """Weight of each (corpus, task) stream: the corpus's share split among its tasks by task weight.

    ``tasks_of[c]`` lists the task ids corpus ``c`` has examples for; a corpus none of whose tasks is active
    gets no share (the others are renormalised by the sampler)."""
    out: dict[int, float] = {}
    for c, (cw, tasks) in enumerate(zip(corpus_weights, tasks_of)):
        active = {t: task_w[t] for t in tasks if task_w.get(t, 0.0) > 0}
        total = sum(active.values())
        if cw <= 0 or total <= 0:
            continue
        for t, w in active.items():
            out[stream_id(c, t)] = cw * w / total
    return out


def merge_token_meta(metas: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One ``meta.json``-like record for token folders trained together, or ``ValueError`` naming the two folders
    that disagree.

    LMX vocabulary, MIDI event config and every modality's vocabulary size/codebooks must agree; image/audio codec
    hashes must agree among the folders that have that stream.  The result takes each stream's entries from the
    first folder that has it (``corpus`` from the first folder)."""
    if not metas:
        raise ValueError("no token folder to merge")
    first_name, first = metas[0]
    merged: dict[str, Any] = {"corpus": first.get("corpus", ""), "vocab": dict(first["vocab"]),
                              "codecs": dict(first.get("codecs") or {}), "streams": dict(first.get("streams") or {})}
    owner = {m: first_name for m, s in merged["streams"].items() if s.get("available")}
    for name, meta in metas[1:]:
        codecs = meta.get("codecs") or {}
        for key in ("lmx", "midi"):
            if (codecs.get(key) or {}) != (merged["codecs"].get(key) or {}):
                raise ValueError(f"token folders {first_name} and {name} were made with different {key} settings "
                                 f"({key} tokens would mean different things): re-tokenize with one config")
        for m, stream in (meta.get("streams") or {}).items():
            if not stream.get("available"):
                continue
            if m not in owner:
                owner[m] = name
                merged["streams"][m] = stream
                merged["vocab"][m] = meta["vocab"][m]
                if codecs.get(m):
                    merged["codecs"][m] = codecs[m]
                continue
            if meta["vocab"][m] != merged["vocab"][m]:
                raise ValueError(f"token folders {owner[m]} and {name} have different {m} vocabularies "
                                 f"({merged['vocab'][m]} vs {meta['vocab'][m]})")
            mine = (merged["codecs"].get(m) or {}).get("content_hash")
            theirs = (codecs.get(m) or {}).get("content_hash")
            if mine != theirs:
                raise ValueError(f"token folders {owner[m]} and {name} were tokenized with different {m} codecs "
                                 f"({mine} vs {theirs}): tokenize every corpus with the same codec")
    return merged
