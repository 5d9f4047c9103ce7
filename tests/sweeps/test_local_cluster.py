"""slurm/local_cluster.sh runs a real SLURM cluster: jobs run, the script is idempotent, scontrol parses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from musicmoe.sweeps import slurm
from musicmoe.sweeps.slurm import parse_show_job

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "local_cluster.sh"


@pytest.mark.slurm
def test_start_is_idempotent_and_jobs_run(slurm_cluster, tmp_path):
    again = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"export SLURM_CONF={slurm_cluster['SLURM_CONF']}" in again.stdout
    assert "already running" in again.stderr
    status = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and any(s in status.stdout for s in (" idle", " mix", " alloc")), status.stdout

    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --array=0-1\n#SBATCH --output=" + str(tmp_path / "%A_%a.log") + "\n"
                      f"srun bash -c 'echo task $SLURM_ARRAY_TASK_ID > {tmp_path}/out-$SLURM_ARRAY_TASK_ID'\n")
    job = slurm.submit(script)
    states = slurm.wait([f"{job}_0", f"{job}_1"], timeout=120)
    assert set(states.values()) == {"COMPLETED"}, states
    assert [(tmp_path / f"out-{i}").read_text().strip() for i in (0, 1)] == ["task 0", "task 1"]


def test_parse_show_job_expands_pending_arrays():
    text = ("JobId=7 ArrayJobId=7 ArrayTaskId=2-4%2 JobName=x JobState=PENDING Reason=JobArrayTaskLimit "
            "Requeue=1 Restarts=0 RunTime=00:00:00 NodeList=(null)\n"
            "JobId=9 ArrayJobId=7 ArrayTaskId=1 JobName=x JobState=RUNNING Reason=None Restarts=2 "
            "RunTime=00:01:02 NodeList=vm\n"
            "JobId=10 JobName=y JobState=COMPLETED Reason=None Restarts=0 RunTime=00:00:05 NodeList=vm\n")
    jobs = parse_show_job(text)
    assert set(jobs) == {"7_2", "7_3", "7_4", "7_1", "10"}
    assert jobs["7_3"].state == "PENDING" and jobs["7_3"].active
    assert (jobs["7_1"].restarts, jobs["7_1"].run_time) == (2, "00:01:02")
    assert not jobs["10"].active
