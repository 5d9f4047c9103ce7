"""Does the model read its source: shuffled-source loss and generation baselines; the decoding budget from config."""

from __future__ import annotations

import json

import pytest
import torch

from musicmoe.config import ConfigError, compose, load_config
from musicmoe.data.tasks import get_task
from musicmoe.data.tokens import TokenDataset
from musicmoe.training.checkpoint import load_model
from musicmoe.training.codecs import CodecSet
from musicmoe.training.config import DECODE_BUDGET, EvalConfig
from musicmoe.training.evaluate import Evaluator, format_table, rotated
from musicmoe.training.run import train
from training.fixtures import scalar_steps, tiny_overrides


def _ce(ev, task, sources, targets) -> float:
    """Teacher-forced CE per target token of one batch pairing ``sources[k]`` with ``targets[k]``."""
    batch = ev._batch([(s, task.source, t, task.target, task.id) for s, t in zip(sources, targets)])
    with torch.no_grad():
        return float(ev.model(batch).ce_loss)


class ItemsSeen(Evaluator):
    """Keeps the examples whose true-source loss ``evaluate`` measured (as it read them from the dataset)."""

    def loss(self, task, items, sources=None):
        if sources is None:
            self.seen = getattr(self, "seen", {})
            self.seen[task.name] = list(items)
        return super().loss(task, items, sources)


def test_shuffled_loss_is_the_loss_of_rotated_sources(tiny_run, tiny_tokens):
    model, hp = load_model(tiny_run)
    ds = TokenDataset(tiny_tokens, "train")
    tasks = [get_task("omr"), get_task("midi2audio")]
    ev = ItemsSeen(model, CodecSet(hp["codecs"]), EvalConfig(max_examples=0, loss_examples=3, batch_size=3),
                   hp["tasks"])
    metrics, _ = ev.evaluate(ds, tasks)
    for t in tasks:
        items = ev.seen[t.name]
        assert [it["key"] for it in items] == [ds[i]["key"] for i in range(3)]
        sources = [ev._source(it, t) for it in items]  # the model input of each example, as evaluate reads it
        targets = [it[t.target] for it in items]
        # example k keeps its target and gets example k+1's source (the last one the first's)
        shuffled = _ce(ev, t, [sources[1], sources[2], sources[0]], targets)
        true = _ce(ev, t, sources, targets)
        assert metrics[f"{t.name}/loss"] == pytest.approx(true, rel=1e-6)
        assert metrics[f"{t.name}/loss_shuffled"] == pytest.approx(shuffled, rel=1e-6)
        assert shuffled != pytest.approx(true, rel=1e-7)  # the sources really changed
        assert metrics[f"{t.name}/source_gap"] == metrics[f"{t.name}/loss_shuffled"] - metrics[f"{t.name}/loss"]
    assert not any(k.endswith(("ser_shuffled", "accuracy_shuffled")) for k in metrics)  # nothing generated


def test_shuffled_figures_do_not_depend_on_the_ranks(tiny_run, tiny_tokens):
    """Two ranks (run one after the other) each sum their share; together they give the one-rank figures."""
    model, hp = load_model(tiny_run)
    ds = TokenDataset(tiny_tokens, "train")
    cfg = EvalConfig(max_examples=0, loss_examples=3, batch_size=2)
    ev = Evaluator(model, CodecSet(hp["codecs"]), cfg, hp["tasks"])
    task = get_task("amt")
    one, _ = ev.evaluate(ds, [task])
    shares: list[torch.Tensor] = []
    for rank in (0, 1):
        ev.evaluate(ds, [task], rank=rank, world=2, reduce=lambda t: shares.append(t.clone()) or t)
    total = shares[0] + shares[1]  # what a summing all-reduce returns on every rank
    assert len(total) == 4 and total[1] == total[3]  # true and shuffled losses predict the same target tokens
    # (batches of 2 on one rank and of 2 + 1 on two: the same up to float32 rounding)
    assert one["amt/loss"] == pytest.approx(float(total[0] / total[1]), rel=1e-6)
    assert one["amt/loss_shuffled"] == pytest.approx(float(total[2] / total[3]), rel=1e-6)
    assert rotated([4, 7, 9]) == [7, 9, 4]


def test_single_example_or_baseline_off_has_no_shuffled_figures(tiny_run, tiny_tokens):
    model, hp = load_model(tiny_run)
    ds = TokenDataset(tiny_tokens, "train")
    codecs = CodecSet(hp["codecs"])
    one = EvalConfig(max_examples=1, loss_examples=1, batch_size=2, max_new_tokens=4)
    metrics, _ = Evaluator(model, codecs, one, hp["tasks"]).evaluate(ds, [get_task("omr")])
    assert {"omr/loss", "omr/ser", "omr/ser_no_tuplets", "omr/invalid"} <= set(metrics)
    assert not [k for k in metrics if "shuffled" in k or "gap" in k]
    off = EvalConfig(max_examples=2, loss_examples=2, batch_size=2, max_new_tokens=4, shuffled_baseline=False)
    metrics, _ = Evaluator(model, codecs, off, hp["tasks"]).evaluate(ds, [get_task("omr")])
    assert "omr/ser" in metrics and not [k for k in metrics if "shuffled" in k or "gap" in k]


class RecordingEvaluator(Evaluator):
    """Records the target modality and the length cap of every generation the model is asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str, int, list[int]]] = []
        generate = self.model.generate
        self._task = self._target = None

        def spy(*a, **kw):
            seqs = generate(*a, **kw)
            self.calls.append((self._task, self._target, kw["max_len"], [int(s.shape[-1]) for s in seqs]))
            return seqs

        self.model.generate = spy

    def translate(self, task, sources, *args, **kwargs):
        self._task, self._target = task.name, task.target
        return super().translate(task, sources, *args, **kwargs)


def test_decode_budget_comes_from_config_not_from_the_reference(tiny_run, tiny_tokens):
    model, hp = load_model(tiny_run)
    ds = TokenDataset(tiny_tokens, "train")
    budget = {"lmx": 5, "midi": 7, "image": 3, "audio": 4}
    cfg = EvalConfig(max_examples=3, loss_examples=0, batch_size=2, decode_budget=budget, roundtrip=True)
    ev = RecordingEvaluator(model, CodecSet(hp["codecs"]), cfg, hp["tasks"])
    tasks = [get_task(t) for t in hp["tasks"]]  # omr, amt, lmx2image, midi2audio: every target modality
    ev.evaluate(ds, tasks)
    for t in tasks:  # the references differ in length, the budget does not
        assert len({ds[i][t.target].shape[-1] for i in range(3)}) > 1
    seen = {(task, target) for task, target, _, _ in ev.calls}
    # main and shuffled decodes of every task, and the round trips (amt of generated audio, omr of images)
    assert {(t.name, t.target) for t in tasks} <= seen and {("amt", "midi"), ("omr", "lmx")} <= seen
    assert len([c for c in ev.calls if c[0] == "omr"]) >= 2 + 2 + 2  # main, shuffled, read-back (batches of 2)
    for _, target, cap, lengths in ev.calls:
        assert cap == budget[target] and max(lengths) <= budget[target]


def test_decode_budget_config():
    cfg = EvalConfig(decode_budget={"lmx": 300})
    assert cfg.decode_budget == {**DECODE_BUDGET, "lmx": 300} and cfg.budget("lmx") == 300
    assert EvalConfig(max_new_tokens=8).budget("audio") == 8  # one budget for every target
    with pytest.raises(ValueError, match="unknown modality"):
        EvalConfig(decode_budget={"text": 3})
    with pytest.raises(ValueError, match="decode_budget.midi must be an integer >= 1"):
        EvalConfig(decode_budget={"midi": 0})
    loaded = load_config(None, ["eval.decode_budget.audio=99", "eval.shuffled_baseline=false"]).eval
    assert loaded.decode_budget == {**DECODE_BUDGET, "audio": 99} and loaded.shuffled_baseline is False
    assert load_config(None, ["eval.max_new_tokens=8"]).eval.budget("lmx") == 8
    with pytest.raises(ConfigError, match="eval.decode_budget"):
        load_config(None, ["eval.decode_budget.pdf=3"])
    for name in ("default", "demo"):  # the shipped eval files: a budget per modality, never one for all
        shipped = compose(EvalConfig, f"eval/{name}.yaml")
        assert shipped.shuffled_baseline and shipped.max_new_tokens == 0
        assert set(shipped.decode_budget) == set(DECODE_BUDGET)
    assert compose(EvalConfig, "eval/default.yaml").decode_budget == DECODE_BUDGET


def test_budget_is_capped_at_the_model_limit(tiny_run):
    model, hp = load_model(tiny_run)
    ev = Evaluator(model, CodecSet(hp["codecs"]), EvalConfig(decode_budget={"audio": 10 ** 6}), hp["tasks"])
    assert ev.budget("audio") == model.config.max_tgt_len - 2 and ev.budget("lmx") == DECODE_BUDGET["lmx"]


def test_format_table_shows_the_shuffled_baseline_beside_each_metric():
    table = format_table({"omr/loss": 1.0, "omr/loss_shuffled": 3.5, "omr/source_gap": 2.5, "omr/ser": 12.5,
                          "omr/ser_shuffled": 90.0, "omr/invalid": 0.0, "amt/loss": 2.0, "amt/onset_f1": 0.5,
                          "amt/onset_f1_shuffled": 0.125, "amt/onset_offset_f1": 0.25})
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == ["task", "metric", "value", "shuffled", "source gap"]
    assert rows[1:] == [["omr", "loss", "1", "3.5", "2.5"],  # the logged source_gap
                        ["omr", "ser", "12.5", "90", "77.5"],  # lower is better: shuffled - value
                        ["omr", "invalid", "0", "-", "-"],
                        ["amt", "loss", "2", "-", "-"],
                        ["amt", "onset_f1", "0.5", "0.125", "0.375"],  # higher is better: value - shuffled
                        ["amt", "onset_offset_f1", "0.25", "-", "-"]]
    assert "language-model-only baseline" in table


def test_training_logs_the_baselines_to_tensorboard(tiny_tokens, tiny_codecs, tmp_path):
    over = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "tb") + [
        "trainer.max_steps=2", "eval.every_n_steps=2", "eval.tasks=[omr]", "eval.max_examples=2",
        "eval.max_new_tokens=4", "eval.log_examples=0"]
    train(load_config(None, over))
    tags = scalar_steps(tmp_path / "tb" / "tb" / "version_0")
    for name in ("loss", "loss_shuffled", "source_gap", "ser", "ser_shuffled", "ser_no_tuplets_shuffled"):
        assert 2 in tags[f"eval/omr/{name}"], name
    record = json.loads((tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["omr/source_gap"] == pytest.approx(record["omr/loss_shuffled"] - record["omr/loss"])


def test_fold_spread_scores_disjoint_folds_of_pieces(tiny_run, tiny_tokens):
    from musicmoe.metrics import SymbolErrorRate
    from musicmoe.training.evaluate import fold_of, piece_of

    model, hp = load_model(tiny_run)
    codecs = CodecSet(hp["codecs"])
    ds = TokenDataset(tiny_tokens, "train")
    omr = get_task("omr")
    cfg = EvalConfig(max_examples=len(ds), loss_examples=1, spread_folds=3, shuffled_baseline=False,
                     decode_budget={"lmx": 24})
    ev = Evaluator(model, codecs, cfg, hp["tasks"])
    metrics, _ = ev.evaluate(ds, [omr])
    items = [ev.view[i] for i in range(len(ds)) if "image" in ev.view[i] and "lmx" in ev.view[i]]
    preds = ev.translate(omr, [ev._source(it, omr) for it in items])
    folds: dict[int, list[int]] = {}
    for k, it in enumerate(items):
        assert fold_of(it["key"], 3) == fold_of(piece_of(it["key"]) + "__s999", 3)  # a piece stays in one fold
        folds.setdefault(fold_of(it["key"], 3), []).append(k)
    assert len(folds) >= 2
    per_fold = []
    for ks in folds.values():
        ser = SymbolErrorRate()
        ser.update([codecs.lmx_tokens(preds[k]) for k in ks], [codecs.lmx_tokens(items[k]["lmx"]) for k in ks])
        per_fold.append(float(ser.compute()))
    assert metrics["omr/ser_fold_min"] == pytest.approx(min(per_fold))
    assert metrics["omr/ser_fold_max"] == pytest.approx(max(per_fold))
    assert metrics["omr/ser_fold_min"] <= metrics["omr/ser_fold_median"] <= metrics["omr/ser_fold_max"]
    table = format_table(metrics)
    assert "folds: median [min, max]" in table and f"[{metrics['omr/ser_fold_min']:.4g}," in table
    off = Evaluator(model, codecs, EvalConfig(**{**cfg.__dict__, "spread_folds": 0}), hp["tasks"])
    assert not any("_fold_" in k for k in off.evaluate(ds, [omr])[0])
