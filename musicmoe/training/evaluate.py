"""Evaluation of a translator per task: teacher-forced loss and metrics of generated outputs.

Metrics by the task's target modality (``<task>/<name>`` keys; TensorBoard tags ``eval/<task>/<name>``):

* every task: ``loss`` (teacher-forced cross-entropy per target token, on up to ``eval.loss_examples``);
* lmx: ``ser`` and ``ser_no_tuplets`` (symbol error rate, %), ``invalid`` (fraction of outputs whose
  delinearization reported problems: malformed output is reported, never raised);
* midi: ``onset_f1`` and ``onset_offset_f1`` (note-level, mir_eval tolerances);
* audio: ``mel_distance`` (multi-resolution log-mel L1 to the reference), ``chroma_similarity``, and
  ``amt_onset_f1``: the generated audio re-encoded with the audio codec and transcribed by the model's own amt
  task, scored against the reference MIDI (needs ``eval.roundtrip`` and the amt task trained); ``failed``: how
  many generations were empty, too short to analyse or non-finite (scored with each metric's worst value);
* image: ``token_accuracy`` (generated codes vs the reference codes) and ``omr_ser``: the generated image
  (decoded to pixels, re-encoded) read back by the model's own omr task, SER against the reference LMX.

Does the model read its source?  With ``eval.shuffled_baseline`` every example is also given the source of
another example of the evaluated set (the set rotated by one: example ``k`` keeps its own target and gets the
source of example ``k + 1``; a set of one example has no shuffled figures):

* ``loss_shuffled``: the teacher-forced loss with those sources, and ``source_gap`` = loss_shuffled - loss (nats
  per target token; ~0 for a model that only models the target language);
* ``<metric>_shuffled`` for the target's main metrics (:data:`SHUFFLED_METRICS`), decoded with the same settings
  from the shuffled sources and scored against the true references: the language-model-only baseline.

Generation length is the configured budget of the target modality (``eval.decode_budget`` /
``eval.max_new_tokens``, capped at the model's ``max_tgt_len - 2``), never the reference's length, in the main,
shuffled and round-trip decodes alike.

References are the example's own tokens decoded with the same codecs (so a metric measures the translation,
not the codecs).  Metrics are torchmetrics objects with summed states, so values are corpus-level and right
across ranks; each rank generates its share of the examples (the rotation is over the whole evaluated set, so
shuffled figures do not depend on the number of ranks).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from musicmoe.data.tasks import Task, get_task
from musicmoe.models.batch import collate
from musicmoe.training.codecs import CodecSet
from musicmoe.training.config import EvalConfig

log = logging.getLogger(__name__)

METRICS = {
    "lmx": ("ser", "ser_no_tuplets", "invalid"),
    "midi": ("onset_f1", "onset_offset_f1"),
    "audio": ("mel_distance", "chroma_similarity", "amt_onset_f1", "failed"),
    "image": ("token_accuracy", "omr_ser"),
}


# The main metrics of each target modality, also measured from shuffled sources (``<name>_shuffled``).
SHUFFLED_METRICS = {
    "lmx": ("ser", "ser_no_tuplets"),
    "midi": ("onset_f1",),
    "audio": ("mel_distance", "chroma_similarity"),
    "image": ("token_accuracy",),
}
# Metrics where a higher value is better (the others, loss included, are better lower).
HIGHER_IS_BETTER = {"onset_f1", "onset_offset_f1", "chroma_similarity", "amt_onset_f1", "token_accuracy"}
SHUFFLED = "_shuffled"
# Per-fold spread of the first main metric of each target (``eval.spread_folds``): ``<name>_fold_<stat>``.
FOLD_STATS = ("median", "min", "max")


def piece_of(key: str) -> str:
    """The piece an example key belongs to (corpus keys are ``<piece>__s<system>``)."""
    return key.rsplit("__", 1)[0]


def fold_of(key: str, folds: int) -> int:
    """A stable fold of an example's piece (the same on every machine and run)."""
    import hashlib

    return int.from_bytes(hashlib.sha1(piece_of(key).encode()).digest()[:4], "big") % folds


def metric_names(task: Task, shuffled: bool = False) -> list[str]:
    """Metric names (without the task prefix) of ``task``; with ``shuffled`` also its baseline figures."""
    names = ["loss", *METRICS[task.target]]
    if shuffled:
        names += ["loss" + SHUFFLED, "source_gap", *(m + SHUFFLED for m in SHUFFLED_METRICS[task.target])]
    return names


def rotated(ids: Sequence[int]) -> list[int]:
    """The donors of the shuffled baseline: example ``ids[k]`` gets the source of ``ids[k + 1]`` (cyclically)."""
    return [*ids[1:], *ids[:1]]


def source_benefit(name: str, value: float, shuffled: float) -> float:
    """How much the true source improves metric ``name`` over its shuffled baseline (> 0: the model reads it).

    For the loss this is ``source_gap`` (loss_shuffled - loss)."""
    return value - shuffled if name in HIGHER_IS_BETTER else shuffled - value


@dataclass
class Sample:
    """One generated example kept for logging: decoded prediction and reference."""

    task: str
    key: str
    modality: str
    pred: Any
    ref: Any
    problems: list[str] = field(default_factory=list)


def _empty(spec) -> np.ndarray:
    return np.zeros((spec.codebooks, 0) if spec.multi_codebook else (0,), dtype=np.int64)


class Evaluator:
    """Loss and generation metrics of ``model`` on token examples (see the module docstring)."""

    def __init__(self, model: Any, codecs: CodecSet, cfg: EvalConfig, trained_tasks: Sequence[str] = (),
                 device: torch.device | str | None = None, autocast: Any = None) -> None:
        self.model, self.codecs, self.cfg = model, codecs, cfg
        self.trained = {get_task(t).name for t in trained_tasks}
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.autocast = autocast  # a context-manager factory (e.g. Lightning's precision forward context)
        self.view: Any = None  # the SourceView being evaluated (set by evaluate / source_view)
        self._world = 1  # ranks sharing the evaluation in progress (set by evaluate)
        # task -> one record per generated LMX example (key, errors, gold tokens, prediction, reference); filled by
        # evaluate when ``keep_predictions`` is set (``musicmoe eval`` writes them as predictions_<task>.jsonl)
        self.keep_predictions = False
        self.predictions: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------------------------- helpers
    def _ctx(self):
        import contextlib

        return self.autocast() if self.autocast is not None else contextlib.nullcontext()

    def _source(self, item: dict[str, Any], task: Task) -> Any:
        """The model input of ``task`` for an example: every read of an example's source goes through here.

        The ``collate`` fields of the source (codes or continuous features, image grid heights), from the
        :class:`~musicmoe.data.features.SourceView` that :meth:`evaluate` reads (plain codes for a bare array)."""
        if self.view is not None:
            return self.view.source(item, task.source, task.target)
        return item[task.source]

    def _read_back(self, modality: str, value: np.ndarray, sample_rate: int | None = None) -> Any:
        """A generated image (pixels) or waveform as the model's own omr/amt would read it: continuous features when
        the model reads that modality so (``model.image_input``/``audio_input``), else the codec's codes."""
        from musicmoe.data.features import FeatureSpec, image_patches

        spec = FeatureSpec.from_model(self.model.config)
        if modality == "image":
            if spec.image:
                feats, rows = image_patches(value, spec.patch)
                return {"src_features": feats, "src_rows": rows}
            rows = -(-value.shape[0] // self.codecs.image.cfg.patch)
            return {"src": self.codecs.encode_image(value), "src_rows": rows}
        if spec.audio:
            return {"src_features": spec.audio_features(value, sample_rate or spec.sample_rate), "src_rows": 0}
        return self.codecs.audio.encode(value)

    def source_view(self, dataset: Any) -> Any:
        """``dataset`` as this model reads it (see :class:`~musicmoe.data.features.SourceView`); kept for
        :meth:`_source`. Continuous features are cached on the dataset, so repeated evaluations compute them once."""
        from musicmoe.data.features import FeatureSpec, SourceView, source_view

        if isinstance(dataset, SourceView):
            self.view = dataset
            return dataset
        views = getattr(dataset, "_musicmoe_views", None)
        if views is None:
            views = {}
            try:
                dataset._musicmoe_views = views
            except AttributeError:
                pass
        spec = FeatureSpec.from_model(self.model.config)  # models reading the split differently get their own view
        if spec not in views:
            views[spec] = source_view(dataset, self.model.config)
        self.view = views[spec]
        return self.view

    def budget(self, modality: str) -> int:
        """How many tokens (audio: frames) to generate at most for a ``modality`` target (from the config only)."""
        return max(1, min(self.model.config.max_tgt_len - 2, self.cfg.budget(modality)))

    def _batch(self, pairs: Sequence[tuple[Any, str, Any, str, int]]):
        """Collated batch of (source, source modality, target, target modality, task id); a source is an array
        of codes or a dict of ``collate`` fields (see :meth:`_source`)."""
        cfg = self.model.config
        examples = [{**(s if isinstance(s, dict) else {"src": s}), "src_modality": sm, "tgt": t, "tgt_modality": tm,
                     "task": k} for s, sm, t, tm, k in pairs]
        return collate(examples, self.model.vocab, max_src_len=cfg.max_src_len,
                       max_tgt_len=cfg.max_tgt_len).to(self.device)

    @torch.no_grad()
    def translate(self, task: Task, sources: Sequence[Any], max_lens: Sequence[int] | None = None,
                  strategy: str | None = None, seed: int = 0) -> list[np.ndarray]:
        """Generated target arrays for ``sources`` (batched by ``eval.batch_size``).

        ``max_lens``: a length cap per source (default: the configured budget of the task's target modality);
        always capped at the model's ``max_tgt_len - 2``."""
        cfg = self.cfg
        limit = self.model.config.max_tgt_len - 2
        budget = self.budget(task.target)
        out: list[np.ndarray] = []
        empty = _empty(self.model.vocab[task.target])
        strategy = strategy or cfg.decoding_of(task.name)
        gen = torch.Generator(device=self.device).manual_seed(seed) if strategy == "top_p" else None
        for i in range(0, len(sources), cfg.batch_size):
            part = sources[i: i + cfg.batch_size]
            caps = [budget] * len(part) if max_lens is None else [min(limit, m) for m in max_lens[i: i + len(part)]]
            batch = self._batch([(s, task.source, empty, task.target, task.id) for s in part])
            with self._ctx():
                seqs = self.model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                           max_len=max(1, max(caps)), strategy=strategy,
                                           beam_size=cfg.beam_size, top_p=cfg.top_p, temperature=cfg.temperature,
                                           generator=gen, src_features=batch.src_features, src_rows=batch.src_rows,
                                           tgt_rows=batch.tgt_rows, ctc_weight=cfg.ctc_weight)
            out.extend(s.detach().cpu().numpy().astype(np.int64) for s in seqs)
        return out

    @torch.no_grad()
    def loss(self, task: Task, items: Sequence[dict[str, Any]],
             sources: Sequence[Any] | None = None) -> tuple[float, int]:
        """(summed CE, predicted target tokens) of ``task`` on ``items`` (teacher forcing).

        ``sources``: the model input paired with each item's target (default: the items' own sources)."""
        if sources is None:
            sources = [self._source(it, task) for it in items]
        if len(sources) != len(items):
            raise ValueError(f"{len(sources)} sources for {len(items)} examples")
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(items), self.cfg.batch_size):
                part = items[i: i + self.cfg.batch_size]
                srcs = sources[i: i + self.cfg.batch_size]
                batch = self._batch([(s, task.source, it[task.target], task.target, task.id)
                                     for s, it in zip(srcs, part)])
                with self._ctx():
                    out = self.model(batch)
                n = int(batch.tgt_mask.sum()) - len(batch)
                total += float(out.ce_loss) * n
                count += n
        finally:
            self.model.train(was_training)
        return total, count

    # -------------------------------------------------------------------------------------- metrics
    def evaluate(self, dataset: Any, tasks: Sequence[Task], rank: int = 0, world: int = 1,
                 reduce: Any = None, keep_samples: int = 0) -> tuple[dict[str, float], list[Sample]]:
        """Metrics of every task on ``dataset`` (a TokenDataset); ``reduce(tensor)`` sums across ranks."""
        metrics: dict[str, float] = {}
        samples: list[Sample] = []
        self._world = world
        dataset = self.source_view(dataset)  # sources as the model reads them (codes or continuous features)
        lengths, src_lengths = dataset.lengths(), dataset.source_lengths()
        cache: dict[int, dict[str, Any]] = {}

        def load(ids: Sequence[int]) -> list[dict[str, Any]]:
            for i in ids:
                if i not in cache:
                    cache[i] = dataset[i]
            return [cache[i] for i in ids]

        for task in tasks:
            usable = [i for i, (rec, src) in enumerate(zip(lengths, src_lengths)) if task.source in src
                      and task.target in rec and rec[task.target] > 0]
            if not usable:
                log.warning("eval: no %s example with both %s and %s in %s", task.name, task.source, task.target,
                            getattr(dataset, "split", "?"))
                continue
            # the same decision on every rank (it depends on the whole set), so every rank reduces alike
            all_loss = usable[: self.cfg.loss_examples]
            shuffle = self.cfg.shuffled_baseline and len(all_loss) > 1
            mine = all_loss[rank::world]
            loss_items = load(mine)
            figures = list(self.loss(task, loss_items)) if loss_items else [0.0, 0]
            if shuffle:
                donors = load(rotated(all_loss)[rank::world])
                figures += (list(self.loss(task, loss_items, [self._source(d, task) for d in donors]))
                            if loss_items else [0.0, 0])
            t = torch.tensor([float(f) for f in figures], dtype=torch.float64)
            if reduce is not None:
                t = reduce(t)
            if t[1] > 0:
                metrics[f"{task.name}/loss"] = float(t[0] / t[1])
                if shuffle and t[3] > 0:
                    metrics[f"{task.name}/loss{SHUFFLED}"] = float(t[2] / t[3])
                    metrics[f"{task.name}/source_gap"] = (metrics[f"{task.name}/loss{SHUFFLED}"]
                                                          - metrics[f"{task.name}/loss"])
            if self.cfg.max_examples:
                gen_ids = usable[: self.cfg.max_examples]
                mine = gen_ids[rank::world]
                items = load(mine)
                shuffled = None  # None: no baseline; a list (maybe empty on this rank): the baseline's sources
                if self.cfg.shuffled_baseline and len(gen_ids) > 1:
                    shuffled = [self._source(d, task) for d in load(rotated(gen_ids)[rank::world])]
                keep = keep_samples if rank == 0 else 0
                values, task_samples = self._generation_metrics(task, items, [dataset_grid(dataset, i) for i in mine],
                                                                keep, shuffled)
                metrics.update({f"{task.name}/{k}": v for k, v in values.items()})
                samples.extend(task_samples)
        return metrics, samples

    def _decoded(self, modality: str, arrays: Sequence[np.ndarray]) -> list[Any]:
        """Target arrays in the form their main metrics score: LMX tokens, PrettyMIDI, waveforms, image codes."""
        c = self.codecs
        if modality == "lmx":
            return [c.lmx_tokens(a) for a in arrays]
        if modality in ("midi", "audio"):
            return [c.decode(modality, a).value for a in arrays]
        return list(arrays)

    def _main_scores(self, modality: str, preds: list[Any], refs: list[Any]) -> dict[str, float]:
        """The main metrics of decoded predictions against decoded references (torchmetrics: synced across ranks,
        so every rank calls this alike, with or without examples)."""
        from musicmoe import metrics as M

        if modality == "lmx":
            ser, ser_nt = M.SymbolErrorRate(), M.SymbolErrorRate(ignore_tuplets=True)
            ser.update(preds, refs)
            ser_nt.update(preds, refs)
            return {"ser": float(ser.compute()), "ser_no_tuplets": float(ser_nt.compute())}
        if modality == "midi":
            f1 = M.NoteF1()
            f1.update(preds, refs)
            res = f1.compute()
            return {"onset_f1": float(res["onset_f1"]), "onset_offset_f1": float(res["onset_offset_f1"])}
        if modality == "audio":
            sr = self.codecs.audio.sample_rate
            mel, chroma = M.MelDistance(sr), M.ChromaSimilarity(sr)
            mel.update(preds, refs)
            chroma.update(preds, refs)
            return {"mel_distance": float(mel.compute()), "chroma_similarity": float(chroma.compute()),
                    "failed": float(mel.failures())}  # both metrics fail the same predictions
        acc = M.TokenAccuracy()
        acc.update(preds, refs)
        return {"token_accuracy": float(acc.compute())}

    def _fold_spread(self, modality: str, items: list[dict[str, Any]], preds: list[Any],
                     refs: list[Any]) -> dict[str, float]:
        """``<name>_fold_{median,min,max}`` of the target's first main metric over ``eval.spread_folds`` folds of
        pieces (see :class:`~musicmoe.training.config.EvalConfig`); empty when off, over several ranks, or under 2 folds
        hold examples."""
        folds = self.cfg.spread_folds
        if folds < 2 or not items or self._world > 1:  # each rank holds only its share of the pieces
            return {}
        name = SHUFFLED_METRICS[modality][0]
        groups: dict[int, list[int]] = {}
        for k, it in enumerate(items):
            groups.setdefault(fold_of(str(it.get("key", k)), folds), []).append(k)
        if len(groups) < 2:
            return {}
        values = [self._main_scores(modality, [preds[k] for k in ks], [refs[k] for k in ks])[name]
                  for ks in groups.values()]
        return {f"{name}_fold_median": float(np.median(values)), f"{name}_fold_min": float(min(values)),
                f"{name}_fold_max": float(max(values))}

    def _generation_metrics(self, task: Task, items: list[dict[str, Any]], grids: list[tuple[int, int] | None],
                            keep: int, shuffled: Sequence[Any] | None = None) -> tuple[dict[str, float], list[Sample]]:
        """Generation metrics of ``items``; with ``shuffled`` (other examples' sources, one per item) also the
        target's main metrics of outputs decoded from those sources, against the items' own references."""
        from musicmoe import metrics as M

        samples: list[Sample] = []
        out: dict[str, float] = {}
        c = self.codecs
        if task.target == "audio" and not c.available("audio"):
            log.warning("eval %s: no audio codec available, audio metrics skipped", task.name)
            return out, samples
        refs = [it[task.target] for it in items]
        preds = self.translate(task, [self._source(it, task) for it in items]) if items else []
        dec_preds, dec_refs = self._decoded(task.target, preds), self._decoded(task.target, refs)
        out.update(self._main_scores(task.target, dec_preds, dec_refs))
        out.update(self._fold_spread(task.target, items, dec_preds, dec_refs))
        if shuffled is not None:
            if len(shuffled) != len(items):
                raise ValueError(f"{len(shuffled)} shuffled sources for {len(items)} examples")
            base = self.translate(task, list(shuffled)) if shuffled else []
            scores = self._main_scores(task.target, self._decoded(task.target, base), dec_refs)
            out.update({k + SHUFFLED: v for k, v in scores.items() if k in SHUFFLED_METRICS[task.target]})
        if task.target == "lmx":
            from torchmetrics.aggregation import MeanMetric

            invalid = MeanMetric()  # fraction of outputs whose MusicXML needed repairs (summed states)
            for k, p in enumerate(preds):
                dec = c.decode("lmx", p)
                invalid.update(1.0 if dec.problems else 0.0)
                if k < keep:
                    samples.append(Sample(task.name, items[k]["key"], "lmx", " ".join(dec_preds[k]),
                                          " ".join(dec_refs[k]), dec.problems))
            out["invalid"] = float(invalid.compute())
            if self.keep_predictions:
                from musicmoe.metrics.ser_counts import ser_counts

                self.predictions[task.name] = [
                    {"key": it.get("key"), "errors": ser_counts([p], [r])[0], "gold_tokens": len(r),
                     "prediction": " ".join(p), "reference": " ".join(r)}
                    for it, p, r in zip(items, dec_preds, dec_refs)]
        elif task.target == "midi":
            samples += [Sample(task.name, items[k]["key"], "midi", dec_preds[k], dec_refs[k])
                        for k in range(min(keep, len(dec_preds)))]
        elif task.target == "audio":
            waves, ref_waves = dec_preds, dec_refs
            if self.cfg.roundtrip and "amt" in self.trained:
                with_midi = [k for k, it in enumerate(items) if "midi" in it and waves[k].size]
                f1 = M.NoteF1()
                if with_midi:
                    amt = get_task("amt")
                    sources = [self._read_back("audio", waves[k], c.audio.sample_rate) for k in with_midi]
                    mids = self.translate(amt, sources)
                    f1.update([c.decode("midi", m).value for m in mids],
                              [c.decode("midi", items[k]["midi"]).value for k in with_midi])
                out["amt_onset_f1"] = float(f1.compute()["onset_f1"])
            samples += [Sample(task.name, items[k]["key"], "audio", waves[k], ref_waves[k])
                        for k in range(min(keep, len(waves)))]
        elif task.target == "image":
            if not c.available("image"):
                log.warning("eval %s: no image codec available, image read-back skipped", task.name)
                return out, samples
            pics, ref_pics = [], []
            for k, p in enumerate(preds):
                h = grids[k][0] if grids[k] else None
                dec = c.decode("image", p, height_patches=h)
                pics.append(dec.value)
                if k < keep:
                    ref_pics.append(c.decode("image", refs[k], height_patches=h).value)
            if self.cfg.roundtrip and "omr" in self.trained:
                with_lmx = [k for k, it in enumerate(items) if "lmx" in it]
                ser = M.SymbolErrorRate()
                if with_lmx:
                    omr = get_task("omr")
                    lmx = self.translate(omr, [self._read_back("image", pics[k]) for k in with_lmx])
                    ser.update([c.lmx_tokens(x) for x in lmx], [c.lmx_tokens(items[k]["lmx"]) for k in with_lmx])
                out["omr_ser"] = float(ser.compute())
            samples += [Sample(task.name, items[k]["key"], "image", pics[k], ref_pics[k])
                        for k in range(min(keep, len(ref_pics)))]
        return out, samples


def dataset_grid(dataset: Any, i: int) -> tuple[int, int] | None:
    """The image code grid of example ``i`` when the dataset records it."""
    try:
        grid = dataset.image_grid(i)
    except (AttributeError, KeyError, IndexError):
        return None
    return grid if grid[0] > 0 else None


# ----------------------------------------------------------------------------------------- logging
def piano_roll_image(pm: Any, fs: int = 50) -> np.ndarray:
    """A uint8 piano-roll picture (pitch up, time right) of a PrettyMIDI."""
    roll = pm.get_piano_roll(fs=fs) if pm.instruments else np.zeros((128, 1))
    if roll.shape[1] == 0:
        roll = np.zeros((128, 1))
    roll = (roll > 0).astype(np.uint8)[::-1]
    rows = np.nonzero(roll.any(axis=1))[0]
    lo, hi = (max(0, rows.min() - 2), min(128, rows.max() + 3)) if rows.size else (40, 90)
    return (255 - 255 * roll[lo:hi]).astype(np.uint8)


def _stack(a: np.ndarray, b: np.ndarray, gap: int = 6) -> np.ndarray:
    w = max(a.shape[1], b.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, w - x.shape[1])), constant_values=255)  # noqa: E731
    return np.concatenate([pad(a), np.full((gap, w), 128, np.uint8), pad(b)], axis=0)


def log_samples(writer: Any, samples: Sequence[Sample], step: int, sample_rate: int | None = None) -> None:
    """Generated examples to TensorBoard: images/piano rolls (prediction above reference), audio, LMX text."""
    seen: dict[str, int] = {}
    for s in samples:
        k = seen[s.task] = seen.get(s.task, -1) + 1
        tag = f"samples/{s.task}/{k}"
        if s.modality == "image":
            writer.add_image(tag, _stack(s.pred, s.ref), step, dataformats="HW")
        elif s.modality == "midi":
            writer.add_image(tag, _stack(piano_roll_image(s.pred), piano_roll_image(s.ref)), step, dataformats="HW")
        elif s.modality == "audio" and sample_rate:
            for name, wave in (("pred", s.pred), ("ref", s.ref)):
                if len(wave):
                    writer.add_audio(f"{tag}/{name}", torch.from_numpy(np.clip(wave, -1, 1))[None], step,
                                     sample_rate=sample_rate)
        elif s.modality == "lmx":
            note = f"\n\nproblems: {'; '.join(s.problems[:5])}" if s.problems else ""
            writer.add_text(tag, f"**{s.key}**\n\npred: `{s.pred}`\n\nref: `{s.ref}`{note}", step)


def _cell(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.4g}"


def format_table(metrics: dict[str, float]) -> str:
    """A markdown table: one row per task and metric, in the order the metrics come.

    When shuffled baselines were measured, each metric's ``shuffled`` figure stands beside it, with the ``source
    gap``: how much the true source improves the metric over that baseline (> 0: the model reads its input; for
    the loss this is ``<task>/source_gap``, nats per target token)."""
    rows: dict[tuple[str, str], None] = {}
    for key in metrics:
        task, _, name = key.partition("/")
        if not name or name == "source_gap" or "_fold_" in name:
            continue
        rows[task, name.removesuffix(SHUFFLED)] = None
    with_base = any(k.endswith(SHUFFLED) for k in metrics)
    with_folds = any("_fold_" in k for k in metrics)
    header = (["task", "metric", "value"] + (["shuffled", "source gap"] if with_base else [])
              + (["folds: median [min, max]"] if with_folds else []))
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for task, name in rows:
        value, base = metrics.get(f"{task}/{name}"), metrics.get(f"{task}/{name}{SHUFFLED}")
        cells = [task, name, _cell(value)]
        if with_base:
            gap = metrics.get(f"{task}/source_gap") if name == "loss" else None
            if gap is None and value is not None and base is not None:
                gap = source_benefit(name, value, base)
            cells += [_cell(base), _cell(gap)]
        if with_folds:
            med = metrics.get(f"{task}/{name}_fold_median")
            cells.append("" if med is None else f"{_cell(med)} [{_cell(metrics.get(f'{task}/{name}_fold_min'))}, "
                                                 f"{_cell(metrics.get(f'{task}/{name}_fold_max'))}]")
        lines.append("| " + " | ".join(cells) + " |")
    if with_base:
        lines.append("\nshuffled: every example given another example's source (the language-model-only baseline); "
                     "source gap > 0: the true source helps")
    if with_folds:
        lines.append("folds: the metric on disjoint folds of the evaluated pieces (its spread over held-out subsets)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- callback
def eval_dataset(tokens: str, split: str):
    from musicmoe.data.tokens import TokenDataError, TokenDataset

    try:
        ds = TokenDataset(tokens, split)
    except TokenDataError:
        ds = None
    if ds is None or len(ds) == 0:
        log.warning("evaluation split %r of %s is missing or empty: evaluating on the training split", split, tokens)
        ds = TokenDataset(tokens, "train")
    return ds


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
