"""Fixtures for sweep tests: a real single-node SLURM cluster (tests marked ``slurm`` use it)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "local_cluster.sh"
SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged")


def _cluster(cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """Start slurm/local_cluster.sh for the session (installing SLURM if root can); stop it afterwards.

    Skips only when SLURM is neither installed nor installable (not root, or no apt-get); a cluster that is
    installed but fails to start fails the test. A cluster that was already running is left running, and so is one
    that still holds jobs at the end (a sweep submitted to it while the tests ran).
    """
    installed = all(shutil.which(t) for t in SLURM_TOOLS)
    if not installed and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip("SLURM (slurm-wlm, munge) is not installed, and installing it needs root and apt-get")
    was_running = _cluster("status", 60).returncode == 0
    proc = _cluster("start")
    if proc.returncode != 0:
        pytest.fail(f"slurm/local_cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", proc.stdout, re.M)
    assert match, f"local_cluster.sh printed no SLURM_CONF: {proc.stdout!r}"
    env = {"SLURM_CONF": match.group(1)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env
    if not was_running and not _queued_jobs(env):
        _cluster("stop", 120)  # (jobs submitted meanwhile by someone else keep the cluster running)


def _queued_jobs(env: dict[str, str]) -> list[str]:
    """Jobs still known to the controller (pending, running or completing)."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    return [line for line in proc.stdout.splitlines() if line.strip()] if proc.returncode == 0 else []


@pytest.fixture(autouse=True)
def _slurm_marker(request: pytest.FixtureRequest) -> None:
    """Tests marked ``slurm`` get the session cluster (and SLURM_CONF) without asking for it."""
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm_cluster")


def training_fixtures():
    """tests/training/fixtures.py (TRAIN's builders of tiny codecs, token shards and run overrides)."""
    path = Path(__file__).resolve().parents[1] / "training" / "fixtures.py"
    spec = importlib.util.spec_from_file_location("musicmoe_training_test_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_training(tiny_corpus, tmp_path_factory) -> dict:
    """Tiny real codecs and token shards of ``tiny_corpus``, built once (shared on disk with tests/training),
    and TRAIN's ``tiny_overrides`` function for a tiny model."""
    fx = training_fixtures()
    base = tmp_path_factory.getbasetemp() / "musicmoe_training"  # the folder tests/training builds into
    codecs = fx.ensure_codecs(tiny_corpus, base)
    tokens = fx.ensure_tokens(tiny_corpus, codecs, base)
    return {"codecs": codecs, "tokens": tokens, "overrides": fx.tiny_overrides}
