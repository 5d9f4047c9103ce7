"""``musicmoe demo`` shrunk to three chorales and a few steps per stage: every stage runs on real scores, the
summary is written, and a rerun resumes instead of redoing (``make demo`` is this command at full size)."""

from __future__ import annotations

import json

import torch

DEMO_SHRINK = [
    "corpus.include=[bach/bwv1.6.mxl,bach/bwv122.6.mxl,bach/bwv136.6.mxl]",  # train, test and valid pieces
    "image_codec.train.max_steps=4", "image_codec.train.val_every=2",
    "audio_codec.train.max_steps=4", "audio_codec.train.quantizer_warmup_steps=2", "audio_codec.train.val_every=2",
    "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=1",
    "eval.max_examples=1", "eval.max_new_tokens=8",
    "eval.every_n_steps=0",
]


def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    from musicmoe.cli.demo import cfg_tasks, demo_config, run_demo

    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    result = run_demo(out, DEMO_SHRINK)
    assert torch.get_num_threads() == threads  # the stages' thread settings (1 each) do not leak to the caller
    assert list(result["timings"]) == ["corpus", "image codec", "audio codec", "tokens", "model", "eval"]
    assert result["train"]["global_step"] == 8
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["train"]["global_step"] == 8
    tasks = cfg_tasks(demo_config(out, DEMO_SHRINK))
    # every task was evaluated on the test piece; tasks drawn in at least 4 logged steps have a loss trend
    assert {k.split("/")[0] for k in result["metrics"]} >= set(tasks)
    assert result["loss_trends"] and set(result["loss_trends"]) <= set(tasks)
    text = capsys.readouterr().out
    assert "## test metrics" in text and "TensorBoard: tensorboard --logdir" in text

    again = run_demo(out, DEMO_SHRINK)  # every stage's output exists: nothing is trained again
    text = capsys.readouterr().out
    assert "image_codec.pt exists: skipped" in text and "audio_codec.pt exists: skipped" in text
    assert again["train"]["trained"] is False and again["train"]["global_step"] == 8
