"""``musicmoe train --config FILE key=value ... run.out_dir=D run.name=N``: the run folder contract."""

from __future__ import annotations

import json

import yaml

from musicmoe.cli.main import main
from training.fixtures import scalar_steps, tiny_overrides  # tests/ is on sys.path (conftest.py)


def test_train_cli_writes_the_run_folder(tiny_tokens, tiny_codecs, tmp_path, capsys):
    over = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path / "unused")
    config = tmp_path / "exp.yaml"
    nested: dict = {}
    for item in over:
        key, value = item.split("=", 1)
        if key.startswith("run."):
            continue
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    config.write_text(yaml.safe_dump(nested))
    rc = main(["train", "--config", str(config), "trainer.max_steps=2", f"run.out_dir={tmp_path / 'D'}", "run.name=N"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "D" / "N"
    assert summary["global_step"] == 2 and summary["run_dir"] == str(run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 2 and saved["run"]["name"] == "N" and saved["data"]["tasks"]["omr"] == 1.0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert scalar_steps(run / "tb" / "version_0")["train/loss"] == [1, 2]


def test_train_cli_errors_are_clean(tmp_path, capsys):
    assert main(["train", "trainer.max_step=3"]) == 2
    assert "did you mean 'trainer.max_steps'" in capsys.readouterr().err
    assert main(["train", f"run.out_dir={tmp_path}", "data.tasks.omr=0"]) == 2
    assert "data.tasks names no task" in capsys.readouterr().err
    assert main(["train", f"run.out_dir={tmp_path}", "data.tasks.omr=1", f"data.tokens={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert "is not a token folder" in err and "Traceback" not in err
