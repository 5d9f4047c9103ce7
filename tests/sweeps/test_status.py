"""`--status` from the scheduler's records and the run dir (TensorBoard events, submissions, job logs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from musicmoe.sweeps import manage, rundir
from musicmoe.sweeps.slurm import parse_show_job
from musicmoe.sweeps.spec import load_sweep


def make_sweep(tmp_path: Path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 20}}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": str(tmp_path / "base.yaml"), "cluster": "local", "metric": "val/ser",
                                    "out_dir": str(tmp_path / "runs"), "grid": {"run.seed": [0, 1, 2]}}))
    return load_sweep(path)


def log_scalars(run_dir: Path, tag: str, steps: range) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    for s in steps:
        writer.add_scalar(tag, 1.0 / (s + 1), s)
    writer.close()


def submitted(sweep, tmp_path: Path, runs: list) -> None:
    """For each (run, job id, steps): record the run's submission as that job and log that many steps of val/ser."""
    for run, job, steps in runs:
        rundir.prepare_run_dir(run, sweep.name)
        rundir.record_submission(run, job, tmp_path / "x.sbatch", "local")
        log_scalars(run.run_dir, "val/ser", range(0, steps))


def test_status_of_new_running_requeued_and_finished_runs(tmp_path):
    sweep = make_sweep(tmp_path)
    new, running, finished = sweep.runs
    submitted(sweep, tmp_path, [(running, "7_1", 8), (finished, "7_2", 20)])
    (running.run_dir / "slurm-7_1.out").write_text(
        "musicmoe: 2026-01-01T00:00:00 job 7_1 restart 0 on vm: run x\n"
        "musicmoe: 2026-01-01T00:10:00 job 7_1 restart 1 on vm: run x\n")
    jobs = parse_show_job("JobId=9 ArrayJobId=7 ArrayTaskId=1 JobState=RUNNING Reason=None Restarts=1 "
                          "RunTime=00:00:09 NodeList=vm\n")
    by_run = {s.run.name: s for s in (manage.run_status(r, jobs, sweep.metric) for r in sweep.runs)}
    s = by_run[new.name]
    assert (s.state, s.job_id, s.step, s.active, s.finished) == ("NEW", None, None, False, False)
    s = by_run[running.name]
    assert (s.state, s.job_id, s.restarts, s.step, s.metric, s.active) == ("RUNNING", "7_1", 1, 7, "val/ser", True)
    assert abs(s.value - 1 / 8) < 1e-6
    s = by_run[finished.name]  # the scheduler forgot job 7_2; the run reached max_steps
    assert (s.state, s.step, s.finished, s.active) == ("FINISHED", 19, True, False)
    table = manage.status_table(list(by_run.values()))
    assert f"| {running.name} " in table and "| 1x " in table and "| 0.125 " in table
    assert "| 7/20 " in table and "| 19/20 " in table
    # without a scheduler the state comes from the run dir alone
    s = manage.run_status(running, None, sweep.metric)
    assert (s.state, s.restarts, s.step) == ("UNKNOWN", 1, 7)


def test_failed_run_is_flagged_with_the_tail_of_its_job_log(tmp_path, capsys):
    from musicmoe.cli import sweep as sweep_cli

    sweep = make_sweep(tmp_path)
    new, failed, finished = sweep.runs
    submitted(sweep, tmp_path, [(failed, "8_1", 5), (finished, "8_2", 20)])
    lines = [f"epoch 0: step {i}/20\r" for i in range(5)] + ["Traceback (most recent call last):",
                                                              "RuntimeError: out of memory"]
    (failed.run_dir / "slurm-8_1.out").write_text("\n".join(lines) + "\n")
    jobs = parse_show_job("JobId=11 ArrayJobId=8 ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode Restarts=0 "
                          "RunTime=00:00:09 NodeList=vm\n")
    statuses = [manage.run_status(r, jobs, sweep.metric) for r in sweep.runs]
    assert [s.failed for s in statuses] == [False, True, False]
    tail = manage.log_tail(failed.run_dir, "8_1", lines=2)
    assert tail.splitlines() == ["Traceback (most recent call last):", "RuntimeError: out of memory"]

    sweep_cli._show_status(statuses, None, sweep)
    out = capsys.readouterr().out
    assert "1 not started, 1 failed, 1 finished" in out
    assert f"{failed.name}: FAILED at step 4" in out
    assert out.rstrip().endswith("RuntimeError: out of memory")
    assert "| 4/20 " in out
