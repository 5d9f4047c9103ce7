"""Audio codec training on the tiny corpus: a short CPU run lowers the reconstruction error; resume; corrupt audio."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from musicmoe.codecs.audio import AudioCodec
from musicmoe.codecs.audio.train import AudioCodecTrainError, train_audio_codec
from musicmoe.config import load_config
from musicmoe.data.shards import SHARD_DIR, Corpus

TINY = [
    "audio_codec.n_filters=4", "audio_codec.dimension=32", "audio_codec.lstm=0", "audio_codec.kmeans_iters=10",
    "audio_codec.dead_code_threshold=0.5", "audio_codec.codebook_decay=0.95",
    "audio_codec.train.batch_size=2", "audio_codec.train.segment_seconds=0.25", "audio_codec.train.lr=3e-3",
    "audio_codec.train.val_examples=2", "audio_codec.train.num_workers=0", "audio_codec.train.threads=1",
    "audio_codec.train.accelerator=cpu", "audio_codec.train.log_every=10",
]


def _cfg(tiny_corpus, tmp_path, *extra):
    return load_config(None, TINY + [f"corpus.out={tiny_corpus}", f"run.out_dir={tmp_path}", "run.name=ac", *extra])


def test_training_lowers_reconstruction_error(tiny_corpus, tmp_path):
    cfg = _cfg(tiny_corpus, tmp_path, "audio_codec.train.max_steps=150", "audio_codec.train.quantizer_warmup_steps=40",
               "audio_codec.train.val_every=75", "audio_codec.train.ckpt_every=75")
    report = train_audio_codec(cfg)
    before, after = report["val_before"], report["val_after"]
    assert report["global_step"] == 150 and report["skipped_audio"]["count"] == 0
    # measurably better spectra: mel loss down by a fifth, log-spectral distance down by 1 dB or more
    assert after["mel"] < 0.8 * before["mel"], (before, after)
    assert after["spectral_distance_db"] < before["spectral_distance_db"] - 1.0, (before, after)

    run = tmp_path / "ac"
    assert json.loads((run / "train_report.json").read_text())["content_hash"] == report["content_hash"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    codec = AudioCodec.load(report["codec"])
    assert codec.content_hash == report["content_hash"] and codec.info["global_step"] == 150
    wave = Corpus(tiny_corpus, modalities=("audio",))[0].audio
    codes = codec.encode(wave)
    assert codes.shape[0] == 4
    assert all(len(np.unique(row)) > 1 for row in codes)  # the codebooks are in use, not collapsed


def test_resume_continues_the_run_and_reports_corrupt_audio(tiny_corpus, tmp_path):
    corpus_dir = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus_dir)
    first_key = Corpus(corpus_dir).records[0]["key"]  # a validation crop reads it first
    rec = Corpus(corpus_dir).records[0]
    start, size = rec["members"]["flac"]
    shard = corpus_dir / SHARD_DIR / rec["shard"]
    data = bytearray(shard.read_bytes())
    data[start:start + size] = b"\x00" * size
    shard.write_bytes(bytes(data))
    tiny_corpus = corpus_dir
    cfg = _cfg(tiny_corpus, tmp_path, "audio_codec.train.max_steps=6", "audio_codec.train.quantizer_warmup_steps=2",
               "audio_codec.train.val_every=3", "audio_codec.train.ckpt_every=3",
               "audio_codec.train.segment_seconds=0.1")
    first = train_audio_codec(cfg)
    assert first["global_step"] == 6
    assert first["skipped_audio"] == {"count": 1, "keys": [first_key]}
    with pytest.raises(AudioCodecTrainError, match="--resume"):
        train_audio_codec(cfg)
    longer = _cfg(tiny_corpus, tmp_path, "audio_codec.train.max_steps=9", "audio_codec.train.quantizer_warmup_steps=2",
                  "audio_codec.train.val_every=3", "audio_codec.train.ckpt_every=3",
                  "audio_codec.train.segment_seconds=0.1")
    second = train_audio_codec(longer, resume=True)
    assert second["global_step"] == 9 and second["steps_this_run"] == 3
    assert second["val_before"] == first["val_before"]  # the run's starting point is kept


def test_learning_rate_schedule(tiny_corpus, tmp_path):
    """Warm-up then a linear decay to min_lr_ratio x the peak at max_steps, logged as train/lr; a bad schedule name
    is refused with its key."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tiny_corpus, tmp_path, "audio_codec.train.max_steps=12", "audio_codec.train.log_every=1",
               "audio_codec.train.val_every=12", "audio_codec.train.ckpt_every=12",
               "audio_codec.train.schedule=linear", "audio_codec.train.warmup_steps=4",
               "audio_codec.train.min_lr_ratio=0.2")
    train_audio_codec(cfg)
    events = EventAccumulator(str(tmp_path / "ac" / "tb")).Reload()
    lr = {e.step: e.value for e in events.Scalars("train/lr")}
    peak = 3e-3
    assert lr[0] == pytest.approx(peak / 4) and lr[3] == pytest.approx(peak)
    assert lr[8] == pytest.approx(peak * (1 - 0.8 * 4 / 8)) and lr[11] == pytest.approx(peak * (1 - 0.8 * 7 / 8))
    with pytest.raises(ValueError, match="audio_codec.train.schedule"):
        load_config(None, ["audio_codec.train.schedule=step"])
