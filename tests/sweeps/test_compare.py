"""`musicmoe compare` and the curve reader on real TensorBoard event files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from musicmoe.config import load_config, save_config
from musicmoe.sweeps import compare, events


def make_run(root: Path, name: str, overrides: list[str], curves: dict[str, list[tuple[int, float]]],
             restart_at: int | None = None) -> Path:
    """A run dir with a saved config and real TensorBoard events; ``restart_at`` writes a second event file
    that resumes from that step, as a requeued job does (the first file's later points become orphans)."""
    from torch.utils.tensorboard import SummaryWriter

    run = root / name
    save_config(load_config(None, overrides + [f"run.name={name}", f"run.out_dir={root}"]), run)
    writer = SummaryWriter(str(run / "tb"))
    for tag, points in curves.items():
        for step, value in points:
            writer.add_scalar(tag, value, step, walltime=1000.0 + step)
    writer.close()
    if restart_at is not None:
        writer = SummaryWriter(str(run / "tb"), purge_step=restart_at)
        for tag, points in curves.items():
            for step, value in points:
                if step >= restart_at:
                    writer.add_scalar(tag, value - 10, step, walltime=5000.0 + step)
        writer.close()
    return run


def test_requeued_run_reads_as_one_monotone_curve(tmp_path):
    loss = [(s, 5.0 - s / 10) for s in range(0, 30)]
    run = make_run(tmp_path, "r", [], {"train/loss": loss}, restart_at=20)
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2
    curve = events.read_curves(run)["train/loss"]
    steps = [p.step for p in curve]
    assert steps == list(range(30))
    # points after the resume step come from the resumed writer, earlier ones from the first
    assert curve[19].value == pytest.approx(5.0 - 1.9) and curve[25].value == pytest.approx(5.0 - 2.5 - 10)
    assert events.last_step(events.read_curves(run)) == 29


def test_metrics_jsonl_when_no_events(tmp_path):
    run = tmp_path / "j"
    run.mkdir()
    lines = [{"step": 1, "train/loss": 2.0, "time": 10.0}, "not json", {"step": 2, "train/loss": 1.5, "lr": 3e-4}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines))
    curves = events.read_curves(run)
    assert [(p.step, p.value) for p in curves["train/loss"]] == [(1, 2.0), (2, 1.5)]
    assert math.isnan(curves["train/loss"][1].wall_time) and curves["lr"][0].value == 3e-4


def test_compare_table_and_plot(tmp_path, capsys):
    from musicmoe.cli.main import main

    a = make_run(tmp_path / "runs", "top1", ["model.experts_per_modality=2", "model.top_k=1"],
                 {"eval/omr/ser": [(10, 0.5), (20, 0.3), (30, 0.35)], "eval/amt/onset_f1": [(10, 0.2), (30, 0.6)],
                  "train/loss": [(s, 4 - s / 10) for s in range(31)]})
    b = make_run(tmp_path / "runs", "top2", ["model.experts_per_modality=2", "model.top_k=2"],
                 {"eval/omr/ser": [(10, 0.4), (20, 0.45)], "eval/amt/onset_f1": [(10, 0.7), (20, 0.5)]})
    png = tmp_path / "out" / "curves.png"
    # the trainer logs eval/<task>/<metric>; "val/omr/ser" and "amt/onset_f1" name the same tags
    code = main(["compare", str(a), str(b), "--metrics", "val/omr/ser,amt/onset_f1", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    header = rows[0]
    # the only config key that differs (besides the run's name and location) is model.top_k
    assert header[:3] == ["run", "model.top_k", "metric"]
    table = {(r[0], r[2]): dict(zip(header, r)) for r in rows[1:]}
    assert set(table) == {(n, m) for n in ("top1", "top2") for m in ("eval/omr/ser", "eval/amt/onset_f1")}
    ser = table["top1", "eval/omr/ser"]  # lower is better: best 0.3 at step 20, last 0.35 at 30
    assert (ser["best"], ser["best step"], ser["last"], ser["last step"]) == ("0.3", "20", "0.35", "30")
    assert ser["steps"] == "30" and ser["wall time"] == "0:00:30" and ser["model.top_k"] == "1"
    f1 = table["top2", "eval/amt/onset_f1"]  # higher is better
    assert (f1["best"], f1["best step"], f1["last"]) == ("0.7", "10", "0.5")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 300  # two panels
    # a folder of runs stands for every run in it; default metrics are the evaluation ones
    code = main(["compare", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("| top1") == 2 and "train/loss" not in out


def test_compare_errors_name_the_problem(tmp_path, capsys):
    from musicmoe.cli.main import main

    run = make_run(tmp_path, "x", [], {"train/loss": [(0, 1.0)]})
    assert main(["compare", str(run), "--metrics", "val/nope"]) == 2
    assert "val/nope" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty)]) == 2
    assert "not a run dir" in capsys.readouterr().err


def test_differing_keys_ignore_location(tmp_path):
    a = make_run(tmp_path / "one", "a", ["run.seed=1"], {"x": [(0, 1.0)]})
    b = make_run(tmp_path / "two", "b", ["run.seed=1"], {"x": [(0, 1.0)]})
    c = make_run(tmp_path / "two", "c", ["run.seed=2"], {"x": [(0, 1.0)]})
    runs = [compare.load_run(p) for p in (a, b, c)]
    assert compare.differing_keys(runs[:2]) == []
    assert compare.differing_keys(runs) == ["run.seed"]


def test_compare_shows_shuffled_baselines_beside_their_metric(tmp_path, capsys):
    from musicmoe.cli.main import main

    a = make_run(tmp_path / "runs", "reads", ["run.seed=1"],
                 {"eval/omr/ser": [(10, 60.0), (20, 20.0)], "eval/omr/ser_shuffled": [(10, 90.0), (20, 95.0)],
                  "eval/omr/loss": [(10, 3.0), (20, 1.0)], "eval/omr/loss_shuffled": [(10, 3.25), (20, 4.0)],
                  "eval/omr/source_gap": [(10, 0.25), (20, 3.0)],
                  "eval/amt/onset_f1": [(10, 0.5), (20, 0.75)], "eval/amt/onset_f1_shuffled": [(20, 0.25)]})
    b = make_run(tmp_path / "runs", "old", ["run.seed=2"], {"eval/omr/ser": [(10, 50.0)]})  # logged no baseline
    png = tmp_path / "curves.png"
    assert main(["compare", str(a), str(b), "--plot", str(png)]) == 0
    out, arms = capsys.readouterr().out.split("## per arm over seeds")  # the runs differ only in run.seed
    assert "| all runs | eval/omr/ser | 2 | 35 ± 21.21 | 20 50 | 95 ± 0 |" in re.sub(" +", " ", arms)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    header = rows[0]
    assert header[header.index("last step") + 1: header.index("last step") + 3] == ["shuffled", "source gap"]
    table = {(r[0], r[header.index("metric")]): dict(zip(header, r)) for r in rows[1:]}
    # the baselines are columns of their metric's row, not rows of their own
    assert set(table) == {(n, m) for n in ("reads", "old") for m in ("eval/omr/ser", "eval/omr/loss",
                                                                      "eval/amt/onset_f1")}
    ser, loss, f1 = table["reads", "eval/omr/ser"], table["reads", "eval/omr/loss"], table["reads", "eval/amt/onset_f1"]
    assert (ser["last"], ser["shuffled"], ser["source gap"]) == ("20", "95", "75")  # lower is better
    assert (loss["last"], loss["shuffled"], loss["source gap"]) == ("1", "4", "3")  # the logged source_gap
    assert (f1["last"], f1["shuffled"], f1["source gap"]) == ("0.75", "0.25", "0.5")  # higher is better
    assert (table["old", "eval/omr/ser"]["shuffled"], table["old", "eval/omr/ser"]["source gap"]) == ("-", "-")
    assert png.is_file()
    # a baseline asked for by name is a row like any other; without baselines there are no such columns
    assert main(["compare", str(a), "--metrics", "omr/ser_shuffled,omr/source_gap"]) == 0
    out = capsys.readouterr().out
    assert "| eval/omr/ser_shuffled" in out and "| eval/omr/source_gap" in out and "source gap" not in out
    rows = compare.summary([compare.load_run(a)], ["eval/omr/source_gap"])
    assert rows[1][rows[0].index("best")] == "3"  # a larger source gap is better


def test_compare_aggregates_seeds_per_arm(tmp_path, capsys):
    """Two arms (optim.lr) x two or three seeds: mean ± std (n - 1) and n per arm, shuffled baselines beside them,
    the same numbers in the CSV, and a bar plot."""
    import csv

    from musicmoe.cli.main import main

    root = tmp_path / "runs"
    ser = {("1e-3", 0): 20.0, ("1e-3", 1): 30.0, ("1e-3", 2): 40.0, ("3e-4", 0): 50.0, ("3e-4", 1): 56.0}
    for (lr, seed), value in ser.items():
        make_run(root, f"lr{lr}-s{seed}", [f"optim.lr={lr}", f"run.seed={seed}"],
                 {"eval/omr/ser": [(0, math.nan), (10, 99.0), (20, value)],
                  "eval/omr/ser_shuffled": [(20, 90.0 + seed)]})
    # a run that died before its first evaluation holds only the step-0 placeholder: no value for its arm
    make_run(root, "lr1e-3-s3", ["optim.lr=1e-3", "run.seed=3"], {"eval/omr/ser": [(0, math.nan)]})
    bars, table_csv = tmp_path / "bars.png", tmp_path / "arms.csv"
    assert main(["compare", str(root), "--metrics", "omr/ser", "--csv", str(table_csv), "--bars", str(bars)]) == 0
    out = capsys.readouterr().out
    assert "## per arm over seeds" in out
    rows = {r["arm"]: r for r in csv.DictReader(table_csv.open())}
    assert set(rows) == {"optim.lr=0.001", "optim.lr=0.0003"}
    fast, slow = rows["optim.lr=0.001"], rows["optim.lr=0.0003"]
    assert (int(fast["n"]), float(fast["mean"]), float(fast["std"])) == (3, 30.0, 10.0)
    assert (int(slow["n"]), float(slow["mean"])) == (2, 53.0) and float(slow["std"]) == pytest.approx(math.sqrt(18))
    assert float(fast["shuffled_mean"]) == 91.0 and float(slow["shuffled_mean"]) == 90.5
    assert "| optim.lr=0.001 | eval/omr/ser | 3 | 30 ± 10 | 20 30 40 | 91 ± 1 |" in re.sub(" +", " ", out)
    with Image.open(bars) as im:
        assert im.format == "PNG" and im.size[0] > 300
    # one run per arm: std 0, and no seed table unless asked when the seed does not differ
    stats = compare.aggregate_seeds([compare.load_run(root / "lr3e-4-s1")], ["eval/omr/ser"])
    assert [(s.arm, s.n, s.mean, s.std) for s in stats] == [("all runs", 1, 56.0, 0.0)]
