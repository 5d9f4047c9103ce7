"""Settings of the SLURM cluster a sweep is submitted to (owner: sweeps).

Shipped clusters live in ``configs/cluster/*.yaml``; a sweep file names one (``cluster: local``), or
``musicmoe sweep --cluster NAME`` picks one. How many nodes and tasks a run takes is not a cluster setting: it
comes from the run's own ``trainer.num_nodes`` (``--nodes``) and ``trainer.devices`` (``--ntasks-per-node``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TIME = re.compile(r"^(UNLIMITED|INFINITE|\d+|\d+:\d{1,2}(:\d{1,2})?|\d+-\d+(:\d{1,2}){0,2})$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class ClusterConfig:
    """Where and how sweep runs are submitted (sbatch header, job environment, training launcher)."""

    name: str = "default"
    partition: str = ""  # "" = the cluster's default partition
    account: str = ""
    qos: str = ""
    time: str = "24:00:00"  # --time; quote it in YAML ("24:00:00"), unquoted YAML reads it as seconds
    gpus: bool = False  # one GPU per task: --gres=gpu[:gpu_type]:<trainer.devices>
    gpu_type: str = ""  # e.g. "a100"; "" = any
    cpus_per_task: int = 1
    mem: str = ""  # per node, e.g. "200G"; "" = the cluster's DefMemPerCPU
    constraint: str = ""
    exclusive: bool = False
    sbatch_extra: list[str] = field(default_factory=list)  # more sbatch options, e.g. ["--exclude=node7"]
    max_parallel: int = 0  # at most this many array tasks run at once (--array=...%N); 0 = no limit
    requeue: bool = True  # #SBATCH --requeue: preempted/failed nodes put the job back in the queue
    signal_seconds: int = 90  # --signal=SIGUSR1@N: Lightning checkpoints and requeues N s before the time limit
    workdir: str = ""  # folder the job runs in; "" = the folder `musicmoe sweep --submit` runs in
    setup: list[str] = field(default_factory=lambda: ["source .venv/bin/activate"])  # shell lines before training
    env: dict[str, str] = field(default_factory=dict)  # exported in the job
    command: str = "musicmoe"  # how the job calls musicmoe, e.g. "python -m musicmoe.cli.main"
    srun_args: list[str] = field(default_factory=lambda: ["--kill-on-bad-exit=1"])
    # overrides added to every run submitted here, before the sweep's own (they are part of the run's identity)
    train_overrides: list[str] = field(default_factory=list)
    template: str = ""  # sbatch template file; "" = slurm/train.sbatch of this repository

    def __post_init__(self) -> None:
        def err(key: str, msg: str) -> None:
            raise ValueError(f"cluster.{key}: {msg}")

        if not _TIME.match(str(self.time)):
            err("time", f"not a SLURM time limit (e.g. '24:00:00', '2-00:00:00', 'UNLIMITED'): {self.time!r}")
        if self.mem and not _MEM.match(self.mem):
            err("mem", f"not a SLURM memory size (e.g. '200G', '64000M'): {self.mem!r}")
        for key in ("cpus_per_task",):
            if getattr(self, key) < 1:
                err(key, f"must be >= 1, got {getattr(self, key)!r}")
        for key in ("max_parallel", "signal_seconds"):
            if getattr(self, key) < 0:
                err(key, f"must be >= 0, got {getattr(self, key)!r}")
        if not self.command.strip():
            err("command", "must not be empty")
        for name in self.env:
            if not _ENV_NAME.match(name):
                err("env", f"not an environment variable name: {name!r}")
        for item in self.train_overrides:
            if "=" not in item:
                err("train_overrides", f"'{item}' must look like key.sub=value")
            if item.split("=", 1)[0].strip().lstrip("+").startswith(("cluster.", "run.out_dir", "run.name")):
                err("train_overrides", f"'{item}': cluster and run location keys are set by the sweep itself")
        for opt in self.sbatch_extra:
            if not opt.startswith("--"):
                err("sbatch_extra", f"each entry is one long sbatch option like '--exclude=node7', got {opt!r}")
