"""Evaluation of a translator per task: teacher-forced loss and metrics of generated outputs.

Metrics by the task's target modality (``<task>/<name>`` keys; TensorBoard tags ``eval/<task>/<name>``):

* every task: ``loss`` (teacher-forced cross-entropy per target token, on up to ``eval.loss_examples``);
* lmx: ``ser`` and ``ser_no_tuplets`` (symbol error rate, %), ``invalid`` (fraction of outputs whose
  delinearization reported problems: malformed output is reported, never raised);
* midi: ``onset_f1`` and ``onset_offset_f1`` (note-level, mir_eval tolerances);
* audio: ``mel_distance`` (multi-resolution log-mel L1 to the reference), ``chroma_similarity``, and
  ``amt_onset_f1``: the generated audio re-encoded with the audio codec and transcribed by the model's own amt
  task, scored against the reference MIDI (needs ``eval.roundtrip`` and the amt task trained);
* image: ``token_accuracy`` (generated codes vs the reference codes) and ``omr_ser``: the generated image
  (decoded to pixels, re-encoded) read back by the model's own omr task, SER against the reference LMX.

References are the example's own tokens decoded with the same codecs (so a metric measures the translation,
not the codecs).  Metrics are torchmetrics objects with summed states, so values are corpus-level and right
across ranks; each rank generates its share of the examples.
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
    "audio": ("mel_distance", "chroma_similarity", "amt_onset_f1"),
    "image": ("token_accuracy", "omr_ser"),
}


def metric_names(task: Task) -> list[str]:
    return ["loss", *METRICS[task.target]]


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

    # ------------------------------------------------------------------------------------- helpers
    def _ctx(self):
        import contextlib

        return self.autocast() if self.autocast is not None else contextlib.nullcontext()

    def _batch(self, pairs: Sequence[tuple[Any, str, Any, str, int]]):
        cfg = self.model.config
        examples = [{"src": s, "src_modality": sm, "tgt": t, "tgt_modality": tm, "task": k}
                    for s, sm, t, tm, k in pairs]
        return collate(examples, self.model.vocab, max_src_len=cfg.max_src_len,
                       max_tgt_len=cfg.max_tgt_len).to(self.device)

    @torch.no_grad()
    def translate(self, task: Task, sources: Sequence[np.ndarray], max_lens: Sequence[int] | None = None,
                  strategy: str | None = None, seed: int = 0) -> list[np.ndarray]:
        """Generated target arrays for ``sources`` (batched by ``eval.batch_size``)."""
        cfg = self.cfg
        limit = self.model.config.max_tgt_len - 2
        out: list[np.ndarray] = []
        empty = _empty(self.model.vocab[task.target])
        gen = torch.Generator(device=self.device).manual_seed(seed) if (strategy or cfg.decoding) == "top_p" else None
        for i in range(0, len(sources), cfg.batch_size):
            part = sources[i: i + cfg.batch_size]
            caps = [limit] * len(part) if max_lens is None else [min(limit, m) for m in max_lens[i: i + len(part)]]
            batch = self._batch([(s, task.source, empty, task.target, task.id) for s in part])
            with self._ctx():
                seqs = self.model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality,
                                           max_len=max(1, max(caps)), strategy=strategy or cfg.decoding,
                                           beam_size=cfg.beam_size, top_p=cfg.top_p, temperature=cfg.temperature,
                                           generator=gen)
            out.extend(s.detach().cpu().numpy().astype(np.int64) for s in seqs)
        return out

    def _max_len(self, ref_len: int) -> int:
        if self.cfg.max_new_tokens:
            return self.cfg.max_new_tokens
        return 2 * ref_len + 16

    @torch.no_grad()
    def loss(self, task: Task, items: Sequence[dict[str, Any]]) -> tuple[float, int]:
        """(summed CE, predicted target tokens) of ``task`` on ``items`` (teacher forcing)."""
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(items), self.cfg.batch_size):
                part = items[i: i + self.cfg.batch_size]
                batch = self._batch([(it[task.source], task.source, it[task.target], task.target, task.id)
                                     for it in part])
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
        lengths = dataset.lengths()
        for task in tasks:
            usable = [i for i, rec in enumerate(lengths) if task.source in rec and task.target in rec
                      and rec[task.target] > 0]
            if not usable:
                log.warning("eval: no %s example with both %s and %s in %s", task.name, task.source, task.target,
                            getattr(dataset, "split", "?"))
                continue
            loss_ids = usable[: self.cfg.loss_examples][rank::world]
            loss_items = [dataset[i] for i in loss_ids]
            total, count = self.loss(task, loss_items) if loss_items else (0.0, 0)
            t = torch.tensor([total, float(count)], dtype=torch.float64)
            if reduce is not None:
                t = reduce(t)
            if t[1] > 0:
                metrics[f"{task.name}/loss"] = float(t[0] / t[1])
            if self.cfg.max_examples:
                gen_ids = usable[: self.cfg.max_examples]
                mine = gen_ids[rank::world]
                items = [dataset[i] for i in mine]
                keep = keep_samples if rank == 0 else 0
                values, task_samples = self._generation_metrics(task, items, [dataset_grid(dataset, i) for i in mine],
                                                                keep)
                metrics.update({f"{task.name}/{k}": v for k, v in values.items()})
                samples.extend(task_samples)
        return metrics, samples

    def _generation_metrics(self, task: Task, items: list[dict[str, Any]], grids: list[tuple[int, int] | None],
                            keep: int) -> tuple[dict[str, float], list[Sample]]:
        from musicmoe import metrics as M

        refs = [it[task.target] for it in items]
        preds = self.translate(task, [it[task.source] for it in items],
                               [self._max_len(r.shape[-1]) for r in refs]) if items else []
        samples: list[Sample] = []
        out: dict[str, float] = {}
        c = self.codecs
        if task.target == "lmx":
            ser, ser_nt = M.SymbolErrorRate(), M.SymbolErrorRate(ignore_tuplets=True)
            from torchmetrics.aggregation import MeanMetric

            invalid = MeanMetric()  # fraction of outputs whose MusicXML needed repairs (summed states)
            pred_tok = [c.lmx_tokens(p) for p in preds]
            ref_tok = [c.lmx_tokens(r) for r in refs]
            ser.update(pred_tok, ref_tok)
            ser_nt.update(pred_tok, ref_tok)
            for k, p in enumerate(preds):
                dec = c.decode("lmx", p)
                invalid.update(1.0 if dec.problems else 0.0)
                if k < keep:
                    samples.append(Sample(task.name, items[k]["key"], "lmx", " ".join(pred_tok[k]),
                                          " ".join(ref_tok[k]), dec.problems))
            out["ser"], out["ser_no_tuplets"] = float(ser.compute()), float(ser_nt.compute())
            out["invalid"] = float(invalid.compute())
        elif task.target == "midi":
            f1 = M.NoteF1()
            pms = [c.decode("midi", p).value for p in preds]
            ref_pms = [c.decode("midi", r).value for r in refs]
            f1.update(pms, ref_pms)
            res = f1.compute()
            out["onset_f1"], out["onset_offset_f1"] = float(res["onset_f1"]), float(res["onset_offset_f1"])
            samples += [Sample(task.name, items[k]["key"], "midi", pms[k], ref_pms[k]) for k in range(min(keep, len(pms)))]
        elif task.target == "audio":
            if not c.available("audio"):
                log.warning("eval %s: no audio codec available, audio metrics skipped", task.name)
                return out, samples
            sr = c.audio.sample_rate
            mel, chroma = M.MelDistance(sr), M.ChromaSimilarity(sr)
            waves = [c.decode("audio", p).value for p in preds]
            ref_waves = [c.decode("audio", r).value for r in refs]
            mel.update(waves, ref_waves)
            chroma.update(waves, ref_waves)
            out["mel_distance"], out["chroma_similarity"] = float(mel.compute()), float(chroma.compute())
            if self.cfg.roundtrip and "amt" in self.trained:
                with_midi = [k for k, it in enumerate(items) if "midi" in it and waves[k].size]
                f1 = M.NoteF1()
                if with_midi:
                    codes = [c.audio.encode(waves[k]) for k in with_midi]
                    amt = get_task("amt")
                    mids = self.translate(amt, codes, [self._max_len(items[k]["midi"].shape[-1]) for k in with_midi])
                    f1.update([c.decode("midi", m).value for m in mids],
                              [c.decode("midi", items[k]["midi"]).value for k in with_midi])
                out["amt_onset_f1"] = float(f1.compute()["onset_f1"])
            samples += [Sample(task.name, items[k]["key"], "audio", waves[k], ref_waves[k])
                        for k in range(min(keep, len(waves)))]
        elif task.target == "image":
            acc = M.TokenAccuracy()
            acc.update(preds, refs)
            out["token_accuracy"] = float(acc.compute())
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
                    codes = [c.encode_image(pics[k]) for k in with_lmx]
                    omr = get_task("omr")
                    lmx = self.translate(omr, codes, [self._max_len(items[k]["lmx"].shape[-1]) for k in with_lmx])
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


def format_table(metrics: dict[str, float]) -> str:
    """A markdown table: one row per task, one column per metric."""
    tasks: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        task, _, name = key.partition("/")
        if name:
            tasks.setdefault(task, {})[name] = value
    cols: list[str] = []
    for values in tasks.values():
        cols += [c for c in values if c not in cols]
    lines = ["| task | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for task, values in tasks.items():
        cells = [f"{values[c]:.4g}" if c in values and values[c] == values[c] else "-" for c in cols]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
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
