"""Training the image codec on the real tiny corpus: it learns, skips corrupt images, resumes, has a CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from musicmoe.cli.main import main
from musicmoe.codecs.image import ImageCodec
from musicmoe.codecs.image.data import Collate, Skipped, SystemImages, split_train_val
from musicmoe.codecs.image.train import ImageCodecModule, ImageCodecTrainError, train_image_codec
from musicmoe.config import load_config
from musicmoe.data.shards import Corpus

HELD = 3  # held-out systems: the second system of each of the three chorales


@pytest.fixture(scope="module")
def codec_corpus(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus with one system of each chorale moved to the 'valid' split (copied; manifest rewritten)."""
    out = tmp_path_factory.mktemp("codec_corpus") / "corpus"
    shutil.copytree(tiny_corpus, out)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for rec in records:
        if rec["system"] == 1:
            rec["split"] = "valid"
    assert sum(r["split"] == "valid" for r in records) == HELD
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def tiny_overrides(corpus: Path, out: Path, name: str, steps: int) -> list[str]:
    c = "image_codec."
    return [
        f"run.out_dir={out}", f"run.name={name}", f"{c}train.corpus={corpus}",
        f"{c}codebook_size=64", f"{c}base_channels=16", f"{c}max_channels=64", f"{c}latent_dim=32",
        f"{c}res_blocks=1", f"{c}ema_decay=0.9", f"{c}dead_code_threshold=1.0",
        f"{c}train.crop_width=64", f"{c}train.batch_size=4", f"{c}train.max_steps={steps}", f"{c}train.lr=2e-3",
        f"{c}train.loss=l2", f"{c}train.val_images={HELD}", f"{c}train.val_every=200", f"{c}train.log_every=50",
        f"{c}train.ckpt_every=100", f"{c}train.num_workers=0", f"{c}train.threads=1",
    ]


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) / 255.0 - b.astype(np.float64) / 255.0) ** 2))


def train_and_measure(corpus_dir: Path, out: Path, name: str, steps: int,
                      extra: tuple[str, ...] = ()) -> tuple[dict, dict, list[np.ndarray]]:
    """Train a tiny codec; held-out MSE of the initial model, an all-white guess and the trained codec."""
    cfg = load_config(None, tiny_overrides(corpus_dir, out, name, steps) + list(extra))
    corpus = Corpus(corpus_dir, modalities=("image",))
    train_idx, val_idx, source = split_train_val(corpus, "valid", HELD)
    assert source == "valid" and len(val_idx) == HELD
    held = [corpus[i].image for i in val_idx]
    train_images = [corpus[i].image for i in train_idx]
    corpus.close()
    assert not set(train_idx) & set(val_idx)

    # the starting point: same seed and initial weights as the run, codebooks k-means-initialised on training images
    L.seed_everything(cfg.run.seed, verbose=False)
    initial = ImageCodecModule(dataclasses.asdict(cfg.image_codec)).codec
    initial.init_codebooks(train_images)
    report = train_image_codec(cfg)
    trained = ImageCodec.load(out / name / "image_codec.pt")
    assert trained.content_hash == report["content_hash"] and report["global_step"] == steps
    errors = {
        "initial": float(np.mean([mse(initial.reconstruct(img), img) for img in held])),
        "white": float(np.mean([mse(np.full_like(img, 255), img) for img in held])),
        "trained": float(np.mean([mse(trained.reconstruct(img), img) for img in held])),
    }
    print(f"held-out MSE after {steps} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in errors.items())
          + f"; PSNR {-10 * math.log10(errors['initial']):.2f} -> {-10 * math.log10(errors['trained']):.2f} dB"
          + f"; {report['steps_per_second']} steps/s")
    return errors, report, held


def test_training_lowers_reconstruction_error_on_held_systems(codec_corpus, tmp_path):
    errors, report, held = train_and_measure(codec_corpus, tmp_path, "learn", 300)
    run = tmp_path / "learn"
    assert report["val_systems"] == HELD
    assert errors["trained"] < 0.65 * errors["initial"]  # measured here: 0.46
    assert errors["trained"] < 0.7 * errors["white"]  # it draws ink, not just a white page (measured: 0.39)
    trained = ImageCodec.load(run / "image_codec.pt")
    # the logged validation PSNR is the PSNR over all held pixels (float vs uint8 output: within 0.2 dB)
    pooled = sum(np.sum((trained.reconstruct(i) / 255.0 - i / 255.0) ** 2) for i in held) / sum(i.size for i in held)
    assert report["val_psnr"] == pytest.approx(-10 * math.log10(pooled), abs=0.2)

    # the Lightning checkpoint loads as a codec too, with the same weights
    from_ckpt = ImageCodec.load(run / "checkpoints" / "last.ckpt")
    assert from_ckpt.content_hash == trained.content_hash
    assert np.array_equal(from_ckpt.encode(held[0]), trained.encode(held[0]))

    # TensorBoard got the scalars, codebook usage and reconstruction images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/psnr", "val/psnr", "val/mse", "codes/perplexity_q0", "codes/dead_frac_q3"} <= scalars
    assert "val/reconstructions" in events.Tags()["images"]
    perplexity = events.Scalars("codes/perplexity_q0")[-1].value
    assert 1.0 < perplexity <= 64.0
    assert (run / "val_reconstructions.png").is_file() and (run / "config.yaml").is_file()
    assert json.loads((run / "train_report.json").read_text())["content_hash"] == report["content_hash"]


def test_sigmoid_output_trained_with_bce_learns(codec_corpus, tmp_path):
    """The binary cross-entropy loss on logits (score images are nearly binary) trains a sigmoid-output codec whose
    reconstructions are ink in [0, 1] and beat both the initial model and a white page on held systems."""
    errors, _, held = train_and_measure(codec_corpus, tmp_path, "bce", 300,
                                        ("image_codec.output=sigmoid", "image_codec.train.loss=bce"))
    assert errors["trained"] < 0.65 * errors["initial"]
    assert errors["trained"] < 0.7 * errors["white"]
    codec = ImageCodec.load(tmp_path / "bce" / "image_codec.pt")
    assert codec.cfg.output == "sigmoid"
    with torch.no_grad():
        ink = codec.decode_ink(torch.from_numpy(codec.encode(held[0]))[None])
    assert float(ink.min()) >= 0.0 and float(ink.max()) <= 1.0


def test_learning_rate_schedule(tiny_corpus, tmp_path):
    """Warm-up then cosine decay to min_lr_ratio x the peak at max_steps, logged as train/lr."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, [*tiny_overrides(tiny_corpus, tmp_path, "lr", 20), "image_codec.train.log_every=1",
                             "image_codec.train.schedule=cosine", "image_codec.train.warmup_steps=5",
                             "image_codec.train.min_lr_ratio=0.1"])
    train_image_codec(cfg)
    lr = {e.step: e.value for e in EventAccumulator(str(tmp_path / "lr" / "tb")).Reload().Scalars("train/lr")}
    peak = 2e-3
    assert lr[0] == pytest.approx(peak / 5) and lr[4] == pytest.approx(peak)
    assert lr[12] == pytest.approx(peak * (0.1 + 0.45 * (1 + math.cos(math.pi * 7 / 15))))
    assert lr[19] == pytest.approx(peak * (0.1 + 0.45 * (1 + math.cos(math.pi * 14 / 15))))
    with pytest.raises(ValueError, match="schedule"):
        load_config(None, ["image_codec.train.schedule=step"])


@pytest.mark.slow
def test_longer_training_halves_reconstruction_error(codec_corpus, tmp_path):
    errors, _, _ = train_and_measure(codec_corpus, tmp_path, "learn_long", 700)
    assert errors["trained"] < 0.5 * errors["initial"]
    assert errors["trained"] < 0.45 * errors["white"]


def corrupt_first_image(src: Path, dst: Path) -> str:
    """Copy a corpus and overwrite the PNG bytes of its first system with garbage; returns that key."""
    shutil.copytree(src, dst)
    record = json.loads((dst / "manifest.jsonl").read_text().splitlines()[0])
    offset, size = record["members"]["png"]
    with open(dst / "shards" / record["shard"], "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)))
    return record["key"]


def test_corrupt_image_is_skipped_and_reported(tiny_corpus, tmp_path):
    bad_key = corrupt_first_image(tiny_corpus, tmp_path / "corpus")
    corpus = Corpus(tmp_path / "corpus", modalities=("image",))
    items = [SystemImages(corpus, range(len(corpus)), crop_width=64)[i] for i in range(len(corpus))]
    skipped = [it for it in items if isinstance(it, Skipped)]
    assert [s.key for s in skipped] == [bad_key] and bad_key in skipped[0].error
    corpus.close()
    batch = Collate(16)(items)
    assert batch["skipped"][0][0] == bad_key and batch["ink"].shape[0] == len(corpus) - 1

    # a short training run reads every training system once within its first steps, skips and reports the bad one
    cfg = load_config(None, tiny_overrides(tmp_path / "corpus", tmp_path, "skip", 4))
    report = train_image_codec(cfg)
    assert report["skipped_images"]["count"] == 1 and bad_key in report["skipped_images"]["keys"]
    assert report["skipped_images"]["reads"] >= 1
    assert (tmp_path / "skip" / "image_codec.pt").is_file()


def test_resume_and_cli(tiny_corpus, tmp_path, capsys):
    args = ["codec", "train", "image", "--config", "image_codec/demo.yaml",
            *tiny_overrides(tiny_corpus, tmp_path, "resume", 3)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert '"global_step": 3' in out
    run = tmp_path / "resume"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    first_hash = ImageCodec.load(run / "image_codec.pt").content_hash

    # an existing run is not silently overwritten
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    cfg = load_config(None, tiny_overrides(tiny_corpus, tmp_path, "resume", 3))
    with pytest.raises(ImageCodecTrainError, match="--resume"):
        train_image_codec(cfg)

    # --resume continues from step 3 to 5 (only 2 new steps), with the demo section file's settings overridden
    args[-len(tiny_overrides(tiny_corpus, tmp_path, "resume", 3)):] = tiny_overrides(tiny_corpus, tmp_path, "resume", 5)
    assert main([*args, "--resume"]) == 0
    report = json.loads((run / "train_report.json").read_text())
    assert report["global_step"] == 5 and report["steps_this_run"] == 2
    assert report["content_hash"] != first_hash
    saved = (run / "config.yaml").read_text()
    assert "codebook_size: 64" in saved and "max_steps: 5" in saved


def test_cli_reports_config_errors(tmp_path, capsys):
    rc = main(["codec", "train", "image", "--config", "image_codec/demo.yaml", "image_codec.train.crop_width=100",
               f"run.out_dir={tmp_path}"])
    assert rc == 2 and "crop_width" in capsys.readouterr().err
    rc = main(["codec", "train", "image", "--config", "image_codec/demo.yaml", f"run.out_dir={tmp_path}",
               f"image_codec.train.corpus={tmp_path / 'nothing'}"])
    assert rc == 2 and "not a corpus folder" in capsys.readouterr().err
    # a section file outside configs/ is recognised by its keys and applied to image_codec
    own = tmp_path / "my_codec.yaml"
    own.write_text("codebook_size: 32\ntrain:\n  crop_width: 100\n")
    rc = main(["codec", "train", "image", "--config", str(own), f"run.out_dir={tmp_path}"])
    assert rc == 2 and "crop_width" in capsys.readouterr().err


def test_cli_audio_branch_dispatches_to_the_audio_trainer(tmp_path, capsys):
    rc = main(["codec", "train", "audio", f"run.out_dir={tmp_path}", f"audio_codec.train.corpus={tmp_path / 'none'}"])
    assert rc == 2 and "not a corpus folder" in capsys.readouterr().err
