"""``musicmoe export`` (Lightning file and DeepSpeed folder -> one model file) and ``musicmoe eval``."""

from __future__ import annotations

import json

import pytest
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
    # the OMR output per example (an LMX target), whose errors add up to the SER
    rows = [json.loads(line) for line in (out / "predictions_omr.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and set(rows[0]) == {"key", "errors", "gold_tokens", "prediction", "reference"}
    assert rows[0]["gold_tokens"] == len(rows[0]["reference"].split()) > 0
    assert 100 * rows[0]["errors"] / rows[0]["gold_tokens"] == pytest.approx(m["omr/ser"])
    assert not (out / "predictions_lmx2image.jsonl").exists()


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


@pytest.mark.parametrize("strategy", ["auto", "deepspeed"])
def test_exported_model_gives_the_trained_models_logits(tiny_tokens, tiny_codecs, tmp_path, strategy):
    """Train 3 steps, keep the live model's logits on a real training batch, then export the last checkpoint
    (a Lightning file, or a DeepSpeed ZeRO-2 folder converted to fp32) and compare its logits with them."""
    import copy

    import lightning.pytorch as pl

    from musicmoe.config import load_config
    from musicmoe.training.run import train
    from training.fixtures import RUN_TASKS, tiny_overrides

    class Live(pl.Callback):
        batches: list = []
        outs: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            Live.batches.append(copy.deepcopy(batch))

        def on_train_end(self, trainer, pl_module):
            pl_module.model.eval()
            with torch.no_grad():
                Live.outs = [pl_module.model(b, return_logits=True) for b in Live.batches]

    over = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "run") + [
        "data.tasks.lmx2midi=0", *[f"data.tasks.{t}=1.0" for t in RUN_TASKS], "model.max_src_len=1280",
        "model.max_tgt_len=1280", "trainer.max_steps=3", "trainer.checkpoint_every_n_steps=3",
        f"trainer.strategy={strategy}", "model.dropout=0.1"]
    summary = train(load_config(None, over), extra_callbacks=[Live()])
    assert summary["global_step"] == 3 and len(Live.outs) == 3
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert is_deepspeed_checkpoint(ckpt) == (strategy == "deepspeed")
    assert main(["export", str(ckpt), "-o", str(tmp_path / "model.pt")]) == 0
    model, _ = load_model(tmp_path / "model.pt")
    seen = set()
    for batch, live in zip(Live.batches, Live.outs):  # the three training batches
        with torch.no_grad():
            out = model(batch, return_logits=True)
        assert out.logits.keys() == live.logits.keys()
        for name, logits in out.logits.items():
            assert logits.dtype == torch.float32
            torch.testing.assert_close(logits, live.logits[name], rtol=1e-5, atol=1e-5)
            seen.add(name)
        torch.testing.assert_close(out.loss, live.loss, rtol=1e-6, atol=1e-6)
    assert len(seen) >= 2, seen  # several target modalities compared
    # a slightly perturbed copy does not pass: the comparison can fail
    first = load_model(tmp_path / "model.pt")[0]
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1e-3)
        assert not torch.allclose(first(Live.batches[0]).loss, Live.outs[0].loss, rtol=1e-6, atol=1e-6)
