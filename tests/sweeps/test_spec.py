"""Sweep files -> runs: expansion, names from hashes of semantic overrides, run-dir guard, sbatch rendering."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from musicmoe.config import ConfigError
from musicmoe.sweeps import rundir
from musicmoe.sweeps.sbatch import group_runs, render_jobs
from musicmoe.sweeps.spec import SweepError, format_value, load_sweep

REPO = Path(__file__).resolve().parents[2]


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run the real command line in this process; (exit status, stdout)."""
    from musicmoe.cli.main import main

    code = main(list(args))
    return code, capsys.readouterr().out


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.yaml", {"trainer": {"max_steps": 20}, "data": {"tasks": {"omr": 1.0}}})


def sweep_file(tmp_path: Path, base: Path, **extra) -> Path:
    data = {"name": "t", "base": str(base), "cluster": "local", "out_dir": str(tmp_path / "runs")}
    data.update(extra)
    return write(tmp_path / "sweep.yaml", data)


def test_grid_times_runs_and_stable_names(tmp_path, base):
    path = sweep_file(tmp_path, base, overrides={"trainer.max_steps": 30},
                      grid={"run.seed": [0, 1]},
                      runs=[{"label": "dense", "model.shared_across_modalities": True},
                            {"label": "moe", "model.experts_per_modality": 2, "model.top_k": 1}])
    sweep = load_sweep(path)
    assert [r.label for r in sweep.runs] == ["dense_seed0", "dense_seed1", "moe_seed0", "moe_seed1"]
    assert all(r.config.trainer.max_steps == 30 for r in sweep.runs)
    moe = sweep.runs[3]
    assert (moe.config.model.experts_per_modality, moe.config.model.top_k, moe.config.run.seed) == (2, 1, 1)
    assert moe.run_dir == tmp_path / "runs" / moe.name and moe.config.run.name == moe.name
    assert moe.config.run.out_dir == str(tmp_path / "runs")
    assert moe.train_args[-2:] == [f"run.out_dir={tmp_path / 'runs'}", f"run.name={moe.name}"]
    # loading again gives the same names; a different output location does not change them
    again = load_sweep(path, out_dir=tmp_path / "elsewhere")
    assert [r.name for r in again.runs] == [r.name for r in sweep.runs]
    assert len({r.name for r in sweep.runs}) == 4


def test_hash_follows_semantics_not_spelling(tmp_path, base):
    one = load_sweep(sweep_file(tmp_path, base, overrides={"optim.lr": 0.001, "run.seed": 1}))
    spelled = load_sweep(sweep_file(tmp_path, base, overrides=["optim.lr=1e-3", "run.seed=1"]))
    assert one.runs[0].name == spelled.runs[0].name
    other_seed = load_sweep(sweep_file(tmp_path, base, overrides={"optim.lr": 0.001, "run.seed": 2}))
    assert other_seed.runs[0].digest != one.runs[0].digest
    # the cluster's resources are not part of a run's identity ...
    longer = load_sweep(sweep_file(tmp_path, base, overrides={"optim.lr": 0.001, "run.seed": 1},
                                   cluster_overrides={"time": "05:00:00"}))
    assert longer.runs[0].name == one.runs[0].name and longer.runs[0].cluster.time == "05:00:00"
    # ... but the training overrides a cluster adds are (DeepSpeed writes another kind of checkpoint)
    gpu = load_sweep(sweep_file(tmp_path, base, overrides={"optim.lr": 0.001, "run.seed": 1}), cluster="gpu")
    assert gpu.runs[0].name != one.runs[0].name
    assert gpu.runs[0].config.trainer.strategy == "deepspeed" and gpu.runs[0].config.trainer.deepspeed_stage == 2


@pytest.mark.parametrize("value", ["24:00:00", "a b", "true", "null", "x=1", 1e-4, 3, True, None, float("inf"),
                                   [1, "a b"],
                                   {"omr": 1.0, "amt": 0.5}])
def test_format_value_round_trips(value):
    from omegaconf import OmegaConf

    node = OmegaConf.from_dotlist([f"k={format_value(value)}"])
    assert OmegaConf.to_container(node)["k"] == value


@pytest.mark.parametrize("extra, message", [
    ({"grdi": {"run.seed": [0]}}, "unknown key"),
    ({"overrides": {"trainer.max_stpes": 3}}, "trainer.max_steps"),
    ({"overrides": {"run.out_dir": "/x"}}, "run.out_dir is set by the sweep"),
    ({"grid": {"run.seed": []}}, "has no values"),
    ({"runs": [{"run.seed": 1}, {"run.seed": 1}]}, "same config"),
    ({"overrides": {"model.top_k": 2}}, "top_k"),
])
def test_bad_sweep_files_name_the_problem(tmp_path, base, extra, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_sweep(sweep_file(tmp_path, base, **extra))
    assert "sweep.yaml" in str(err.value)


def test_missing_base_and_cluster(tmp_path, base):
    with pytest.raises(SweepError, match="base config 'nope.yaml' not found"):
        load_sweep(sweep_file(tmp_path, "nope.yaml"))
    with pytest.raises(ConfigError, match="cluster 'mars' not found.*shipped: .*local"):
        load_sweep(sweep_file(tmp_path, base), cluster="mars")


def test_run_dir_refuses_a_different_config(tmp_path, base, capsys):
    path = sweep_file(tmp_path, base, grid={"run.seed": [0]})
    run = load_sweep(path).runs[0]
    assert rundir.check_run_dir(run) is False
    rundir.prepare_run_dir(run, "t")
    assert (run.run_dir / "config.yaml").is_file() and (run.run_dir / "sweep.json").is_file()
    assert rundir.check_run_dir(load_sweep(path).runs[0]) is True
    # the base file changes underneath an existing run: same name, different meaning -> refused
    write(base, {"trainer": {"max_steps": 20}, "data": {"tasks": {"omr": 1.0}}, "optim": {"lr": 0.5}})
    changed = load_sweep(path).runs[0]
    assert changed.name == run.name
    with pytest.raises(rundir.RunConflict, match=r"optim.lr: 0.0003 -> 0.5"):
        rundir.check_run_dir(changed)
    code, out = cli(capsys, "sweep", str(path), "--dry-run")
    assert code == 1 and "CONFLICT" in out, out


def test_runs_with_other_resources_get_their_own_job(tmp_path, base):
    path = sweep_file(tmp_path, base, runs=[{"label": "a", "run.seed": 1}, {"label": "b", "run.seed": 2},
                                            {"label": "big", "trainer.devices": 2}])
    sweep = load_sweep(path)
    groups = group_runs(sweep.runs)
    assert [[r.label for r in g] for g in groups] == [["a", "b"], ["big"]]
    array, single = render_jobs(sweep, workdir=tmp_path)
    assert "#SBATCH --array=0-1\n" in array.script and "--array" not in single.script
    assert "#SBATCH --ntasks-per-node=2\n" in single.script
    assert array.job_id_of("41", sweep.runs[1]) == "41_1" and single.job_id_of("42", sweep.runs[2]) == "42"
    for job in (array, single):
        check = subprocess.run(["bash", "-n"], input=job.script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_dry_run_two_nodes_four_gpus_deepspeed(tmp_path, base, capsys):
    """The GPU cluster: one task per GPU on 2 nodes, srun, requeue signal, DeepSpeed ZeRO-2."""
    path = sweep_file(tmp_path, base, cluster="gpu",
                      overrides={"trainer.num_nodes": 2, "trainer.devices": 4}, grid={"run.seed": [0, 1]})
    code, out = cli(capsys, "sweep", str(path), "--dry-run")
    assert code == 0, out
    for expected in ("#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=4\n", "#SBATCH --gres=gpu:4\n",
                     "#SBATCH --signal=SIGUSR1@90\n", "#SBATCH --requeue\n", "#SBATCH --array=0-1\n",
                     "\nsrun --kill-on-bad-exit=1 musicmoe train --config ", "trainer.strategy=deepspeed_stage_2",
                     "trainer.precision=bf16-mixed", "source .venv/bin/activate"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    sweep = load_sweep(path)
    for run in sweep.runs:
        assert f"run {run.index}: {run.name}  [new]" in out
        assert f"RUN_DIR={run.run_dir}\n" in out
    script = out[out.index("#!/bin/bash"):]
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert not (tmp_path / "runs").exists(), "--dry-run must not write anything"


SHIPPED = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweeps_validate(path):
    """Every run of every shipped sweep composes into a valid config (load_config) and renders a script."""
    sweep = load_sweep(path)
    assert len(sweep.runs) >= 2
    assert len({r.name for r in sweep.runs}) == len(sweep.runs)
    for job in render_jobs(sweep):
        check = subprocess.run(["bash", "-n"], input=job.script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_shipped_ablations_cover_the_paper():
    names = {p.stem for p in SHIPPED}
    assert {"ablation_omr_tasks", "ablation_amt_tasks", "ablation_dense_vs_moe", "ablation_experts"} <= names
    experts = load_sweep(REPO / "experiments" / "sweeps" / "ablation_experts.yaml")
    combos = {(r.config.model.experts_per_modality, r.config.model.top_k) for r in experts.runs}
    assert combos == {(e, k) for e in (2, 4, 8) for k in (1, 2)}
    omr = load_sweep(REPO / "experiments" / "sweeps" / "ablation_omr_tasks.yaml")
    active = [sorted(t for t, w in r.config.data.tasks.items() if w > 0) for r in omr.runs]
    assert active[0] == ["omr"] and active[1] == ["image2audio", "omr"]
    assert set(active[2]) >= {"omr", "image2audio", "midi2audio"}
    amt = load_sweep(REPO / "experiments" / "sweeps" / "ablation_amt_tasks.yaml")
    active = [sorted(t for t, w in r.config.data.tasks.items() if w > 0) for r in amt.runs]
    assert active[0] == ["amt"] and active[1] == ["amt", "audio2image"] and len(active[2]) > 2
    dense = load_sweep(REPO / "experiments" / "sweeps" / "ablation_dense_vs_moe.yaml")
    assert {r.config.model.shared_across_modalities for r in dense.runs} == {True, False}
    cpu = load_sweep(REPO / "experiments" / "sweeps" / "cpu_multitask.yaml")  # 2 x 2 arms x 3 seeds, one core each
    arms = {(r.config.model.image_input, tuple(sorted(t for t, w in r.config.data.tasks.items() if w > 0)))
            for r in cpu.runs}
    assert len(cpu.runs) == 12 and len(arms) == 4 and {a[0] for a in arms} == {"codes", "pixels"}
    assert {len(a[1]) for a in arms} == {1, 6} and {r.config.run.seed for r in cpu.runs} == {0, 1, 2}
    [job] = render_jobs(cpu)  # one array of 12 tasks, one core and one thread each
    assert "--cpus-per-task=1" in job.script and "OMP_NUM_THREADS=1" in job.script and "--array=0-11" in job.script


def test_only_selects_runs_by_label_or_name(tmp_path, base, capsys):
    path = sweep_file(tmp_path, base, runs=[{"label": "dense", "run.seed": 1}, {"label": "moe_a", "run.seed": 2},
                                            {"label": "moe_b", "run.seed": 3}])
    code, out = cli(capsys, "sweep", str(path), "--only", "moe*")
    assert code == 0 and "job array of 2 runs" in out and "dense" not in out
    from musicmoe.cli.main import main

    assert main(["sweep", str(path), "--only", "nothing"]) == 2
    assert "no run of sweep t matches" in capsys.readouterr().err
