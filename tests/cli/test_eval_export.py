"""``musicmoe export`` (Lightning file and DeepSpeed folder -> one model file) and ``musicmoe eval``."""

from __future__ import annotations

import json

import torch

from musicmoe.cli.main import main
from musicmoe.training.checkpoint import is_deepspeed_checkpoint, load_model, load_payload
from musicmoe.training.evaluate import METRICS


def test_export_lightning_and_deepspeed(tiny_run, tiny_ds_run, tmp_path, capsys):
    ds_ckpt = tiny_ds_run / "checkpoints" / "last.ckpt"
    assert is_deepspeed_checkpoint(ds_ckpt)
    for name, src in (("auto", tiny_run / "checkpoints" / "last.ckpt"), ("ds", ds_ckpt)):
        out = tmp_path / f"{name}.pt"
        assert main(["export", str(src), "-o", str(out)]) == 0
        exported = load_payload(out)
        original = load_payload(src)
        assert exported["hparams"]["tasks"] == ["omr", "amt", "lmx2image", "midi2audio"]
        assert exported["state_dict"].keys() == original["state_dict"].keys()
        for k, v in exported["state_dict"].items():
            assert v.dtype == original["state_dict"][k].dtype
            torch.testing.assert_close(v, original["state_dict"][k])
        model, hp = load_model(out)
        assert hp["codecs"]["image"]["content_hash"] and not model.training
        assert set(model.state_dict()) == set(exported["state_dict"])
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_eval_writes_metrics_json_and_table(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--ckpt", str(tiny_run), "--split", "train", "--tasks", "omr,lmx2image", "--out", str(out),
               "--max-examples", "1", "--batch-size", "2"])
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["tasks"] == ["omr", "lmx2image"] and record["split"] == "train"
    for task, target in (("omr", "lmx"), ("lmx2image", "image")):
        assert record["metrics"][f"{task}/loss"] > 0
        for name in METRICS[target]:
            assert f"{task}/{name}" in record["metrics"]
    assert 0 <= record["metrics"]["omr/ser"]
    # the loss is measured on every example (so also with other examples' sources); one generated example
    # per task has no other to take a source from: no generation baselines
    m = record["metrics"]
    assert m["omr/source_gap"] == m["omr/loss_shuffled"] - m["omr/loss"] and "omr/ser_shuffled" not in m
    assert record["shuffled_baseline"] and record["decode_budget"] == {"lmx": 8, "image": 8}  # the run's budget
    table = (out / "metrics.md").read_text()
    assert "| omr |" in table and "| task | metric | value | shuffled | source gap |" in table
    assert "| lmx2image |" in capsys.readouterr().out


def test_eval_shuffled_baseline_and_budget_flags(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--ckpt", str(tiny_run), "--split", "train", "--tasks", "omr", "--out", str(out),
               "--max-examples", "2", "--batch-size", "2", "--max-new-tokens", "4"])
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["decode_budget"] == {"lmx": 4}
    assert {"omr/ser_shuffled", "omr/ser_no_tuplets_shuffled", "omr/loss_shuffled"} <= set(record["metrics"])
    printed = capsys.readouterr().out
    assert "| omr | ser |" in printed and "language-model-only baseline" in printed
    rc = main(["eval", "--ckpt", str(tiny_run), "--split", "train", "--tasks", "omr", "--out", str(out),
               "--max-examples", "2", "--batch-size", "2", "--max-new-tokens", "4", "--no-shuffled-baseline"])
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert not record["shuffled_baseline"] and "omr/ser" in record["metrics"]
    assert not [k for k in record["metrics"] if "shuffled" in k or "gap" in k]
    assert "| task | metric | value |" in capsys.readouterr().out


def test_eval_errors(tiny_run, capsys):
    assert main(["eval", "--ckpt", str(tiny_run), "--split", "nosuch"]) == 2
    assert "no split 'nosuch'" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tiny_run), "--split", "train", "--tasks", "ocr"]) == 2
    assert "unknown task 'ocr'" in capsys.readouterr().err
