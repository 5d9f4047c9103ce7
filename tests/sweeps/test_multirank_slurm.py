"""Two CPU ranks of ``musicmoe train`` under ``srun --ntasks=2`` on the local SLURM cluster (gloo), as a cluster runs
them: DDP, and DeepSpeed ZeRO-2 with its optimizer states partitioned over the two ranks; one summary and one
TensorBoard curve per run (rank 0 logs); a rank killed mid-run fails the job, and the resubmitted job resumes from
the sharded checkpoint to the same state as a run that was never interrupted; the export of a 2-rank ZeRO-2
checkpoint holds exactly the weights the ranks trained."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
import torch

from musicmoe.sweeps import events, slurm

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
STEPS, EVERY = 30, 10


def _submit(tmp_path: Path, tiny: dict, name: str, strategy: str, steps: int = STEPS) -> str:
    over = tiny["overrides"](tiny["tokens"], tiny["codecs"], tmp_path / "runs", name) + [
        "trainer.devices=2", f"trainer.strategy={strategy}", "trainer.accelerator=cpu", f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every_n_steps={EVERY}", "trainer.progress=plain", "trainer.progress_every=5",
        "model.dropout=0.0", "data.num_workers=0"]
    script = tmp_path / f"{name}.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=2\n#SBATCH --cpus-per-task=1\n#SBATCH --time=15\n"
        f"#SBATCH --output={tmp_path}/{name}-%j.out\n"
        f"cd {REPO}\nexport OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1\n"
        # sbatch copies the submitting environment: drop a process group's settings left by an earlier in-process
        # test, so that Lightning derives the rendezvous port from the job id
        "unset MASTER_ADDR MASTER_PORT WORLD_SIZE RANK LOCAL_RANK NODE_RANK GROUP_RANK LOCAL_WORLD_SIZE\n"
        f"srun --kill-on-bad-exit=1 {shlex.quote(sys.executable)} -m musicmoe.cli.main train "
        + " ".join(shlex.quote(o) for o in over) + "\n")
    return slurm.submit(script)


def _log(tmp_path: Path, name: str, job: str) -> str:
    return (tmp_path / f"{name}-{job}.out").read_text()


def _loss_curve(run: Path) -> dict[int, float]:
    return {p.step: p.value for p in events.read_curves(run)["train/loss"]}


def _zero_state(ckpt: Path) -> tuple[int, list[dict]]:
    """(global step, per rank: fp32 partitions and Adam moments) of a DeepSpeed checkpoint folder."""
    folder = ckpt / "checkpoint"
    parts = []
    for rank in (0, 1):
        osd = torch.load(folder / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", map_location="cpu",
                         weights_only=False)["optimizer_state_dict"]
        assert osd["partition_count"] == [2] * len(osd["partition_count"])  # really split over 2 ranks
        moments = {k: [s[k] for s in osd["base_optimizer_state"]["state"].values()] for k in ("exp_avg", "exp_avg_sq")}
        parts.append({"fp32": osd["single_partition_of_fp32_groups"], **moments})
    model = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return int(model["global_step"]), parts


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed"])
def test_two_ranks_train_once_logged_and_partitioned(tiny_training, tmp_path, strategy):
    job = _submit(tmp_path, tiny_training, "two", strategy, steps=EVERY)
    state = slurm.wait([job], timeout=600)[job]
    log = _log(tmp_path, "two", job)
    assert state == "COMPLETED", log[-3000:]
    summaries = [json.loads(line) for line in log.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2 and summaries[0]["global_step"] == EVERY
    run = tmp_path / "runs" / "two"
    steps = sorted(_loss_curve(run))
    assert steps == list(range(1, EVERY + 1))  # one curve, each step logged once (rank 0)
    ckpt = run / "checkpoints" / "last.ckpt"
    if strategy == "deepspeed":
        step, parts = _zero_state(ckpt)
        assert step == EVERY
        sizes = [sum(t.numel() for t in p["fp32"]) for p in parts]
        model = torch.load(ckpt / "checkpoint" / "mp_rank_00_model_states.pt", map_location="cpu",
                           weights_only=False)["module"]
        total = sum(v.numel() for v in model.values() if v.is_floating_point())
        assert abs(sum(sizes) - total) <= 16 and max(sizes) < 0.6 * total  # each rank holds about half
        # the export (ZeRO partitions -> one fp32 file) holds the weights the ranks trained
        from musicmoe.cli.main import main
        from musicmoe.training.checkpoint import load_model

        assert main(["export", str(ckpt), "-o", str(tmp_path / "model.pt")]) == 0
        exported, _ = load_model(tmp_path / "model.pt")
        live = {k.removeprefix("model."): v for k, v in model.items()}
        for k, v in exported.state_dict().items():
            if k in live:
                torch.testing.assert_close(v, live[k].float(), rtol=0, atol=0)
        assert set(live) <= set(exported.state_dict())
    else:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert blob["global_step"] == EVERY


def test_killed_rank_resumes_from_the_sharded_checkpoint_to_the_uninterrupted_state(tiny_training, tmp_path):
    straight = _submit(tmp_path, tiny_training, "straight", "deepspeed")
    assert slurm.wait([straight], timeout=600)[straight] == "COMPLETED", _log(tmp_path, "straight", straight)[-3000:]

    job = _submit(tmp_path, tiny_training, "killed", "deepspeed")
    run = tmp_path / "runs" / "killed"
    latest = run / "checkpoints" / "last.ckpt" / "latest"

    def rank1() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if f"SLURM_JOB_ID={job}".encode() in env and b"SLURM_PROCID=1" in env and b"musicmoe.cli.main" in cmd:
                pids.append(int(proc.name))
        return pids

    import time

    deadline = time.monotonic() + 600
    while not latest.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latest.is_file(), _log(tmp_path, "killed", job)[-3000:]
    for pid in rank1():
        os.kill(pid, signal.SIGKILL)
    state = slurm.wait([job], timeout=300)[job]
    assert state != "COMPLETED", "the job finished before its rank was killed"
    saved, _ = _zero_state(run / "checkpoints" / "last.ckpt")
    assert EVERY <= saved < STEPS

    again = _submit(tmp_path, tiny_training, "killed", "deepspeed")
    assert slurm.wait([again], timeout=600)[again] == "COMPLETED", _log(tmp_path, "killed", again)[-3000:]
    assert f"resuming {run}" in _log(tmp_path, "killed", again)

    # weights, Adam moments and step equal the uninterrupted run's; so do the losses after the resume (the sampler
    # continued at the same batch on both ranks)
    step_a, a = _zero_state(tmp_path / "runs" / "straight" / "checkpoints" / "last.ckpt")
    step_b, b = _zero_state(run / "checkpoints" / "last.ckpt")
    assert step_a == step_b == STEPS
    for pa, pb in zip(a, b):
        for key in ("fp32", "exp_avg", "exp_avg_sq"):
            for ta, tb in zip(pa[key], pb[key]):
                torch.testing.assert_close(ta, tb, rtol=1e-5, atol=1e-6)
    la, lb = _loss_curve(tmp_path / "runs" / "straight"), _loss_curve(run)
    assert sorted(lb) == list(range(1, STEPS + 1))
    for s in range(saved + 1, STEPS + 1):
        assert lb[s] == pytest.approx(la[s], rel=1e-4), s
