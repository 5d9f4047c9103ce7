"""``musicmoe run`` on the demo config shrunk to eight folk tunes, two tasks and a few steps per stage: the
held-out results are written, a rerun skips every stage, a killed stage continues alone, checks decide the exit
status, and a malformed check is a config error."""

from __future__ import annotations

import json

import pytest

# as tests/cli/test_demo.py, with two tasks: omr reads pixels and lmx2midi is symbolic, so no codec is needed
SHRINK = [
    "corpus.include=[essenFolksong/teste.abc]",  # 8 tunes: train, valid and test pieces
    "image_codec.train.max_steps=4", "image_codec.train.val_every=2",
    "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=1",
    "eval.max_examples=1", "eval.max_new_tokens=8", "eval.every_n_steps=0",
    "data.tasks.amt=0", "data.tasks.lmx2image=0", "data.tasks.midi2audio=0",
]
PASSING = 'run.checks=["omr/ser >= 0", "0 <= 2 * lmx2midi/onset_f1"]'


def _run(out, *extra):
    from musicmoe.cli.main import main

    return main(["run", "--config", "experiment/demo.yaml", "--out", str(out), *SHRINK, *extra])


@pytest.mark.slow
def test_run_writes_results_skips_finished_stages_and_applies_checks(tmp_path, capsys):
    from musicmoe.cli.run import STAGES

    out = tmp_path / "exp"
    assert _run(out, PASSING) == 0
    text = capsys.readouterr().out
    assert "[1/6] corpus: started at" in text and "[5/6] model: done in" in text
    assert "[3/6] audio codec: skipped (not needed" in text and not (out / "audio_codec").exists()
    assert "[2/6] image codec: skipped (not needed" in text and not (out / "image_codec").exists()
    result = json.loads((out / "results.json").read_text())
    assert result["split"] == "test" and result["global_step"] == 8
    assert list(result["timings"]) == list(STAGES) and result["stages"]["model"]["status"] == "ran"
    assert {k.split("/")[0] for k in result["metrics"]} == {"omr", "lmx2midi"}
    assert "ser" in result["tasks"]["omr"] and result["tasks"]["omr"]["ser"]["value"] is not None
    assert [c["passed"] for c in result["checks"]] == [True, True] and result["ok"]
    metrics = json.loads((out / "model" / "eval" / "test" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["metrics"] == result["metrics"]
    ckpt = out / "model" / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns

    assert _run(out, PASSING) == 0  # a rerun: every stage is finished with the same settings
    text = capsys.readouterr().out
    for i, stage in enumerate(STAGES, 1):
        assert f"[{i}/6] {stage}: skipped" in text
    assert "started at" not in text and ckpt.stat().st_mtime_ns == stamp
    again = json.loads((out / "results.json").read_text())
    assert {s["status"] for s in again["stages"].values()} == {"skipped", "not needed"}
    assert again["metrics"] == result["metrics"]

    # as if killed while evaluating: only eval runs again; failing checks (one on a metric the results lack)
    # exit 1 and name themselves, and changing the checks does not trouble the finished training
    state = json.loads((out / "run_state.json").read_text())
    del state["stages"]["eval"]
    (out / "run_state.json").write_text(json.dumps(state))
    assert _run(out, 'run.checks=["omr/ser >= 0", "omr/ser < 0", "omr/no_such_metric < 1"]') == 1
    text = capsys.readouterr().out
    assert "[5/6] model: skipped" in text and "[6/6] eval: started at" in text and ckpt.stat().st_mtime_ns == stamp
    assert "check FAILED: omr/ser < 0; omr/no_such_metric < 1" in text
    assert "omr/no_such_metric is not in the results (results for omr: " in text
    checks = json.loads((out / "results.json").read_text())["checks"]
    assert [c["passed"] for c in checks] == [True, False, False] and "not <" in checks[1]["message"]


@pytest.mark.parametrize("entry, why", [("omr/ser << 0.5", "needs exactly one comparison"),
                                        ("omrr/ser < 1", "unknown task 'omrr'"),
                                        ("omr/ser < half", "'half' is neither a number nor a metric")])
def test_malformed_check_is_a_config_error(tmp_path, capsys, entry, why):
    assert _run(tmp_path / "bad", f'run.checks=["omr/ser >= 0", "{entry}"]') == 2
    err = capsys.readouterr().err
    assert f"run.checks[1] entry '{entry}'" in err and why in err
    assert not (tmp_path / "bad").exists()  # nothing ran


def test_shuffled_baselines_sit_beside_their_metric_and_checks_show_the_numbers():
    from musicmoe.cli.run import apply_checks, format_task_table, task_table

    metrics = {"omr/loss": 2.0, "omr/ser": 0.3, "omr/ser_shuffled": 0.9, "omr/source_gap": 0.6,
               "amt/onset_f1": float("nan"), "amt/orphan_shuffled": 0.1}
    table = task_table(metrics)
    assert table["omr"] == {"loss": {"value": 2.0}, "ser": {"value": 0.3, "shuffled": 0.9},
                            "source_gap": {"value": 0.6}}
    assert table["amt"] == {"onset_f1": {"value": None}, "orphan_shuffled": {"value": 0.1}}
    md = format_task_table(table)
    assert "| omr | 2 | 0.3 (shuffled 0.9) | 0.6 |" in md and "ser_shuffled" not in md
    ok, bad, nan = apply_checks(["omr/ser < 0.5 * omr/ser_shuffled", "omr/ser_shuffled * 0.25 > omr/ser",
                                 "amt/onset_f1 > 0.1"], metrics)
    assert ok["passed"] and ok["message"] == "omr/ser = 0.3 < 0.5 * omr/ser_shuffled = 0.5 * 0.9 = 0.45"
    assert not bad["passed"] and "0.225 not > omr/ser = 0.3" in bad["message"]
    assert not nan["passed"] and "amt/onset_f1 has no value (NaN)" in nan["message"]


def test_a_tokens_folder_given_by_the_user_is_written_and_read(tmp_path):
    """``data.tokens=X`` (or ``tokenize.out=X``) makes the tokens stage write X and the model stage read X; by
    default both are DIR/tokens."""
    from musicmoe.cli.run import experiment_config

    cfg = experiment_config("experiment/folk_omr.yaml", tmp_path / "run")
    assert cfg.tokenize.out == cfg.data.tokens == str(tmp_path / "run" / "tokens")
    for key in ("data.tokens", "tokenize.out"):
        cfg = experiment_config("experiment/folk_omr.yaml", tmp_path / "run", [f"{key}={tmp_path / 'shared'}"])
        assert cfg.tokenize.out == cfg.data.tokens == str(tmp_path / "shared")
