"""Multi-task training data: a LightningDataModule over pre-tokenized shards of one or several corpora.

The sampler draws *streams*: a stream is one task on one token folder (``data.tokens``, or each folder of
``data.sources`` when a run mixes corpora, see musicmoe/data/mix.py).  A stream's weight at a step is its corpus's
share (weight x curriculum) split among the tasks that corpus has data for, by the tasks' curriculum weights.

Sampling (:class:`MultiTaskBatchSampler`) is a pure function of the batch number: batch ``b`` of rank ``r`` of
``world`` ranks depends only on ``(seed, b, r, world)``.  Batches are drawn in *pools* of ``bucket_batches`` global
batches (``world * batch_size`` examples each), the same pool on every rank; a pool draws its (stream, item) pairs —
the stream by its weight at the pool's first step, the items uniformly among the stream's items, without
replacement while the stream has enough of them (a small stream repeats items, so its share still follows its
weight) — sorts them by length (random tie-break), cuts the sorted list into global batches (bucketing: similar
lengths share a batch, little padding), shuffles their order and gives rank ``r`` the ``r``-th slice of each
global batch: no example is seen twice in one global batch (repeats of a small stream are swapped into other
batches).  Resuming at batch ``b`` continues exactly where the interrupted run stopped, whatever the loader had
prefetched: no batch is repeated or skipped.

Image sources (``data.image_source``): "tokens" uses the codes in the token shards (clean, or the degraded copies
``musicmoe data tokenize`` made) or, for a model that reads pixels, the clean crops; "online" reads the clean crop
from the corpus, degrades it (``data.degrade``) with a generator seeded by (seed, batch, position) and, inside the
loader (worker) process, encodes it with the image codec or (``model.image_input: pixels``) cuts it into pixel
patches on the clean crop's grid: every draw of an example is a new augmentation.  Audio sources read as log-mel
frames are degraded likewise when ``data.audio_degrade.enabled`` (musicmoe/data/mel_degrade.py).  Targets always
come from the shards; evaluation always reads clean sources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from musicmoe.data.mix import CorpusSource, merge_token_meta, mixture_weights, split_stream, stream_id, stream_weights
from musicmoe.data.tasks import Task, get_task, task_weights
from musicmoe.models.batch import collate

log = logging.getLogger(__name__)

Index = tuple[int, int, int]  # (stream id, item index in that stream's token folder, per-draw random seed)


def _spread_repeats(batches: list[list[int]], keys: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Swap draws between ``batches`` (lists of draw indices, ``keys[k]`` = (stream, item) of draw ``k``) until no
    batch holds one example twice, where another batch can take the repeat (a stream with fewer items than draws
    repeats them, and sorting by length puts the copies side by side)."""
    for batch in batches:
        seen: set[tuple[int, int]] = set()
        for pos, k in enumerate(batch):
            if keys[k] not in seen:
                seen.add(keys[k])
                continue
            mine = {keys[x] for x in batch}
            for other in batches:
                theirs = {keys[x] for x in other}
                if other is batch or keys[k] in theirs:
                    continue
                swap = next((q for q, o in enumerate(other) if keys[o] not in mine), None)
                if swap is not None:
                    batch[pos], other[swap] = other[swap], k
                    seen.add(keys[batch[pos]])
                    break
    return batches


class MultiTaskBatchSampler(Sampler[list[Index]]):
    """Endless batches of ``(stream, item, draw_seed)`` triples (see the module docstring).

    ``items``: stream id -> item indices the stream can use; ``lengths``: stream id -> the cost (e.g. max of
    source and target lengths) of each of those items, same order; ``weights(step)`` -> stream id -> weight.
    With one corpus the stream ids are the task ids (:func:`musicmoe.data.mix.stream_id`).
    ``start`` is the number of batches already consumed (set on resume); ``accumulate`` converts batches into
    optimiser steps for the curriculum.
    """

    def __init__(
        self,
        items: Mapping[int, Sequence[int]],
        lengths: Mapping[int, Sequence[int]],
        weights: Callable[[int], Mapping[int, float]],
        batch_size: int,
        bucket_batches: int = 16,
        seed: int = 0,
        rank: int = 0,
        start: int = 0,
        accumulate: int = 1,
        world: int = 1,
    ) -> None:
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError("batch_size and bucket_batches must be >= 1")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} ranks")
        self.items = {t: np.asarray(v, dtype=np.int64) for t, v in items.items() if len(v)}
        self.lengths = {t: np.asarray(lengths[t], dtype=np.int64) for t in self.items}
        for t in self.items:
            if len(self.lengths[t]) != len(self.items[t]):
                raise ValueError(f"task {t}: {len(self.items[t])} items but {len(self.lengths[t])} lengths")
        if not self.items:
            raise ValueError("no task has any training item")  # the data module names the tasks first
        self.weights, self.batch_size, self.bucket = weights, batch_size, bucket_batches
        self.seed, self.rank, self.start, self.accumulate = seed, rank, start, max(1, accumulate)
        self.world = world
        self._cache: tuple[int, list[list[Index]]] | None = None

    def task_probs(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream ids, probabilities) at optimiser ``step``; streams without items get no share."""
        w = {t: float(v) for t, v in self.weights(step).items() if t in self.items and v > 0}
        if not w:  # nothing scheduled yet (cannot happen with a validated curriculum): use every task
            w = {t: 1.0 for t in self.items}
        ids = np.array(sorted(w), dtype=np.int64)
        p = np.array([w[t] for t in ids], dtype=np.float64)
        return ids, p / p.sum()

    def pool(self, index: int) -> list[list[Index]]:
        """The ``bucket_batches`` batches of pool ``index``."""
        if self._cache is not None and self._cache[0] == index:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, index, self.world])  # the same pool on every rank
        ids, p = self.task_probs(index * self.bucket // self.accumulate)
        size = self.batch_size * self.world  # one global batch
        n = self.bucket * size
        tasks = ids[rng.choice(len(ids), size=n, p=p)]
        picks = np.empty(n, dtype=np.int64)
        cost = np.empty(n, dtype=np.int64)
        for t in np.unique(tasks):
            rows = np.nonzero(tasks == t)[0]
            have = len(self.items[int(t)])
            j = rng.choice(have, size=len(rows), replace=have < len(rows))
            picks[rows] = self.items[int(t)][j]
            cost[rows] = self.lengths[int(t)][j]
        draws = rng.integers(0, 2**31 - 1, size=n)
        order = np.lexsort((rng.random(n), cost))
        keys = list(zip(tasks.tolist(), picks.tolist()))
        glob = _spread_repeats([order[i: i + size].tolist() for i in range(0, n, size)], keys)
        part = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        batches = [[(int(tasks[k]), int(picks[k]), int(draws[k])) for k in g[part]] for g in glob]
        batches = [batches[k] for k in rng.permutation(len(batches))]
        self._cache = (index, batches)
        return batches

    def batch(self, b: int) -> list[Index]:
        """Batch number ``b`` (0-based, counted over the whole run)."""
        return self.pool(b // self.bucket)[b % self.bucket]

    def __iter__(self) -> Iterator[list[Index]]:
        b = self.start
        while True:
            yield self.batch(b)
            b += 1


# --------------------------------------------------------------------------------------------- token data
def open_tokens(tokdir: str, split: str):
    """The token shards of ``split`` (``TokenDataError`` naming the folder when missing)."""
    from musicmoe.data.tokens import TokenDataset

    return TokenDataset(tokdir, split)


def task_items(lengths: Sequence[Mapping[str, int]], tasks: Sequence[Task], max_src: int, max_tgt: int,
               src_lengths: Sequence[Mapping[str, int]] | None = None,
               ) -> tuple[dict[int, list[int]], dict[int, list[int]], dict[str, int]]:
    """Items usable by each task (both modalities present, within length limits), their costs, skip counts.

    ``max_src``/``max_tgt`` count the specials ``collate`` adds (EOS on the source, BOS+EOS on the target).
    ``src_lengths``: per-item lengths when read as a source, where they differ (continuous features).
    """
    src_lengths = src_lengths if src_lengths is not None else lengths
    items: dict[int, list[int]] = {}
    costs: dict[int, list[int]] = {}
    skipped: dict[str, int] = {}
    for task in tasks:
        ids, cost = [], []
        for i, (rec, src_rec) in enumerate(zip(lengths, src_lengths)):
            if task.source not in src_rec or task.target not in rec:
                continue
            s, t = src_rec[task.source], rec[task.target]
            if s + 1 > max_src or t + 2 > max_tgt or t == 0:
                skipped[task.name] = skipped.get(task.name, 0) + 1
                continue
            ids.append(i)
            cost.append(max(s + 1, t + 2))
        items[task.id], costs[task.id] = ids, cost
    return items, costs, skipped


class OnlineImageSource:
    """Clean corpus crop -> random degradation -> image codec codes or pixel patches, in the process that loads
    the data (``codec_path`` empty: pixels only)."""

    def __init__(self, corpus_dir: str, codec_path: str, degrade_cfg: Any, patch: int = 16) -> None:
        self.corpus_dir, self.codec_path, self.degrade_cfg, self.patch = corpus_dir, codec_path, degrade_cfg, patch
        self._corpus = None
        self._codec = None
        self._index: dict[str, int] = {}

    def _open(self) -> None:
        if self._corpus is None:
            from musicmoe.data.shards import Corpus

            self._corpus = Corpus(self.corpus_dir, modalities=("image",))
            self._index = {r["key"]: i for i, r in enumerate(self._corpus.records)}
            if self.codec_path:
                from musicmoe.codecs.image import ImageCodec

                self._codec = ImageCodec.load(self.codec_path)

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the corpus and codec
        return {**self.__dict__, "_corpus": None, "_codec": None, "_index": {}}

    def _clean(self, key: str) -> np.ndarray:
        self._open()
        if key not in self._index:
            raise KeyError(f"example {key!r} of the token shards is not in the corpus {self.corpus_dir}")
        image = self._corpus[self._index[key]].image  # type: ignore[index]
        if image is None:
            raise ValueError(f"example {key!r} has no image in the corpus {self.corpus_dir}")
        return image

    def codes(self, key: str, seed: int) -> np.ndarray:
        """Flattened codec codes of a degraded copy of ``key``'s crop."""
        from musicmoe.codecs.image import flatten_codes
        from musicmoe.data.degrade import Degrader

        if not self.codec_path:
            raise ValueError("OnlineImageSource.codes needs an image codec (codec_path)")
        image = Degrader(self.degrade_cfg)(self._clean(key), np.random.default_rng(seed))  # (opens the codec)
        return flatten_codes(self._codec.encode(image))  # type: ignore[union-attr]

    def pixels(self, key: str, seed: int) -> tuple[np.ndarray, int]:
        """``(patches, grid rows)`` of a degraded copy of ``key``'s crop on the clean crop's patch grid (a copy that
        grew is scaled back to fit, one that shrank is padded with white), so its length is the clean length."""
        from musicmoe.data.degrade import Degrader, resize
        from musicmoe.data.features import image_patches

        clean = self._clean(key)
        image = Degrader(self.degrade_cfg)(clean, np.random.default_rng(seed))
        p = self.patch
        rows, cols = -(-clean.shape[0] // p), -(-clean.shape[1] // p)
        fit = min(rows * p / image.shape[0], cols * p / image.shape[1])
        if fit < 1.0:
            image = resize(image, fit)
        canvas = np.full((rows * p, cols * p), 255, dtype=np.uint8)
        h, w = min(image.shape[0], rows * p), min(image.shape[1], cols * p)
        canvas[:h, :w] = image[:h, :w]
        patches, got = image_patches(canvas, p)
        return patches, got


class TranslationDataset(Dataset):
    """Map-style dataset indexed by ``(stream, item, draw_seed)``: one source/target pair for ``collate``.

    ``views[c]`` is corpus ``c``'s token split as the model reads it (a
    :class:`~musicmoe.data.features.SourceView`); ``image_sources[c]`` (optional) its online image source;
    ``audio_degrader`` (optional) degrades log-mel audio sources with a generator seeded by the draw."""

    def __init__(self, views: Sequence[Any], image_sources: Sequence[OnlineImageSource | None] | None = None,
                 names: Sequence[str] | None = None, audio_degrader: Callable[..., np.ndarray] | None = None) -> None:
        self.views = list(views)
        self.image_sources = list(image_sources or [None] * len(self.views))
        self.names = list(names or [""] * len(self.views))
        self.audio_degrader = audio_degrader

    @property
    def tokens(self) -> list[Any]:
        """Each corpus's token split."""
        return [v.tokens for v in self.views]

    def __len__(self) -> int:
        return sum(len(v) for v in self.views)

    def __getitem__(self, index: Index) -> dict[str, Any]:
        stream, item, draw = index
        corpus, task_id = split_stream(stream)
        task = get_task(task_id)
        view = self.views[corpus]
        rec = view[item]
        out = {**view.source(rec, task.source, task.target), "src_modality": task.source, "tgt": rec[task.target],
               "tgt_modality": task.target, "task": task.id, "key": rec.get("key")}
        image_source = self.image_sources[corpus]
        if task.source == "image" and image_source is not None:
            if "src_features" in out:
                out["src_features"], out["src_rows"] = image_source.pixels(rec["key"], draw)
            else:
                out["src"] = image_source.codes(rec["key"], draw)
        if task.source == "audio" and self.audio_degrader is not None and "src_features" in out:
            out["src_features"] = self.audio_degrader(out["src_features"], np.random.default_rng(draw))
        out["corpus"] = self.names[corpus]
        return out


def _worker_init(_: int) -> None:
    """Loader workers run codecs (online image source): one torch thread each, or they oversubscribe the CPU."""
    torch.set_num_threads(1)


class TranslationDataModule(pl.LightningDataModule):
    """Multi-task training batches from the token shards of ``cfg.data.tokens``, or of the corpora mixed by
    ``cfg.data.sources`` (see the module docstring).

    ``prepare()`` opens the shards and returns ``{"vocab", "codecs", "tasks", "sources"}`` (the model is built
    from them; ``codecs`` is the record of :func:`musicmoe.training.codecs.codec_info`).
    The sampler position is saved in checkpoints (``state_dict``) and restored on resume.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.data = cfg.data
        self.tasks = [get_task(n) for n, w in self.data.tasks.items() if w > 0]
        self.sources = list(self.data.sources) or [CorpusSource(path=self.data.tokens)]
        self._tokens: list[Any] = []
        self._info: dict[str, Any] | None = None
        self._start_batch = 0
        self.sampler: MultiTaskBatchSampler | None = None
        self.skipped: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ setup
    def prepare(self) -> dict[str, Any]:
        if self._info is not None:
            return self._info
        if not self.tasks:
            raise ValueError("data.tasks names no task with a weight > 0 (e.g. data.tasks.omr=1.0)")
        from musicmoe.data.tokens import vocab_spec

        self._tokens = [open_tokens(src.path, self.data.train_split) for src in self.sources]
        mixed = len(self.sources) > 1 or bool(self.data.sources)
        metas = [(src.path, tok.meta) for src, tok in zip(self.sources, self._tokens)]
        if mixed:
            evaluated = self._eval_meta()
            meta = merge_token_meta(metas + ([evaluated] if evaluated else []))
        else:
            meta = dict(self._tokens[0].meta)
        vocab = vocab_spec(meta)
        m = self.cfg.model
        items: dict[int, list[int]] = {}
        costs: dict[int, list[int]] = {}
        self._tasks_of: list[list[int]] = []
        self.skipped = {}
        self._views = [self._source_view(tok) for tok in self._tokens]
        for c, (src, tok) in enumerate(zip(self.sources, self._tokens)):
            view = self._views[c]
            its, cst, skipped = task_items(tok.lengths(), self.tasks, m.max_src_len, m.max_tgt_len,
                                           view.source_lengths() if view.features is not None else None)
            if self.data.max_items:
                its = {t: v[: self.data.max_items] for t, v in its.items()}
                cst = {t: v[: self.data.max_items] for t, v in cst.items()}
            self._tasks_of.append([t for t, v in its.items() if v])
            for t in its:
                items[stream_id(c, t)], costs[stream_id(c, t)] = its[t], cst[t]
            for name, n in skipped.items():
                self.skipped[f"{src.name}/{name}" if mixed else name] = n
            if mixed and not self._tasks_of[-1] and src.weight > 0:
                raise ValueError(f"data.sources: {src.path} (split {self.data.train_split!r}) has no usable example "
                                 f"for any of the tasks {', '.join(t.name for t in self.tasks)}: it lacks their "
                                 f"modalities or every example is longer than model.max_src_len/max_tgt_len")
        empty = [t.name for t in self.tasks if not any(t.id in ts for ts in self._tasks_of)]
        if empty:
            where = self.sources[0].path if not mixed else "any of data.sources"
            raise ValueError(f"no usable training example for task(s) {', '.join(empty)} in {where} "
                             f"(split {self.data.train_split!r}): the shards lack a modality or every example is "
                             f"longer than model.max_src_len/max_tgt_len")
        for name, n in self.skipped.items():
            log.warning("%s: %d examples longer than the model's length limits are skipped", name, n)
        self._items, self._costs = items, costs
        from musicmoe.training.codecs import codec_info

        image_tokens = next((t for t in self._tokens if "image" in t.modalities), self._tokens[0])
        self._info = {"vocab": vocab.to_dict(), "codecs": codec_info(self.cfg, meta, image_tokens),
                      "tasks": [t.name for t in self.tasks],
                      "sources": [{"name": s.name, "path": str(Path(s.path).resolve()),
                                   "tasks": [get_task(t).name for t in ts]}
                                  for s, ts in zip(self.sources, self._tasks_of)]}
        self.vocab = vocab
        return self._info

    def _source_view(self, tok: Any) -> Any:
        """A token folder's split as the model reads it: continuous features from its corpus (``data.corpus``, else
        the one the tokens were made from) when a task's source is read so (``model.image_input``/``audio_input``)."""
        from musicmoe.data.features import FeatureSpec, SourceView, source_view

        spec = FeatureSpec.from_model(self.cfg.model)
        if not any(spec.uses(t.source) for t in self.tasks):
            return SourceView(tok, None)
        return source_view(tok, self.cfg.model, self.data.corpus if not self.data.sources else "")

    def _eval_meta(self) -> tuple[str, dict[str, Any]] | None:
        """``data.tokens`` (the folder evaluated on) joins the compatibility check of a mixed run when it exists."""
        from musicmoe.data.tokens import META_FILE, read_meta

        if any(Path(s.path).resolve() == Path(self.data.tokens).resolve() for s in self.sources):
            return None
        if not (Path(self.data.tokens) / META_FILE).is_file():
            return None
        return self.data.tokens, read_meta(Path(self.data.tokens))

    def _image_sources(self) -> list[OnlineImageSource | None]:
        if self.data.image_source != "online" or not any(t.source == "image" for t in self.tasks):
            return [None] * len(self.sources)
        from musicmoe.data.features import FeatureSpec

        pixels = FeatureSpec.from_model(self.cfg.model).image
        codecs = self._info["codecs"] if self._info else {}
        codec = "" if pixels else str((codecs.get("image") or {}).get("path", ""))
        out: list[OnlineImageSource | None] = []
        for src, tok in zip(self.sources, self._tokens):
            if not pixels and "image" not in tok.modalities:  # a pixel reader's images come from the corpus
                out.append(None)
                continue
            corpus = (self.data.corpus if not self.data.sources else "") or str(tok.meta.get("corpus", ""))
            if not corpus or not (codec or pixels):
                raise ValueError(f"data.image_source=online needs the corpus of {src.path} (data.corpus, default: "
                                 f"the one the tokens were made from) and the image codec (image_codec.checkpoint)")
            out.append(OnlineImageSource(corpus, codec, self.data.degrade, self.cfg.model.patch))
        return out

    def _audio_degrader(self) -> Any:
        """The log-mel degrader of ``data.audio_degrade`` when it is on and a task reads audio (as mel frames)."""
        cfg = self.data.audio_degrade
        if not cfg.active or not any(t.source == "audio" for t in self.tasks):
            return None
        from musicmoe.data.features import FeatureSpec
        from musicmoe.data.mel_degrade import MelDegrader

        spec = FeatureSpec.from_model(self.cfg.model)
        if not spec.audio:
            raise ValueError("data.audio_degrade degrades log-mel frames: it needs model.audio_input=mel "
                             f"(got {self.cfg.model.audio_input!r})")
        return MelDegrader(cfg, spec.mel_stack)

    def weights(self, step: int) -> dict[int, float]:
        """Stream id -> sampling weight at optimiser ``step`` (corpus share x task share)."""
        w = task_weights(self.data.tasks, self.data.curriculum, step)
        task_w = {get_task(n).id: v for n, v in w.items()}
        return stream_weights(mixture_weights(self.sources, step), task_w, self._tasks_of)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def sampler_for(self, start: int, rank: int = 0, accumulate: int = 1, world: int = 1) -> MultiTaskBatchSampler:
        """The batch sampler of rank ``rank`` of ``world``, positioned at batch ``start``."""
        self.prepare()
        return MultiTaskBatchSampler(self._items, self._costs, self.weights, self.data.batch_size,
                                     self.data.bucket_batches, seed=self.cfg.run.seed, rank=rank, start=start,
                                     accumulate=accumulate, world=world)

    def train_dataloader(self) -> DataLoader:
        self.prepare()
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        if trainer is not None and trainer.global_step and not self._start_batch:
            self._start_batch = trainer.global_step * accumulate
        self.sampler = self.sampler_for(self._start_batch, rank, accumulate, world)
        m = self.cfg.model
        fn = partial(collate, vocab=self.vocab, max_src_len=m.max_src_len, max_tgt_len=m.max_tgt_len,
                     pad_to_multiple=self.data.pad_to_multiple)
        workers = self.data.num_workers
        return DataLoader(
            TranslationDataset(self._views, self._image_sources(), [src.name for src in self.sources],
                               self._audio_degrader()),
            batch_sampler=self.sampler, collate_fn=fn, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init if workers > 0 else None,
        )

    # --------------------------------------------------------------------------------- resume state
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        batches = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        return {"batches": int(batches)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._start_batch = int(state_dict.get("batches", 0))
