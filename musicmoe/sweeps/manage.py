"""Submit a sweep's runs and report their state (scheduler + run directory)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from musicmoe.sweeps import events, rundir, slurm
from musicmoe.sweeps.sbatch import Job, render_jobs
from musicmoe.sweeps.spec import Run, Sweep

log = logging.getLogger(__name__)

_LOG_START = re.compile(r"^musicmoe: \S+ job (\S+) restart (\d+)", re.M)


@dataclass
class RunStatus:
    run: Run
    job_id: str | None
    state: str  # scheduler state, or NEW / FINISHED / STOPPED / UNKNOWN from the run dir
    reason: str
    restarts: int  # how often SLURM restarted (requeued) the run's latest job
    step: int | None
    max_steps: int
    metric: str | None
    value: float | None
    active: bool
    finished: bool

    @property
    def failed(self) -> bool:
        """The run's job ended (or was lost) before ``max_steps``."""
        return not self.active and not self.finished and self.state not in ("NEW", "UNKNOWN")


def log_restarts(run_dir: Path, job_id: str | None) -> int:
    """Restarts of ``job_id`` seen in the run's job logs (the scheduler forgets ended jobs)."""
    if not job_id:
        return 0
    best = 0
    for path in run_dir.glob("slurm-*.out"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for jid, restart in _LOG_START.findall(text):
            if jid == job_id:
                best = max(best, int(restart))
    return best


def run_status(run: Run, jobs: dict[str, slurm.JobInfo] | None, metric: str = "") -> RunStatus:
    curves = events.read_curves(run.run_dir) if run.run_dir.is_dir() else {}
    step = events.last_step(curves)
    tag = events.pick_metric(curves, metric)
    last = events.last_finite(curves.get(tag, [])) if tag else None
    value = last.value if last is not None else None
    max_steps = run.config.trainer.max_steps
    reached = step is not None and max_steps > 0 and step + 1 >= max_steps
    job_id = rundir.last_job_id(run.run_dir) if run.run_dir.is_dir() else None
    info = jobs.get(job_id) if (jobs is not None and job_id) else None
    restarts = max(info.restarts if info else 0, log_restarts(run.run_dir, job_id))
    if info is not None:
        state, reason, active = info.state, info.reason, info.active
        finished = info.state == "COMPLETED" or (reached and not active)
    else:
        active = False
        finished = reached
        reason = ""
        if finished:
            state = "FINISHED"
        elif job_id is None:
            state = "NEW"
        elif jobs is None:
            state = "UNKNOWN"  # scheduler not reachable
        else:
            state = "STOPPED" if step is not None else "ENDED"
    return RunStatus(run=run, job_id=job_id, state=state, reason=reason if reason not in ("None", "(null)") else "",
                     restarts=restarts, step=step, max_steps=max_steps, metric=tag, value=value, active=active,
                     finished=finished)


def sweep_status(sweep: Sweep) -> tuple[list[RunStatus], str | None]:
    """Each run's status; the second item says why the scheduler could not be asked (else None)."""
    jobs: dict[str, slurm.JobInfo] | None
    problem = None
    try:
        jobs = slurm.job_table()
    except slurm.SlurmError as err:
        jobs, problem = None, str(err)
    return [run_status(run, jobs, sweep.metric) for run in sweep.runs], problem


def log_tail(run_dir: Path, job_id: str | None, lines: int = 15) -> str:
    """The last ``lines`` lines of the run's newest job log (of ``job_id`` when it wrote one), or ""."""
    logs = sorted(run_dir.glob("slurm-*.out"), key=lambda p: p.stat().st_mtime) if run_dir.is_dir() else []
    if job_id and (run_dir / f"slurm-{job_id}.out") in logs:
        logs.append(run_dir / f"slurm-{job_id}.out")
    if not logs:
        return ""
    try:
        text = logs[-1].read_text(errors="replace")
    except OSError:
        return ""
    # progress bars rewrite one line with carriage returns: keep what each line showed last
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


def _step(s: RunStatus) -> str:
    if s.step is None:
        return "-"
    return f"{s.step}/{s.max_steps}" if s.max_steps > 0 else str(s.step)  # the last step the run logged


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def status_table(statuses: list[RunStatus]) -> str:
    rows = [["run", "label", "job", "state", "requeued", "steps", "metric", "value"]]
    for s in statuses:
        state = s.state + (f" ({s.reason})" if s.reason and s.state == "PENDING" else "")
        rows.append([s.run.name, s.run.label, s.job_id or "-", state, f"{s.restarts}x" if s.restarts else "-",
                     _step(s), s.metric or "-", _fmt(s.value)])
    return markdown(rows)


def markdown(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@dataclass
class Submitted:
    job: Job
    job_id: str
    script: Path


def plan_submission(sweep: Sweep) -> tuple[list[Run], list[tuple[Run, str]]]:
    """(runs to submit, [(run, why it is skipped)]). Raises ``RunConflict`` before anything is submitted."""
    for run in sweep.runs:
        rundir.check_run_dir(run)
    statuses, problem = sweep_status(sweep)
    if problem:
        raise slurm.SlurmError(problem)
    todo, skipped = [], []
    for s in statuses:
        if s.active:
            skipped.append((s.run, f"job {s.job_id} is {s.state}"))
        elif s.finished:
            skipped.append((s.run, f"finished at step {s.step}"))
        else:
            todo.append(s.run)
    return todo, skipped


def submit_sweep(sweep: Sweep, runs: list[Run], workdir: Path | None = None) -> list[Submitted]:
    """Write each job's script next to the runs, ``sbatch`` it and record the job id in every run dir."""
    out = []
    for run in runs:
        rundir.prepare_run_dir(run, sweep.name)
    for job in render_jobs(sweep, runs, workdir):
        script = job.script_path(sweep.out_dir)
        script.parent.mkdir(parents=True, exist_ok=True)
        (script.parent / "logs").mkdir(exist_ok=True)
        tmp = script.with_name(script.name + ".tmp")
        tmp.write_text(job.script)
        tmp.replace(script)
        job_id = slurm.submit(script)
        for run in job.runs:
            rundir.record_submission(run, job.job_id_of(job_id, run), script, sweep.cluster_source)
        log.info("submitted %s as job %s", script, job_id)
        out.append(Submitted(job=job, job_id=job_id, script=script))
    return out
