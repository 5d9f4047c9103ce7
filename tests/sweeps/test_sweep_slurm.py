"""End to end on the real local SLURM cluster with the real ``musicmoe train``.

A tiny 2-run sweep is submitted as one job array, trains, and is compared; a run requeued by ``scontrol requeue``
resumes from its checkpoint on one continuous TensorBoard step axis; a run whose trainer is killed with SIGKILL
loses at most the steps since its last checkpoint when the sweep is submitted again.

Run-dir contract of ``musicmoe train`` these tests rely on: ``<run.out_dir>/<run.name>/`` holds ``config.yaml``,
``checkpoints/`` (``last.ckpt`` on the CPU), ``tb/`` (TensorBoard events of one version, continued after a resume)
and ``metrics.jsonl``; a started job resumes from the run's own last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from musicmoe.sweeps import events, slurm

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def musicmoe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (the jobs inherit SLURM_CONF from this environment)."""
    return subprocess.run([sys.executable, "-m", "musicmoe.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def train_base(tiny_training, tmp_path_factory) -> Path:
    """A tiny CPU training config (TRAIN's tiny model, tasks and codecs) over the shared tiny token shards."""
    from omegaconf import OmegaConf

    tiny = tiny_training
    keep = [o for o in tiny["overrides"](tiny["tokens"], tiny["codecs"], Path("unused"))
            if not o.startswith(("run.", "trainer.max_steps=", "trainer.checkpoint_every_n_steps=",
                                 "trainer.progress="))]
    node = OmegaConf.from_dotlist(keep + ["trainer.accelerator=cpu", "trainer.progress=plain",
                                          "trainer.progress_every=10"])
    base = tmp_path_factory.mktemp("sweep-base") / "tiny.yaml"
    base.write_text(OmegaConf.to_yaml(node))
    return base


def sweep_file(tmp_path: Path, base: Path, name: str, overrides: dict, grid: dict | None = None) -> Path:
    data = {
        "name": name, "base": str(base), "cluster": "local", "out_dir": str(tmp_path / "runs"),
        # the job runs this checkout's code with this interpreter
        "cluster_overrides": {"workdir": str(REPO), "setup": [], "time": "00:20:00",
                              "command": f"{sys.executable} -m musicmoe.cli.main"},
        "overrides": overrides,
    }
    if grid:
        data["grid"] = grid
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def submit(path: Path) -> dict[str, str]:
    """``musicmoe sweep --submit``; returns {run name: job id}."""
    proc = musicmoe("sweep", str(path), "--submit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: job for job, name in re.findall(r"^  (\d+(?:_\d+)?)  (\S+)  ", proc.stdout, re.M)}


def event_steps(path: Path, tag: str = "train/loss") -> list[int]:
    """Steps of one scalar tag in one raw event file (no orphan purging)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [e.step for e in EventFileLoader(str(path)).Load()
            if e.HasField("summary") and any(v.tag == tag for v in e.summary.value)]


def event_files(run: Path) -> list[Path]:
    dirs = events.event_dirs(run)
    assert len(dirs) == 1, f"TensorBoard events of {run} are spread over {dirs}: a run must keep one version"
    return sorted(dirs[0].glob(events.EVENTS_GLOB), key=lambda p: p.stat().st_mtime)


def checkpoint_step(run: Path) -> int | None:
    """global_step of the run's last.ckpt (None while there is none)."""
    import torch

    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    for _ in range(5):  # it may be mid-rename
        try:
            return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
        except (EOFError, RuntimeError, FileNotFoundError):
            time.sleep(0.2)
    return None


def trainer_pids(job_id: str) -> list[int]:
    """Python processes of ``musicmoe train`` that SLURM started for ``job_id`` (found through /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in env and b"train" in cmd and b"musicmoe.cli.main" in cmd:
            pids.append(int(proc.name))
    return pids


def test_two_run_sweep_trains_resubmits_nothing_and_compares(train_base, tmp_path):
    max_steps = 12
    path = sweep_file(tmp_path, train_base, "pair",
                      {"trainer.max_steps": max_steps, "trainer.checkpoint_every_n_steps": 4,
                       "eval.every_n_steps": 6}, grid={"run.seed": [0, 1]})
    jobs = submit(path)
    assert len(jobs) == 2 and all("_" in j for j in jobs.values()), jobs  # one job array
    states = slurm.wait(list(jobs.values()), timeout=900)
    runs = {name: tmp_path / "runs" / name for name in jobs}
    for name, run in runs.items():
        log = "".join(p.read_text() for p in run.glob("slurm-*.out"))
        assert states[jobs[name]] == "COMPLETED", f"{name}: {states[jobs[name]]}\n{log[-3000:]}"
        assert (run / "config.yaml").is_file()
        assert any((run / "checkpoints").iterdir())
        assert event_files(run)
        lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        assert lines, f"{run}/metrics.jsonl is empty"
        curves = events.read_curves(run)
        assert events.last_step(curves) >= max_steps - 1
        assert "eval/omr/ser" in curves and "train/loss" in curves, sorted(curves)
        assert f"job {jobs[name]} restart 0" in log

    status = musicmoe("sweep", str(path), "--status")
    assert status.returncode == 0, status.stderr
    for name, job in jobs.items():
        row = next(line for line in status.stdout.splitlines() if line.startswith(f"| {name} "))
        assert f"| {job} " in row and "COMPLETED" in row
    again = musicmoe("sweep", str(path), "--submit")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout + again.stderr

    png = tmp_path / "compare.png"
    cmp = musicmoe("compare", *map(str, runs.values()), "--metrics", "omr/ser,train/loss", "--plot", str(png))
    assert cmp.returncode == 0, cmp.stderr
    rows = [line for line in cmp.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[2].strip() == "run.seed"  # the only difference between the two runs
    for name in runs:
        assert sum(row.startswith(f"| {name} ") and "| eval/omr/ser " in row for row in rows) == 1, rows
        assert sum(row.startswith(f"| {name} ") and "| train/loss " in row for row in rows) == 1, rows
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_requeue_resumes_from_checkpoint_on_one_step_axis(train_base, tmp_path):
    max_steps = 30
    path = sweep_file(tmp_path, train_base, "requeue",
                      {"trainer.max_steps": max_steps, "trainer.checkpoint_every_n_steps": 5})
    (name, job), = submit(path).items()
    run = tmp_path / "runs" / name
    seen = wait_for(lambda: checkpoint_step(run), 600, "the first checkpoint")
    assert slurm.job_table()[job].state == "RUNNING"
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_for(lambda: slurm.job_table()[job].restarts >= 1, 60, "SLURM to count the requeue")
    status = musicmoe("sweep", str(path), "--status")
    assert re.search(rf"^\| {name} .*\| 1x ", status.stdout, re.M), status.stdout
    state = slurm.wait([job], timeout=900)[job]
    log = "".join(p.read_text() for p in run.glob("slurm-*.out"))
    assert state == "COMPLETED", log[-3000:]
    assert f"job {job} restart 1" in log

    files = event_files(run)
    assert len(files) >= 2, "the resumed job writes a new event file in the same TensorBoard version"
    first, resumed = event_steps(files[0]), event_steps(files[-1])
    assert first and max(first) < max_steps - 1, "the requeue came after training had already finished"
    assert min(resumed) >= seen, f"resumed at step {min(resumed)}, before the checkpoint at {seen}: restarted?"
    curves = events.read_curves(run)
    steps = [p.step for p in curves["train/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] >= max_steps - 1
    assert checkpoint_step(run) == max_steps


def test_kill9_loses_at_most_the_steps_since_the_checkpoint(train_base, tmp_path):
    max_steps, every = 30, 5
    path = sweep_file(tmp_path, train_base, "kill",
                      {"trainer.max_steps": max_steps, "trainer.checkpoint_every_n_steps": every})
    (name, job), = submit(path).items()
    run = tmp_path / "runs" / name
    wait_for(lambda: (checkpoint_step(run) or 0) >= every, 600, "a checkpoint")
    pids = wait_for(lambda: trainer_pids(job), 30, f"the trainer process of job {job}")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    state = slurm.wait([job], timeout=120)[job]
    assert state != "COMPLETED"
    saved = checkpoint_step(run)
    logged = max(event_steps(event_files(run)[-1]), default=saved)
    assert saved < max_steps - 1 and logged - saved < every + 1  # at most the steps since the checkpoint

    status = musicmoe("sweep", str(path), "--status")
    assert re.search(rf"^\| {name} .*\| {job} .*\| (FAILED|CANCELLED)", status.stdout, re.M), status.stdout
    (again_name, again), = submit(path).items()  # a failed run is submitted again, into the same dir
    assert again_name == name and again != job
    assert slurm.wait([again], timeout=900)[again] == "COMPLETED"
    resumed = event_steps(event_files(run)[-1])
    assert saved <= min(resumed) <= saved + 1, f"resumed at {min(resumed)}, checkpoint was at {saved}"
    assert checkpoint_step(run) == max_steps


def test_time_limit_signal_checkpoints_requeues_and_finishes(train_base, tmp_path):
    """The time-limit path as SLURM drives it: a 3-minute job with ``--signal=SIGUSR1@90`` gets the signal from the
    controller (30-90 s into the job: SLURM may send it up to 60 s early), the trainer saves at the next step
    boundary and requeues its own job, and the requeued job resumes and finishes at ``trainer.max_steps``.

    The first job's ``max_steps`` is out of reach, so only the signal can end it; once SLURM counts the requeue the
    test lowers ``max_steps`` in the base config (a key a resume may change), which the restarted job reads."""
    from omegaconf import OmegaConf

    base = tmp_path / "base.yaml"
    node = OmegaConf.load(train_base)
    OmegaConf.update(node, "trainer.max_steps", 100_000)
    OmegaConf.update(node, "trainer.checkpoint_every_n_steps", 100_000)  # only the signal saves a checkpoint
    base.write_text(OmegaConf.to_yaml(node))
    path = sweep_file(tmp_path, base, "timelimit", {})
    spec = yaml.safe_load(path.read_text())
    spec["cluster_overrides"].update(time="3", signal_seconds=90, requeue=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (name, job), = submit(path).items()
    run = tmp_path / "runs" / name

    wait_for(lambda: slurm.job_table()[job].restarts >= 1, 240, "the signal and the job's own requeue")
    saved = wait_for(lambda: checkpoint_step(run), 30, "the checkpoint saved on the signal")
    final = saved + 12
    OmegaConf.update(node, "trainer.max_steps", final)
    base.write_text(OmegaConf.to_yaml(node))
    state = slurm.wait([job], timeout=300)[job]
    log = "".join(p.read_text() for p in sorted(run.glob("slurm-*.out")))
    assert state == "COMPLETED", log[-3000:]
    assert "SIGUSR1 received: saving" in log and f"scontrol requeue {job} -> exit 0" in log, log[-3000:]
    assert f"job {job} restart 0" in log and f"job {job} restart 1" in log
    assert saved > 0 and checkpoint_step(run) == final

    files = event_files(run)
    first, resumed = event_steps(files[0]), event_steps(files[-1])
    assert len(files) >= 2 and first and resumed
    assert max(first) <= saved <= min(resumed), (max(first), saved, min(resumed))
    steps = [p.step for p in events.read_curves(run)["train/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] >= final - 1  # one monotone step axis across the requeue


def test_cpu_multitask_miniature_aggregates_seeds(train_base, tmp_path):
    """The shipped ablation (experiments/sweeps/cpu_multitask.yaml) in miniature: its first two arms (OMR only and
    OMR + every other task, image codes as input) x two seeds, the tiny model and a few steps. ``--status`` shows
    the four runs finished, and ``musicmoe compare --seeds`` reports per arm the mean and sample std of the runs'
    last held-out SER, equal to the values read from each run's own metrics.jsonl."""
    import csv
    import statistics

    shipped = yaml.safe_load((REPO / "experiments" / "sweeps" / "cpu_multitask.yaml").read_text())
    arms = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in shipped["runs"][:2]}
    assert set(arms) == {"omr_codes", "all_codes"} and len(arms["all_codes"]["data.tasks"]) > 1
    max_steps = 6
    path = sweep_file(tmp_path, train_base, "mini_multitask",
                      {"trainer.max_steps": max_steps, "trainer.checkpoint_every_n_steps": max_steps,
                       "eval.every_n_steps": max_steps, "eval.tasks": ["omr"], "eval.max_examples": 2,
                       "eval.spread_folds": 0},
                      grid={"run.seed": [0, 1]})
    spec = yaml.safe_load(path.read_text())
    spec["runs"] = [{"label": label, **overrides} for label, overrides in arms.items()]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    jobs = submit(path)
    assert len(jobs) == 4, jobs
    states = slurm.wait(list(jobs.values()), timeout=900)
    for name, job in jobs.items():
        log = "".join(p.read_text() for p in (tmp_path / "runs" / name).glob("slurm-*.out"))
        assert states[job] == "COMPLETED", f"{name}: {states[job]}\n{log[-3000:]}"

    status = musicmoe("sweep", str(path), "--status")
    assert status.returncode == 0, status.stderr
    assert "4 finished" in status.stdout and f"| {max_steps}/{max_steps} " in status.stdout, status.stdout

    last: dict[str, list[float]] = {"omr_codes": [], "all_codes": []}
    shuffled: dict[str, list[float]] = {"omr_codes": [], "all_codes": []}
    for name in jobs:
        rows = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
                if '"omr/ser"' in line]
        arm = name.split("_seed")[0]
        last[arm].append(rows[-1]["omr/ser"])
        shuffled[arm].append(rows[-1]["omr/ser_shuffled"])
    table_csv, bars = tmp_path / "arms.csv", tmp_path / "arms.png"
    cmp = musicmoe("compare", str(tmp_path / "runs"), "--metrics", "omr/ser", "--csv", str(table_csv),
                   "--bars", str(bars))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "## per arm over seeds" in cmp.stdout
    rows = {r["arm"]: r for r in csv.DictReader(table_csv.open())}
    assert set(rows) == {"omr_codes", "all_codes"}, rows
    for arm, values in last.items():
        row = rows[arm]
        assert int(row["n"]) == 2
        assert float(row["mean"]) == pytest.approx(statistics.mean(values), rel=1e-5)  # TensorBoard holds float32
        assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-4, abs=1e-6)
        assert float(row["shuffled_mean"]) == pytest.approx(statistics.mean(shuffled[arm]), rel=1e-5)
    assert bars.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
