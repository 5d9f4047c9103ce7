"""Training runs on CPU under ``auto`` and DeepSpeed ZeRO-2: run folder, crash/resume, SIGUSR1 requeue."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from musicmoe.config import ConfigError, load_config
from musicmoe.training.run import checkpoint_step, train
from training.fixtures import scalar_steps, tiny_overrides


def _optimizer_state(trainer) -> list[torch.Tensor]:
    opt = trainer.optimizers[0]
    base = getattr(opt, "optimizer", opt)  # DeepSpeed's ZeRO optimizer wraps the torch AdamW
    out = []
    for group in base.param_groups:
        for p in group["params"]:
            st = base.state.get(p, {})
            if "exp_avg" in st:
                out += [st["exp_avg"].detach().float().clone(), st["exp_avg_sq"].detach().float().clone()]
    return out


class Probe(Callback):
    """Records the state at the start, at ``at_step`` and optionally crashes after ``crash_step``."""

    def __init__(self, at_step: int = -1, crash_step: int = -1, signal_step: int = -1):
        self.at_step, self.crash_step, self.signal_step = at_step, crash_step, signal_step
        self.start: dict = {}
        self.snap: dict = {}

    def _state(self, trainer, pl_module):
        return {"step": trainer.global_step, "opt": _optimizer_state(trainer),
                "weights": {k: v.detach().float().clone() for k, v in pl_module.model.state_dict().items()},
                "lr": trainer.optimizers[0].param_groups[0]["lr"]}

    def on_train_start(self, trainer, pl_module):
        self.start = self._state(trainer, pl_module)
        self.start["first_batch"] = trainer.datamodule.sampler.start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.signal_step:  # arrives in the middle of the next step
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            self.snap = self._state(trainer, pl_module)
        if trainer.global_step == self.crash_step:
            raise RuntimeError("simulated crash")


def _same(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert len(a["opt"]) == len(b["opt"]) > 0
    for x, y in zip(a["opt"], b["opt"]):
        torch.testing.assert_close(x, y)
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        torch.testing.assert_close(a["weights"][k], b["weights"][k], msg=k)
    assert a["lr"] == pytest.approx(b["lr"])


@pytest.mark.parametrize("strategy", ["auto", "deepspeed"])
def test_train_crash_and_resume(strategy, tiny_tokens, tiny_codecs, tmp_path):
    base = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, strategy) + [
        f"trainer.strategy={strategy}", "eval.every_n_steps=2", "eval.tasks=[omr]"]
    cfg = load_config(None, base)
    probe = Probe(at_step=2, crash_step=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, [probe])
    run = tmp_path / strategy
    last = run / "checkpoints" / "last.ckpt"
    assert (run / "config.yaml").is_file() and last.exists()
    assert last.is_dir() == (strategy == "deepspeed")  # DeepSpeed writes a checkpoint folder
    assert checkpoint_step(last) == 2
    assert probe.snap["step"] == 2 and probe.start["step"] == 0

    resumed = Probe()
    summary = train(cfg, [resumed])
    assert summary["resumed_from"] == str(last) and summary["global_step"] == 4
    _same(resumed.start, probe.snap)  # same global step, optimizer state, weights and learning rate
    assert probe.start["first_batch"] == 0 and resumed.start["first_batch"] == 2  # the sampler continues too

    steps = scalar_steps(run / "tb" / "version_0")
    assert sorted(steps["train/loss"]) == [1, 2, 3, 4]  # no repeated or skipped steps after the resume
    assert [s for s in steps["eval/omr/loss"] if s > 0] == [2, 4]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] and all(r["omr/loss"] > 0 for r in lines)
    assert checkpoint_step(last) == 4
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]  # one checkpoint, overwritten
    assert list((run / "tb").iterdir()) == [run / "tb" / "version_0"]

    again = train(cfg)  # already finished: nothing to do
    assert again == {"run_dir": str(run), "global_step": 4, "resumed_from": str(last), "trained": False}


def test_sigusr1_saves_and_stops(tiny_tokens, tiny_codecs, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cfg = load_config(None, tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "sig") + [
        "trainer.checkpoint_every_n_steps=100", "trainer.max_steps=3"])
    probe = Probe(signal_step=1)
    summary = train(cfg, [probe])
    last = tmp_path / "sig" / "checkpoints" / "last.ckpt"
    assert summary["global_step"] == 2 and checkpoint_step(last) == 2  # saved at the step boundary, then stopped
    assert signal.getsignal(signal.SIGUSR1) is not None
    changed = load_config(None, tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "sig") + [
        "trainer.checkpoint_every_n_steps=100", "trainer.max_steps=3", "model.d_ff=96", "optim.lr=5e-4"])
    with pytest.raises(ConfigError, match=r"different config \(model.d_ff: 64 -> 96; optim.lr: 0.001 -> 0.0005\)"):
        train(changed)  # the checkpoint belongs to another experiment: refused, naming the keys
    summary = train(cfg)  # same config, longer max_steps would be fine too
    assert summary["global_step"] == 3 and summary["resumed_from"] == str(last)
    assert sorted(scalar_steps(tmp_path / "sig" / "tb" / "version_0")["train/loss"]) == [1, 2, 3]
    assert [p.name for p in (tmp_path / "sig" / "checkpoints").iterdir()] == ["last.ckpt"]


def test_resume_bookkeeping(tmp_path):
    from musicmoe.training.run import RunPaths, find_resume_checkpoint, truncate_metrics

    paths = RunPaths(tmp_path / "run")
    assert find_resume_checkpoint(paths) == (None, 0)  # a first run starts cleanly
    paths.checkpoints.mkdir(parents=True)
    paths.last.write_bytes(b"half-written")
    with pytest.raises(ValueError, match="cannot be read.*remove them"):
        find_resume_checkpoint(paths)
    torch.save({"global_step": 7}, paths.checkpoints / "hpc_ckpt_1.ckpt")
    assert find_resume_checkpoint(paths) == (paths.checkpoints / "hpc_ckpt_1.ckpt", 7)
    paths.metrics.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (5, 10, 15)) + "{broken\n")
    assert truncate_metrics(paths.metrics, 10) == 2
    assert [json.loads(x)["step"] for x in paths.metrics.read_text().splitlines()] == [5, 10]
