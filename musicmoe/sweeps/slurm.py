"""Talk to SLURM through its command-line tools: submit with ``sbatch``, read job states with ``scontrol``.

``sacct`` needs an accounting database that small clusters lack, so job states come from
``scontrol show job`` (active jobs and jobs that ended less than ``MinJobAge`` seconds ago).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


class SlurmError(RuntimeError):
    """A SLURM command failed; the message holds its error output."""


@dataclass
class JobInfo:
    job_id: str  # "<array id>_<task>" for array tasks, else the plain id
    state: str
    reason: str
    restarts: int
    run_time: str
    nodes: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("scontrol") is not None


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"'{cmd[0]}' not found: is SLURM installed here (see slurm/local_cluster.sh)?")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"'{' '.join(cmd)}' did not answer in {timeout:.0f} s") from None


def submit(script: Path) -> str:
    """``sbatch`` a script; returns the job id (the array's id for an array)."""
    proc = _run(["sbatch", "--parsable", str(script)])
    if proc.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {(proc.stderr or proc.stdout).strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmError(f"sbatch {script}: unexpected answer {proc.stdout.strip()!r}")
    return job_id


def _task_ids(spec: str) -> list[str]:
    """Array task ids of a scontrol ``ArrayTaskId`` field: ``3``, ``0-3``, ``0-7%2``, ``1,4-5``."""
    spec = spec.split("%")[0]
    out: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            step = 1
            if ":" in hi:
                hi, s = hi.split(":", 1)
                step = int(s)
            out.extend(str(i) for i in range(int(lo), int(hi) + 1, step))
        elif part.strip():
            out.append(part.strip())
    return out


def parse_show_job(text: str) -> dict[str, JobInfo]:
    """Parse ``scontrol show job -o`` (one job record per line) into ``{job id: JobInfo}``.

    Array tasks are keyed ``<array id>_<task>``; a pending array record covering several tasks yields one
    entry per task.
    """
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        if "JobId=" not in line:
            continue
        fields = dict(m.groups() for m in re.finditer(r"(\S+?)=(\S*)", line))
        info = dict(state=fields.get("JobState", "?"), reason=fields.get("Reason", ""),
                    restarts=int(fields.get("Restarts", "0") or 0), run_time=fields.get("RunTime", ""),
                    nodes=fields.get("NodeList", ""))
        if "ArrayJobId" in fields and "ArrayTaskId" in fields:
            for task in _task_ids(fields["ArrayTaskId"]):
                key = f"{fields['ArrayJobId']}_{task}"
                jobs[key] = JobInfo(job_id=key, **info)
        else:
            jobs[fields["JobId"]] = JobInfo(job_id=fields["JobId"], **info)
    return jobs


def job_table() -> dict[str, JobInfo]:
    """All jobs the controller knows (active ones and recently ended ones)."""
    proc = _run(["scontrol", "show", "job", "-o"])
    if proc.returncode != 0:
        raise SlurmError(f"scontrol show job failed: {(proc.stderr or proc.stdout).strip()}")
    return parse_show_job(proc.stdout)


def wait(job_ids: list[str], timeout: float, poll: float = 1.0) -> dict[str, str]:
    """Block until every job has ended; returns ``{job id: final state}``.

    A job the controller no longer knows counts as ended (state ``UNKNOWN``). Raises ``SlurmError`` on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        table = job_table()
        states = {j: (table[j].state if j in table else "UNKNOWN") for j in job_ids}
        if all(s in ENDED_STATES or s == "UNKNOWN" for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise SlurmError(f"jobs still running after {timeout:.0f} s: {states}")
        time.sleep(poll)
