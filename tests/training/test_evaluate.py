"""Evaluation helpers: per-task metrics on a real tiny model, tables, pictures for TensorBoard."""

from __future__ import annotations

import numpy as np
import pretty_midi

from musicmoe.data.tasks import get_task
from musicmoe.data.tokens import TokenDataset
from musicmoe.training.checkpoint import load_model
from musicmoe.training.codecs import CodecSet
from musicmoe.training.config import EvalConfig
from musicmoe.training.evaluate import (
    METRICS,
    SHUFFLED_METRICS,
    Evaluator,
    format_table,
    metric_names,
    piano_roll_image,
)


def test_evaluator_metrics_for_every_target_modality(tiny_run, tiny_tokens):
    model, hp = load_model(tiny_run)
    cfg = EvalConfig(max_examples=2, loss_examples=2, batch_size=2, max_new_tokens=6, log_examples=1)
    ev = Evaluator(model, CodecSet(hp["codecs"]), cfg, hp["tasks"])
    tasks = [get_task(t) for t in hp["tasks"]]
    assert {t.target for t in tasks} == {"lmx", "midi", "image", "audio"}
    metrics, samples = ev.evaluate(TokenDataset(tiny_tokens, "train"), tasks, keep_samples=1)
    for t in tasks:
        assert np.isfinite(metrics[f"{t.name}/loss"]) and metrics[f"{t.name}/loss"] > 0
        for name in METRICS[t.target]:
            if name == "omr_ser" and "omr" not in hp["tasks"] or name == "amt_onset_f1" and "amt" not in hp["tasks"]:
                continue
            assert f"{t.name}/{name}" in metrics, name
        # the shuffled-source baseline of the loss and of the target's main metrics (never of the round trips)
        assert metrics[f"{t.name}/source_gap"] == metrics[f"{t.name}/loss_shuffled"] - metrics[f"{t.name}/loss"]
        shuffled = {k.split("/")[1] for k in metrics if k.startswith(f"{t.name}/") and k.endswith("_shuffled")}
        assert shuffled == {"loss_shuffled", *(f"{m}_shuffled" for m in SHUFFLED_METRICS[t.target])}, t.name
        assert np.isfinite(metrics[f"{t.name}/loss_shuffled"])
        assert set(metric_names(t, shuffled=True)) >= {k.split("/")[1] for k in metrics if k.startswith(f"{t.name}/")}
    assert 0.0 <= metrics["lmx2image/token_accuracy"] <= 1.0 and metrics["omr/ser"] >= 0
    assert {s.task for s in samples} == set(hp["tasks"])
    image = next(s for s in samples if s.modality == "image")
    assert image.pred.dtype == np.uint8 and image.ref.ndim == 2


def test_generation_is_bounded_and_deterministic(tiny_run, tiny_tokens):
    model, hp = load_model(tiny_run)
    ev = Evaluator(model, CodecSet(hp["codecs"]), EvalConfig(batch_size=2), hp["tasks"])
    item = TokenDataset(tiny_tokens, "train")[0]
    a = ev.translate(get_task("omr"), [item["image"]], [5])
    b = ev.translate(get_task("omr"), [item["image"]], [5])
    assert a[0].shape[0] <= 5 and np.array_equal(a[0], b[0])
    audio = ev.translate(get_task("midi2audio"), [item["midi"]], [3])
    assert audio[0].shape[0] == 4 and audio[0].shape[1] <= 3


def test_format_table_and_piano_roll():
    table = format_table({"omr/ser": 12.5, "omr/loss": 1.0, "amt/onset_f1": 0.5, "amt/loss": float("nan")})
    lines = table.splitlines()
    assert lines[0] == "| task | metric | value |"  # no shuffled baselines: no such columns
    assert lines[2:] == ["| omr | ser | 12.5 |", "| omr | loss | 1 |", "| amt | onset_f1 | 0.5 |", "| amt | loss | - |"]
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes.append(pretty_midi.Note(velocity=80, pitch=60, start=0.0, end=0.5))
    inst.notes.append(pretty_midi.Note(velocity=80, pitch=67, start=0.5, end=1.0))
    pm.instruments.append(inst)
    roll = piano_roll_image(pm)
    assert roll.dtype == np.uint8 and (roll == 0).any() and roll.shape[0] == 67 - 60 + 5
    assert piano_roll_image(pretty_midi.PrettyMIDI()).shape[1] >= 1
