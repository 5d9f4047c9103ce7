"""``musicmoe sweep FILE [KEY=VALUE ...] --dry-run | --submit | --status``: SLURM sweeps from a sweep file."""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

from musicmoe.cli.main import UserError
from musicmoe.sweeps import manage, rundir, slurm
from musicmoe.sweeps.sbatch import render_jobs
from musicmoe.sweeps.spec import Sweep, load_sweep


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="expand a sweep file into runs; show, submit (SLURM) or follow them",
        description="Expand a sweep file (experiments/sweeps/*.yaml) into named runs. Without an action it "
                    "behaves like --dry-run. Trailing KEY=VALUE overrides apply to every run (and change "
                    "their names: they are part of each run's identity).",
    )
    p.add_argument("file", type=Path, help="sweep file, e.g. experiments/sweeps/ablation_moe.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every run")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print runs, overrides and sbatch scripts")
    action.add_argument("--submit", action="store_true",
                        help="sbatch the runs that are neither queued, running nor finished; print job ids")
    action.add_argument("--status", action="store_true", help="state, requeues, step and key metric of each run")
    p.add_argument("--cluster", help="cluster name under configs/cluster/ or a YAML file (replaces the file's)")
    p.add_argument("--out-dir", type=Path, help="where run dirs go (replaces the file's out_dir)")
    p.add_argument("--only", metavar="PATTERN", action="append",
                   help="only runs whose name or label matches this glob (repeatable)")
    p.set_defaults(func=main)


def _select(sweep: Sweep, patterns: list[str] | None) -> Sweep:
    if not patterns:
        return sweep
    runs = [r for r in sweep.runs if any(fnmatch.fnmatch(r.name, p) or fnmatch.fnmatch(r.label, p)
                                         for p in patterns)]
    if not runs:
        raise UserError(f"no run of sweep {sweep.name} matches {patterns}; runs: "
                        f"{', '.join(r.label for r in sweep.runs)}")
    sweep.runs = runs
    return sweep


def _dry_run(sweep: Sweep) -> int:
    print(f"sweep {sweep.name}: {len(sweep.runs)} run(s) from {sweep.base}; cluster: {sweep.cluster_source}; "
          f"run dirs in {sweep.out_dir}")
    if sweep.description:
        print(f"  {sweep.description}")
    conflicts = 0
    for run in sweep.runs:
        try:
            state = "exists, same config" if rundir.check_run_dir(run) else "new"
        except rundir.RunConflict as err:
            state, conflicts = f"CONFLICT: {err}", conflicts + 1
        print(f"\nrun {run.index}: {run.name}  [{state}]")
        print(f"  dir: {run.run_dir}")
        for item in run.overrides:
            print(f"  {item}")
    for i, job in enumerate(render_jobs(sweep), 1):
        kind = f"job array of {len(job.runs)} runs" if job.is_array else "job"
        print(f"\n# ---- sbatch script {i}: {kind}: {', '.join(r.name for r in job.runs)}")
        print(job.script, end="" if job.script.endswith("\n") else "\n")
    if conflicts:
        print(f"\n{conflicts} run dir(s) hold a different config: --submit would refuse")
        return 1
    return 0


def _submit(sweep: Sweep) -> int:
    try:
        todo, skipped = manage.plan_submission(sweep)
    except slurm.SlurmError as err:
        raise UserError(str(err)) from None
    for run, why in skipped:
        print(f"skip {run.name}: {why}")
    if not todo:
        print("nothing to submit")
        return 0
    try:
        submitted = manage.submit_sweep(sweep, todo)
    except slurm.SlurmError as err:
        raise UserError(str(err)) from None
    for sub in submitted:
        kind = f"array of {len(sub.job.runs)}" if sub.job.is_array else "single run"
        print(f"submitted job {sub.job_id} ({kind}): {sub.script}")
        for run in sub.job.runs:
            print(f"  {sub.job.job_id_of(sub.job_id, run)}  {run.name}  {run.run_dir}")
    return 0


def _status(sweep: Sweep) -> int:
    statuses, problem = manage.sweep_status(sweep)
    _show_status(statuses, problem, sweep)
    return 0


def _show_status(statuses: list[manage.RunStatus], problem: str | None, sweep: Sweep) -> None:
    """The status table, counts of finished/active/failed runs, and the job-log tail of each failed run."""
    if problem:
        print(f"(scheduler not reachable: {problem})")
    print(f"sweep {sweep.name} ({len(statuses)} runs, {sweep.out_dir})")
    print(manage.status_table(statuses))
    counts: dict[str, int] = {}
    for s in statuses:
        kind = "finished" if s.finished else "active" if s.active else "failed" if s.failed else "not started"
        counts[kind] = counts.get(kind, 0) + 1
    print(", ".join(f"{n} {kind}" for kind, n in counts.items()))
    for s in statuses:
        if s.failed:
            tail = manage.log_tail(s.run.run_dir, s.job_id)
            print(f"\n{s.run.name}: {s.state}" + (f" at step {s.step}" if s.step is not None else "")
                  + (f"; last lines of its job log:\n{tail}" if tail else "; no job log in its run dir"))


def main(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file, cluster=args.cluster, extra_overrides=args.overrides, out_dir=args.out_dir)
    sweep = _select(sweep, args.only)
    if args.submit:
        return _submit(sweep)
    if args.status:
        return _status(sweep)
    return _dry_run(sweep)
