"""Shared by tests/training and tests/cli: quick real codecs, token shards and tiny trained runs, made once.

The image codec is the demo RQ-VAE architecture with its codebooks k-means-initialised on the corpus's real
system images (no gradient training: seconds); the audio codec is a small EnCodec whose residual codebooks are
k-means-initialised on the corpus's real synthesized audio.  Both are saved as real codec files and the corpus
is tokenized by the real ``musicmoe.data.tokenize``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TINY_AUDIO = dict(n_filters=4, dimension=16, lstm=0, n_residual_layers=1, codebook_size=64, bandwidth=1.8,
                  ratios=[8, 5, 4, 2])


def make_image_codec(corpus_dir: Path, out: Path) -> Path:
    from musicmoe.codecs.image import ImageCodec
    from musicmoe.codecs.image.config import ImageCodecConfig
    from musicmoe.config import compose
    from musicmoe.data.shards import Corpus

    torch.manual_seed(0)
    cfg = compose(ImageCodecConfig, "image_codec/demo.yaml")
    codec = ImageCodec(cfg)
    images = [ex.image for ex in Corpus(corpus_dir, modalities=("image",)) if ex.image is not None]
    codec.init_codebooks(images)
    codec.save(out)
    return out


def make_audio_codec(corpus_dir: Path, out: Path) -> Path:
    from musicmoe.codecs.audio.codec import AudioCodec, build_model
    from musicmoe.codecs.audio.config import AudioCodecConfig
    from musicmoe.data.shards import Corpus

    torch.manual_seed(0)
    cfg = AudioCodecConfig(**TINY_AUDIO)
    model = build_model(cfg)
    waves = [ex.audio for ex in Corpus(corpus_dir, modalities=("audio",)) if ex.audio is not None]
    seg = cfg.sample_rate
    crops = [w[i: i + seg] for w in waves for i in range(0, max(1, len(w) - seg), seg) if len(w) >= seg]
    batch = torch.from_numpy(np.stack(crops[:16]).astype(np.float32))[:, None]
    model.train()
    with torch.no_grad():
        model(batch)  # the first training-mode quantizer call k-means-initialises the codebooks
    model.eval()
    AudioCodec(model, cfg, {"source": "k-means init (tests)"}).save(out)
    return out


def _once(target: Path, make) -> Path:
    """Build ``target`` with ``make(tmp)`` unless a previous fixture (any test folder) already did."""
    done = target.with_name(target.name + ".done")
    if not done.exists():
        import shutil

        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        make(target)
        done.touch()
    return target


def ensure_codecs(corpus: Path, base: Path) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    return {"image": _once(base / "image_codec.pt", lambda p: make_image_codec(corpus, p)),
            "audio": _once(base / "audio_codec.pt", lambda p: make_audio_codec(corpus, p))}


def ensure_tokens(corpus: Path, codecs: dict[str, Path], base: Path) -> Path:
    from musicmoe.config import load_config
    from musicmoe.data.tokenize import tokenize

    def make(out: Path) -> None:
        cfg = load_config(None, ["tokenize.workers=0"])
        tokenize(corpus, out, cfg, image_codec=codecs["image"], audio_codec=codecs["audio"], progress=False)

    return _once(base / "tokens", make)


RUN_TASKS = ("omr", "amt", "lmx2image", "midi2audio")  # every modality as a source and as a target


def ensure_run(tokens: Path, codecs: dict[str, Path], base: Path, strategy: str = "auto") -> Path:
    """A tiny model trained 2 steps on four tasks (``strategy`` auto or deepspeed); returns its run folder."""
    from musicmoe.config import load_config
    from musicmoe.training.run import train

    def make(run_dir: Path) -> None:
        over = tiny_overrides(tokens, codecs, run_dir.parent, run_dir.name) + [
            "data.tasks.lmx2midi=0", *[f"data.tasks.{t}=1.0" for t in RUN_TASKS], "model.max_src_len=1280",
            "model.max_tgt_len=1280", "trainer.max_steps=2", f"trainer.strategy={strategy}"]
        train(load_config(None, over))

    return _once(base / f"run_{strategy}", make)


def tiny_overrides(tokens: Path, codecs: dict[str, Path], out: Path, name: str = "run") -> list[str]:
    """A tiny multi-task run: small model, short sequences, few steps (extend with your own overrides)."""
    return [
        f"data.tokens={tokens}", "data.batch_size=2", "data.bucket_batches=2",
        "data.tasks.omr=1.0", "data.tasks.lmx2midi=1.0",
        "model.d_model=32", "model.n_heads=2", "model.enc_layers=1", "model.dec_layers=1", "model.d_ff=64",
        "model.subdecoder_dim=16", "model.max_src_len=512", "model.max_tgt_len=512",
        f"image_codec.checkpoint={codecs['image']}", f"audio_codec.checkpoint={codecs['audio']}",
        "optim.lr=1e-3", "optim.warmup_steps=2",
        "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "trainer.log_every_n_steps=1",
        "trainer.progress=none",
        "eval.every_n_steps=0", "eval.max_examples=1", "eval.loss_examples=2", "eval.batch_size=2",
        "eval.max_new_tokens=8", "eval.log_examples=1",
        f"run.out_dir={out}", f"run.name={name}",
    ]


def scalar_steps(tb_dir: Path) -> dict[str, list[int]]:
    """Steps of every scalar tag visible in a TensorBoard folder (purged events excluded)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [e.step for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
