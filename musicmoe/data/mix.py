"""Mixing corpora with sampling weights and a curriculum, so adding a corpus is a config change.

A :class:`CorpusMix` lists corpora (folders written by ``ShardWriter``: our own corpus, YTSV, OLiMPiC,
GrandStaff, MAESTRO, MusicNet ...), each with a ``weight``, the training step it joins at (``start_step``)
and how many steps its weight takes to ramp linearly from 0 to full (``ramp_steps``, 0 = at once).
:func:`mixture_weights` gives the normalised sampling probabilities at a step; :class:`MixtureSampler`
draws ``(corpus, example)`` index pairs with them, deterministically per (seed, step) so a resumed run draws
the same batches.  YAML (``configs/mix/*.yaml``)::

    corpora:
      - {path: runs/corpus, weight: 1.0}
      - {path: runs/ytsv/corpus, weight: 2.0, start_step: 10000, ramp_steps: 5000}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class CorpusSource:
    """One corpus of a mix: its folder, sampling weight and curriculum (when it joins, how fast)."""

    path: str = ""
    weight: float = 1.0
    start_step: int = 0
    ramp_steps: int = 0
    name: str = ""          # for logs; default: the folder's name

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("every corpus of a mix needs a path")
        if self.weight < 0:
            raise ValueError(f"corpus {self.path}: weight must be >= 0, got {self.weight}")
        if self.start_step < 0 or self.ramp_steps < 0:
            raise ValueError(f"corpus {self.path}: start_step and ramp_steps must be >= 0")
        self.name = self.name or Path(self.path).name

    def factor(self, step: int) -> float:
        """0 before ``start_step``, then a linear ramp over ``ramp_steps`` steps to 1."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.start_step + 1) / self.ramp_steps)


@dataclass
class CorpusMix:
    """The corpora a training run samples from (see the module docstring)."""

    corpora: list[CorpusSource] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self.corpora = [c if isinstance(c, CorpusSource) else CorpusSource(**c) for c in self.corpora]
        if not self.corpora:
            raise ValueError("a corpus mix needs at least one corpus")
        names = [c.name for c in self.corpora]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"corpus names must be unique (set name: for corpora in same-named folders): {dupes}")
        mixture_weights(self, 0)  # a run must be able to sample at its first step

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.corpora]


def mixture_weights(mix: CorpusMix, step: int) -> list[float]:
    """Sampling probability of each corpus at ``step`` (weight x curriculum factor, normalised to sum 1).

    Raises ``ValueError`` when no corpus is active at ``step``."""
    raw = [c.weight * c.factor(step) for c in mix.corpora]
    total = sum(raw)
    if total <= 0:
        raise ValueError(f"no corpus has a positive weight at step {step} "
                         f"(start steps: {[c.start_step for c in mix.corpora]})")
    return [r / total for r in raw]


def load_mix(config: str | Path, overrides: Sequence[str] = ()) -> CorpusMix:
    """A mix from YAML (a path, or relative to ``configs/``) plus ``key=value`` overrides."""
    from musicmoe.config import compose

    return compose(CorpusMix, config, overrides)


class MixtureSampler:
    """Draws ``(corpus index, example index)`` pairs by :func:`mixture_weights`.

    ``sizes[i]`` is the number of examples of corpus ``i`` (or pass ``indices[i]``, the example indices of
    the split to use).  Draws at a step depend only on (``mix.seed``, ``step``, ``rank``).
    """

    def __init__(self, mix: CorpusMix, sizes: Sequence[int] | None = None,
                 indices: Sequence[Sequence[int]] | None = None, rank: int = 0) -> None:
        if indices is None:
            if sizes is None:
                raise ValueError("give sizes or indices")
            indices = [range(int(n)) for n in sizes]
        if len(indices) != len(mix.corpora):
            raise ValueError(f"the mix has {len(mix.corpora)} corpora, got {len(indices)} index lists")
        self.mix = mix
        self.indices = [np.asarray(list(ix), dtype=np.int64) for ix in indices]
        self.rank = rank

    def weights(self, step: int) -> list[float]:
        """:func:`mixture_weights`, with empty corpora left out (renormalised)."""
        w = np.array(mixture_weights(self.mix, step))
        w[[len(ix) == 0 for ix in self.indices]] = 0.0
        if w.sum() <= 0:
            raise ValueError(f"every corpus active at step {step} is empty")
        return (w / w.sum()).tolist()

    def sample(self, step: int, n: int) -> list[tuple[int, int]]:
        """``n`` pairs for training step ``step``."""
        rng = np.random.default_rng([self.mix.seed, step, self.rank])
        which = rng.choice(len(self.indices), size=n, p=self.weights(step))
        return [(int(c), int(self.indices[c][rng.integers(len(self.indices[c]))])) for c in which]


class MixedCorpus:
    """The corpora of a mix opened together: ``[(corpus, example)]`` gives an ``Example`` whose
    ``meta["corpus"]`` names its corpus.  ``split`` keeps only that split's examples."""

    def __init__(self, mix: CorpusMix, split: str | None = None, modalities: Sequence[str] | None = None) -> None:
        from musicmoe.data.shards import Corpus

        self.mix = mix
        self.corpora = [Corpus(c.path, modalities=modalities, split=split) for c in mix.corpora]

    def sizes(self) -> list[int]:
        return [len(c) for c in self.corpora]

    def sampler(self, rank: int = 0) -> MixtureSampler:
        return MixtureSampler(self.mix, sizes=self.sizes(), rank=rank)

    def __getitem__(self, pair: tuple[int, int]) -> Any:
        ci, ei = pair
        ex = self.corpora[ci][ei]
        ex.meta["corpus"] = self.mix.corpora[ci].name
        return ex
