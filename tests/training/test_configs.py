"""Every shipped config validates, and every experiment runs one training step when shrunk to CPU size."""

from __future__ import annotations

import dataclasses

import pytest

from musicmoe.config import CONFIG_ROOT, compose, load_config
from musicmoe.data.config import DataConfig
from musicmoe.data.tasks import get_task
from musicmoe.models.config import ModelConfig
from musicmoe.training.config import EvalConfig, OptimConfig, TrainerConfig
from musicmoe.training.run import train
from training.fixtures import scalar_steps

EXPERIMENTS = sorted(p.stem for p in (CONFIG_ROOT / "experiment").glob("*.yaml"))
GROUPS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "trainer": TrainerConfig,
          "eval": EvalConfig}


def test_expected_experiments_exist():
    assert {"demo", "paper"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_files_validate(group):
    files = sorted((CONFIG_ROOT / group).glob("*.yaml"))
    assert files, f"configs/{group}/ is empty"
    for path in files:
        cfg = compose(GROUPS[group], path)
        assert isinstance(cfg, GROUPS[group])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    cfg = load_config(f"experiment/{name}.yaml")
    assert [get_task(t) for t, w in cfg.data.tasks.items() if w > 0]


def test_paper_experiment_is_paper_scale():
    cfg = load_config("experiment/paper.yaml")
    m = cfg.model
    assert (m.enc_layers, m.dec_layers, m.d_model, m.n_heads, m.d_ff) == (12, 12, 1024, 16, 4096)
    assert dataclasses.asdict(m) == dataclasses.asdict(ModelConfig.paper())
    assert cfg.trainer.strategy == "deepspeed" and cfg.trainer.deepspeed_stage == 2
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"


def shrink(tokens, codecs, out, name) -> list[str]:
    """Overrides that make any experiment a one-step CPU run on the tiny tokens (model shape kept in kind)."""
    return [
        f"data.tokens={tokens}", "data.batch_size=2", "data.bucket_batches=1", "data.num_workers=0",
        "model.d_model=32", "model.n_heads=2", "model.enc_layers=1", "model.dec_layers=1", "model.d_ff=64",
        "model.subdecoder_layers=1", "model.subdecoder_dim=16", "model.subdecoder_heads=2",
        "model.max_src_len=1280", "model.max_tgt_len=1280",
        f"image_codec.checkpoint={codecs['image']}", f"audio_codec.checkpoint={codecs['audio']}",
        "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=1", "trainer.num_nodes=1",
        "trainer.max_steps=1", "trainer.progress=none", "trainer.log_every_n_steps=1",
        "eval.every_n_steps=0", f"run.out_dir={out}", f"run.name={name}",
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_shrunk_step(name, tiny_tokens, tiny_codecs, tmp_path):
    over = shrink(tiny_tokens, tiny_codecs, tmp_path, name)
    if load_config(f"experiment/{name}.yaml").data.sources:  # a corpus mix: two sources, both the tiny tokens
        over.append(f"data.sources=[{{path: '{tiny_tokens}', name: a}}, {{path: '{tiny_tokens}', name: b}}]")
    cfg = load_config(f"experiment/{name}.yaml", over)
    summary = train(cfg)
    assert summary["global_step"] == 1
    assert (tmp_path / name / "checkpoints" / "last.ckpt").exists()
    assert scalar_steps(tmp_path / name / "tb" / "version_0")["train/loss"] == [1]


def test_eval_task_decoding_is_validated_and_applied():
    from musicmoe.config import ConfigError

    demo = load_config("experiment/demo.yaml").eval
    assert demo.decoding_of("omr") == "ctc" and demo.decoding_of("amt") == "greedy"  # the demo reads OMR by CTC
    for bad, message in (("eval.task_decoding.omrr=ctc", "unknown task 'omrr'"),
                         ("eval.task_decoding.omr=viterbi", "eval.task_decoding.omr must be one of"),
                         ("eval.ctc_weight=2", "eval.ctc_weight must be in")):
        with pytest.raises((ConfigError, ValueError), match=message):
            load_config("experiment/demo.yaml", [bad])
