"""The LightningModule's optimiser/scheduler, config validation and strategy construction."""

from __future__ import annotations

import pytest
import torch

from musicmoe.config import ConfigError, load_config
from musicmoe.models.vocab import VocabSpec
from musicmoe.training.callbacks import flat_hparams
from musicmoe.training.config import TrainerConfig
from musicmoe.training.module import TranslationModule
from musicmoe.training.run import config_dict
from musicmoe.training.strategies import CPUDeepSpeedStrategy, build_strategy, deepspeed_config, resolve_precision


def test_one_optimizer_one_scheduler_with_decay_groups():
    cfg = load_config(None, ["data.tasks.omr=1", "optim.weight_decay=0.05", "optim.lr=1e-3", "trainer.max_steps=50",
                             "optim.warmup_steps=5", "model.d_model=32", "model.n_heads=2", "model.d_ff=64"])
    vocab = VocabSpec.build(lmx_vocab_size=20, midi_vocab_size=30, image_codebook_size=16, audio_codebook_size=16)
    module = TranslationModule(config_dict(cfg), vocab.to_dict(), codecs={}, tasks=["omr"])
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and conf["lr_scheduler"]["interval"] == "step"
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and any(p.ndim == 1 for p in no_decay["params"])
    n_params = sum(1 for p in module.model.parameters() if p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) == n_params
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 5)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert module.hparams["tasks"] == ["omr"] and module.hparams["config"]["optim"]["lr"] == 1e-3


def test_trainer_config_validation():
    with pytest.raises(ConfigError, match="trainer.strategy must be one of"):
        load_config(None, ["trainer.strategy=fsdp"])
    with pytest.raises(ConfigError, match="must not set the batch size or an optimizer"):
        load_config(None, ["+trainer.deepspeed_config.optimizer.type=Adam"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(None, ["optim.schedule=step"])
    with pytest.raises(ConfigError, match="eval.decoding"):
        load_config(None, ["eval.decoding=sample"])
    assert load_config(None, ["trainer.strategy=deepspeed_stage_2"]).trainer.strategy == "deepspeed"


def test_cpu_strategies():
    ds = build_strategy(TrainerConfig(strategy="deepspeed", accelerator="cpu"), grad_clip=0.5)
    assert isinstance(ds, CPUDeepSpeedStrategy)
    assert ds.config["zero_optimization"]["stage"] == 2 and ds.config["gradient_clipping"] == 0.5
    assert "optimizer" not in ds.config and "scheduler" not in ds.config
    assert ds.process_group_backend == "gloo" and ds.parallel_devices == [torch.device("cpu", 0)]
    merged = deepspeed_config(TrainerConfig(strategy="deepspeed", deepspeed_stage=1,
                                            deepspeed_config={"zero_optimization": {"reduce_bucket_size": 7}}), 1.0)
    assert merged["zero_optimization"]["stage"] == 1 and merged["zero_optimization"]["reduce_bucket_size"] == 7
    assert build_strategy(TrainerConfig(strategy="ddp", accelerator="cpu")).process_group_backend == "gloo"
    assert build_strategy(TrainerConfig()) == "auto"
    if not torch.cuda.is_available():
        assert resolve_precision(TrainerConfig()) == "32-true"
    two = build_strategy(TrainerConfig(strategy="deepspeed", accelerator="cpu", devices=2))  # one process per rank
    assert two.parallel_devices == [torch.device("cpu", 0), torch.device("cpu", 1)]



def test_flat_hparams():
    flat = flat_hparams({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"})
    assert flat == {"a/b": 1, "a/c": "1,2", "d": "none", "e": "x"}


def test_progress_modes():
    from lightning.pytorch.callbacks import RichProgressBar

    from musicmoe.training.callbacks import PlainProgress
    from musicmoe.training.run import _progress_callbacks

    def make(mode):
        return _progress_callbacks(load_config(None, [f"trainer.progress={mode}", "trainer.progress_every=7"]))

    (rich,), enabled = make("rich")
    assert isinstance(rich, RichProgressBar) and enabled
    (plain,), enabled = make("plain")
    assert isinstance(plain, PlainProgress) and plain.every == 7 and not enabled
    assert make("none") == ([], False)
    (auto,), _ = make("auto")  # pytest captures stderr: not a terminal, so the plain low-rate lines
    assert isinstance(auto, PlainProgress)


def _two_task_batch(vocab):
    from musicmoe.data.tasks import get_task
    from musicmoe.models.batch import collate

    gen = torch.Generator().manual_seed(0)
    omr, amt = get_task("omr"), get_task("amt")
    examples = [
        {"src": torch.randint(0, 16, (4, 10), generator=gen), "src_modality": "image",
         "tgt": torch.randint(0, 20, (30,), generator=gen), "tgt_modality": "lmx", "task": omr.id},
        {"src": torch.randint(0, 16, (4, 6), generator=gen), "src_modality": "audio",
         "tgt": torch.randint(0, 30, (5,), generator=gen), "tgt_modality": "midi", "task": amt.id},
    ]
    return collate(examples, vocab), omr.id, amt.id


@pytest.mark.parametrize("weights", [{}, {"omr": 3.0}])
def test_task_normalized_loss(weights):
    vocab = VocabSpec.build(lmx_vocab_size=20, midi_vocab_size=30, image_codebook_size=16, audio_codebook_size=16)
    over = ["data.tasks.omr=1", "data.tasks.amt=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64"]
    over += [f"optim.loss_weights.{k}={v}" for k, v in weights.items()]
    module = TranslationModule(config_dict(load_config(None, over)), vocab.to_dict(), codecs={}, tasks=["omr", "amt"])
    batch, omr, amt = _two_task_batch(vocab)
    out = module.model(batch)
    w = weights.get("omr", 1.0)
    expected = (w * out.loss_per_task[omr] + out.loss_per_task[amt]) / (w + 1.0)
    assert torch.allclose(module.loss(out), expected)
    # the token mean is dominated by the 30-token OMR row; the task mean is not
    assert torch.allclose(out.ce_loss, (out.loss_per_task[omr] * 31 + out.loss_per_task[amt] * 6) / 37)
    token = TranslationModule(config_dict(load_config(None, over + ["optim.loss_norm=token"])), vocab.to_dict(),
                              codecs={}, tasks=["omr", "amt"])
    assert torch.equal(token.loss(out), out.loss)


def test_loss_config_is_validated():
    with pytest.raises(ConfigError, match="loss_norm"):
        load_config(None, ["optim.loss_norm=tokens"])
    with pytest.raises(ConfigError, match="unknown task 'ocr'"):
        load_config(None, ["optim.loss_weights.ocr=2"])
