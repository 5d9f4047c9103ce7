"""Render sbatch scripts for sweep runs from ``slurm/train.sbatch``.

Runs with the same resources (nodes, tasks, GPUs, time, ...) share one job array whose task ``i`` trains the
group's ``i``-th run; a run whose resources differ from every other gets its own job.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from musicmoe.sweeps.config import ClusterConfig
from musicmoe.sweeps.spec import Run, Sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "slurm" / "train.sbatch"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def resource_options(run: Run) -> list[str]:
    """sbatch options that size and place one run's job (everything but its name, array and log)."""
    c: ClusterConfig = run.cluster
    trainer = run.config.trainer
    opts = [f"--nodes={trainer.num_nodes}", f"--ntasks-per-node={trainer.devices}",
            f"--cpus-per-task={c.cpus_per_task}", f"--time={c.time}"]
    if c.partition:
        opts.append(f"--partition={c.partition}")
    if c.account:
        opts.append(f"--account={c.account}")
    if c.qos:
        opts.append(f"--qos={c.qos}")
    if c.gpus:
        opts.append(f"--gres=gpu:{c.gpu_type + ':' if c.gpu_type else ''}{trainer.devices}")
    if c.mem:
        opts.append(f"--mem={c.mem}")
    if c.constraint:
        opts.append(f"--constraint={c.constraint}")
    if c.exclusive:
        opts.append("--exclusive")
    if c.requeue:
        opts.append("--requeue")
    if c.signal_seconds:
        opts.append(f"--signal=SIGUSR1@{c.signal_seconds}")
    opts.append("--open-mode=append")
    opts.extend(c.sbatch_extra)
    return opts


def _launch_key(run: Run) -> tuple:
    """Runs sharing a job array must also share how the job is set up and launched."""
    c = run.cluster
    return (tuple(resource_options(run)), c.workdir, tuple(c.setup), tuple(sorted(c.env.items())), c.command,
            tuple(c.srun_args), c.template, run.base, c.max_parallel)


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by identical resources and launch settings, in sweep order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(_launch_key(run), []).append(run)
    return list(groups.values())


@dataclass
class Job:
    """One sbatch submission: a single run or a job array over several runs."""

    sweep: str
    runs: list[Run]
    script: str

    @property
    def is_array(self) -> bool:
        return len(self.runs) > 1

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.script.encode()).hexdigest()[:10]

    def script_path(self, out_dir: Path) -> Path:
        return out_dir / "_sweeps" / self.sweep / f"{self.sweep}-{self.digest}.sbatch"

    def job_id_of(self, submitted: str, run: Run) -> str:
        """The SLURM id of ``run``'s job (``<array id>_<task>`` in an array)."""
        return f"{submitted}_{self.runs.index(run)}" if self.is_array else submitted


def _fill(template: str, values: dict[str, str], source: Path) -> str:
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise ValueError(f"sbatch template {source}: unknown placeholder(s) {missing}; known: {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render_job(sweep: Sweep, runs: list[Run], workdir: Path | None = None) -> Job:
    """The sbatch script that trains ``runs`` (which must share resources, see :func:`group_runs`)."""
    if not runs:
        raise ValueError("render_job needs at least one run")
    if len({_launch_key(r) for r in runs}) != 1:
        raise ValueError("runs of one job must share resources and launch settings (use group_runs)")
    first = runs[0]
    c = first.cluster
    template_path = Path(c.template) if c.template else DEFAULT_TEMPLATE
    if not template_path.is_file():
        raise FileNotFoundError(f"sbatch template not found: {template_path} (cluster.template)")
    log_dir = sweep.out_dir / "_sweeps" / sweep.name / "logs"
    array = len(runs) > 1
    job_name = f"mm-{sweep.name}" if array else f"mm-{first.name}"
    options = [f"--job-name={job_name}", *resource_options(first)]
    if array:
        options.append(f"--array=0-{len(runs) - 1}" + (f"%{c.max_parallel}" if c.max_parallel else ""))
        options.append(f"--output={log_dir}/%x-%A_%a.out")
    else:
        options.append(f"--output={log_dir}/%x-%j.out")
    cases = []
    for i, run in enumerate(runs):
        args = " ".join(shlex.quote(a) for a in run.train_args)
        cases.append(f"    {i})  # {run.label}\n"
                     f"        RUN_NAME={shlex.quote(run.name)}\n"
                     f"        RUN_DIR={shlex.quote(str(run.run_dir))}\n"
                     f"        ARGS=({args}) ;;")
    setup = list(c.setup) + [f"export {k}={shlex.quote(v)}" for k, v in c.env.items()]
    wd = Path(c.workdir).expanduser() if c.workdir else (workdir or Path.cwd())
    values = {
        "sbatch_options": "\n".join(f"#SBATCH {o}" for o in options),
        "workdir": shlex.quote(str(wd.resolve())),
        "setup": "\n".join(setup),
        "runs": "\n".join(cases),
        "srun_args": " ".join(shlex.quote(a) for a in c.srun_args),
        "command": c.command,
        "base": shlex.quote(first.base),
    }
    return Job(sweep=sweep.name, runs=list(runs), script=_fill(template_path.read_text(), values, template_path))


def render_jobs(sweep: Sweep, runs: list[Run] | None = None, workdir: Path | None = None) -> list[Job]:
    return [render_job(sweep, group, workdir) for group in group_runs(sweep.runs if runs is None else runs)]
