"""Run directories of a sweep: the stored config guard, submission records and progress.

Layout (``musicmoe train`` writes the training outputs, the sweep writes the rest)::

    <out_dir>/<run name>/
        config.yaml          resolved config (written at submission, then by training)
        sweep.json           sweep, label, base, overrides and hash of the run
        submissions.jsonl    one record per sbatch submission (job id, time, script)
        checkpoints/         last.ckpt, or a DeepSpeed checkpoint folder
        tb/                  TensorBoard events (one version per run, continued across requeues)
        metrics.jsonl        step-wise metrics
        slurm-<job>.out      job log, appended across requeues
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from musicmoe.config import ConfigError, flat_items, load_saved, save_config
from musicmoe.config import config_differences as differences
from musicmoe.config.schema import Config
from musicmoe.sweeps.spec import Run, is_semantic

CONFIG_FILE = "config.yaml"
SWEEP_FILE = "sweep.json"
SUBMISSIONS_FILE = "submissions.jsonl"


class RunConflict(ConfigError):
    """A run directory already holds a different config than the run about to use it."""


def semantic_items(cfg: Config) -> dict[str, Any]:
    """A config's flattened keys that define what a run computes (not where it lives or runs)."""
    return {k: v for k, v in flat_items(cfg).items() if is_semantic(k)}


def config_differences(old: Config, new: Config) -> list[str]:
    """``key: old -> new`` for each semantic key whose value differs."""
    return differences(old, new, is_semantic)


def check_run_dir(run: Run) -> bool:
    """Raise ``RunConflict`` if ``run.run_dir`` holds another config; True if it holds this run's config.

    The stored config is read with the current schema (keys added since then take their defaults).
    """
    stored = run.run_dir / CONFIG_FILE
    if not stored.is_file():
        return False
    try:
        old = load_saved(Config, stored)
    except ConfigError as err:
        raise RunConflict(f"{stored} cannot be read with the current config schema ({err}); move the run dir "
                          f"away or pin the run's overrides") from None
    diffs = config_differences(old, run.config)
    if diffs:
        shown = "; ".join(diffs[:10]) + (f"; ... ({len(diffs)} keys)" if len(diffs) > 10 else "")
        raise RunConflict(f"run dir {run.run_dir} holds a different config than run {run.label!r} of this sweep "
                          f"({shown}). Its defaults or base file changed since it was submitted: set the changed "
                          f"keys in the sweep file, or move {run.run_dir} away to start it afresh")
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def prepare_run_dir(run: Run, sweep_name: str) -> None:
    """Create the run dir (after :func:`check_run_dir`), store its config and sweep record."""
    exists = check_run_dir(run)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if not exists:
        save_config(run.config, run.run_dir, CONFIG_FILE)
    record = {"sweep": sweep_name, "label": run.label, "name": run.name, "hash": run.digest, "base": run.base,
              "overrides": run.overrides, "semantic": run.semantic}
    _write_atomic(run.run_dir / SWEEP_FILE, json.dumps(record, indent=1, default=str) + "\n")


def record_submission(run: Run, job_id: str, script: Path, cluster: str) -> None:
    path = run.run_dir / SUBMISSIONS_FILE
    old = path.read_text() if path.is_file() else ""
    rec = {"job_id": job_id, "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
           "script": str(script), "cluster": cluster}
    _write_atomic(path, old + json.dumps(rec) + "\n")


def submissions(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / SUBMISSIONS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_job_id(run_dir: Path) -> str | None:
    subs = submissions(run_dir)
    return str(subs[-1]["job_id"]) if subs else None


def has_checkpoint(run_dir: Path) -> bool:
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(ckpt.iterdir())
