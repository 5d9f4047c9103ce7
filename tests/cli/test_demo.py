"""``musicmoe demo`` (= ``musicmoe run`` on configs/experiment/demo.yaml) shrunk to eight folk tunes and a few steps
per stage: every stage runs on real scores, results.json is written with the demo's learning check, and a rerun
skips every stage instead of redoing it (``make demo`` is this command at full size)."""

from __future__ import annotations

import json

import pytest
import torch

DEMO_SHRINK = [
    "corpus.include=[essenFolksong/teste.abc]",  # 8 tunes: train, valid and test pieces
    "tokenize.max_audio_frames=2250",  # audio codes for every system (the demo keeps only the short ones)
    "image_codec.train.max_steps=4", "image_codec.train.val_every=2",
    "audio_codec.train.max_steps=4", "audio_codec.train.quantizer_warmup_steps=2", "audio_codec.train.val_every=2",
    "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=1",
    "eval.max_examples=1", "eval.max_new_tokens=8",
    "eval.every_n_steps=0",
]
DEMO_CHECK = "omr/ser < 0.5 * omr/ser_shuffled"


def test_demo_command_is_run_on_the_demo_config():
    from musicmoe.cli.demo import demo_config, run
    from musicmoe.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--split", "valid", "trainer.max_steps=3"])
    assert (args.func, args.out, args.split, args.overrides) == (run, "runs/demo", "valid", ["trainer.max_steps=3"])
    cfg = demo_config("/tmp/d", args.overrides)
    assert cfg.run.checks == [DEMO_CHECK] and cfg.trainer.max_steps == 3
    assert (cfg.run.out_dir, cfg.corpus.out, cfg.data.tokens) == ("/tmp/d", "/tmp/d/corpus", "/tmp/d/tokens")
    assert cfg.image_codec.checkpoint == "/tmp/d/image_codec/image_codec.pt"  # trained under --out
    assert not cfg.audio_codec.checkpoint  # no demo task writes audio (read as log-mel frames): no audio codec


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    from musicmoe.cli.demo import demo_config, run_demo
    from musicmoe.cli.run import STAGES, active_tasks

    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    result = run_demo(out, DEMO_SHRINK)
    assert torch.get_num_threads() == threads  # the stages' thread settings (1 each) do not leak to the caller
    assert list(result["timings"]) == list(STAGES)
    status = {name: s["status"] for name, s in result["stages"].items()}
    assert status.pop("audio codec") == "not needed"  # no demo task writes audio; it is read as log-mel frames
    assert set(status.values()) == {"ran"}
    assert result["train"]["global_step"] == 8
    summary = json.loads((out / "results.json").read_text())
    assert summary["train"]["global_step"] == 8 and summary["split"] == "test"
    # the reading tasks (eval.tasks) were evaluated on the test piece beside their shuffled baselines, every task
    # was trained, and the demo's learning check was applied (8 steps do not pass it)
    cfg = demo_config(out, DEMO_SHRINK)
    trained = {t.name for t in active_tasks(cfg)}
    scored = set(cfg.eval.tasks)
    assert scored == {"omr", "amt", "lmx2midi"} and scored <= trained
    assert {k.split("/")[0] for k in result["metrics"]} == scored and set(summary["tasks"]) == scored
    assert "omr/ser_shuffled" in result["metrics"]
    # OMR was read off the CTC head (eval.task_decoding), the other tasks by the attention decoder
    assert summary["decoding"] == "greedy (omr: ctc)"
    assert trained == {"omr", "amt", "lmx2midi", "lmx2image"}
    [check] = summary["checks"]
    assert check["check"] == DEMO_CHECK and "omr/ser" in check["message"]
    text = capsys.readouterr().out
    assert "## test metrics" in text and "TensorBoard: tensorboard --logdir" in text and "## checks" in text

    again = run_demo(out, DEMO_SHRINK)  # every stage's output exists: nothing is trained again
    text = capsys.readouterr().out
    assert "[2/6] image codec: skipped" in text and "[3/6] audio codec: skipped (not needed" in text
    status = {name: s["status"] for name, s in again["stages"].items()}
    assert status.pop("audio codec") == "not needed" and set(status.values()) == {"skipped"}
    assert again["global_step"] == 8
    assert again["metrics"] == result["metrics"]

    # the learning check decides the exit status of `musicmoe demo`: 8 steps read nothing, so the held-out SER
    # is not below half of the shuffled-source SER and the command exits 1 naming the check
    from musicmoe.cli.main import main

    assert not check["passed"] and not summary["ok"]
    assert main(["demo", "--out", str(out), *DEMO_SHRINK]) == 1
    text = capsys.readouterr().out
    assert f"check FAILED: {DEMO_CHECK}" in text and "FAILED: omr/ser < 0.5 * omr/ser_shuffled: omr/ser = " in text
    # the same run passes when the check asks only what it shows (exit 0): the status follows the check
    assert main(["demo", "--out", str(out), *DEMO_SHRINK, 'run.checks=["omr/ser <= omr/ser"]']) == 0
    assert "all 1 check(s) passed" in capsys.readouterr().out
