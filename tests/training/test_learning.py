"""Learning is real: a small model memorises real OMR systems (SER < 5 %) and every task's loss falls.

Both train on real data: image codes of real engraved Bach chorale systems (made by a real, k-means-initialised
image codec) and their real LMX / MIDI / audio codes.  The OMR run takes minutes on 2 cores, hence ``slow``; the
multi-task one seconds.  OMR trains 600 steps: at 400, with one CPU thread, one near-tied token made greedy
decoding go astray (SER 22 % at a loss of 0.0025), so the margin now holds for 1 or 2 threads.
"""

from __future__ import annotations

import json

import pytest

from musicmoe.cli.run import loss_trends
from musicmoe.config import load_config
from musicmoe.data.tasks import get_task
from musicmoe.training.run import train
from training.fixtures import tiny_overrides


@pytest.mark.slow
def test_omr_overfits_a_handful_of_real_systems(tiny_tokens, tiny_codecs, tmp_path):
    over = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "omr") + [
        "data.tasks.lmx2midi=0", "data.max_items=3", "data.batch_size=3", "data.bucket_batches=1",
        "model.d_model=128", "model.n_heads=4", "model.enc_layers=2", "model.dec_layers=2", "model.d_ff=256",
        "model.dropout=0.0", "optim.lr=3e-3", "optim.warmup_steps=20", "optim.weight_decay=0.0",
        "trainer.max_steps=600", "trainer.checkpoint_every_n_steps=1000", "trainer.log_every_n_steps=5",
        "eval.every_n_steps=600", "eval.split=train", "eval.max_examples=3", "eval.loss_examples=3",
        "eval.max_new_tokens=0", "eval.batch_size=3",
    ]
    train(load_config(None, over))
    last = json.loads((tmp_path / "omr" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 600
    assert last["omr/ser"] < 5.0, last  # greedy decoding reproduces the memorised systems
    first, final = loss_trends(tmp_path / "omr" / "tb" / "version_0")["omr"]
    assert final < 0.05 * first


def test_loss_falls_for_every_task(tiny_tokens, tiny_codecs, tmp_path):
    tasks = ("omr", "amt", "lmx2midi", "midi2lmx", "lmx2image", "midi2audio")
    over = tiny_overrides(tiny_tokens, tiny_codecs, tmp_path, "multi") + [
        *[f"data.tasks.{t}=1.0" for t in tasks], "data.max_items=2", "data.batch_size=6", "data.bucket_batches=1",
        "model.d_model=64", "model.n_heads=4", "model.d_ff=128", "model.dropout=0.0",
        "model.max_src_len=1280", "model.max_tgt_len=1280",
        "optim.lr=3e-3", "optim.warmup_steps=5", "trainer.max_steps=40", "trainer.checkpoint_every_n_steps=1000",
    ]
    train(load_config(None, over))
    trends = loss_trends(tmp_path / "multi" / "tb" / "version_0")
    assert set(trends) == set(tasks)
    for task, (first, last) in trends.items():
        # more than one nat per target token in 40 steps; image/audio losses are per code (mean of 4 codebooks)
        drop = 0.25 if get_task(task).target in ("image", "audio") else 1.0
        assert last < first - drop, trends
