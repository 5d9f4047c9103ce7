"""A model that must read its input: OMR of random melodies it has never seen.

200 random one-voice melodies (music21 streams written as MusicXML) go through the real pipeline: the corpus
builder engraves them with verovio, tokenization keeps LMX and MIDI, a tiny translator reads the score images as
pixels and learns OMR for a few hundred CPU steps. On the held-out test melodies its teacher-forced loss must be
clearly lower with the true images than with images shuffled across examples (the source-reliance gap), and its
greedy SER lower than the shuffled-source SER. A change that stops the model reading its source (a masking bug,
lost positions, features not reaching the encoder) fails here.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from musicmoe.cli.main import main

PITCHES = ["C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5", "D5", "E5", "F5", "G5"]


def write_melodies(out: Path, n: int, seed: int = 0) -> None:
    """``n`` random 6-measure melodies in 4/4 (quarters and halves, C major) as MusicXML files."""
    from music21 import meter, note, stream

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        part = stream.Part()
        part.append(meter.TimeSignature("4/4"))
        for _ in range(6):
            left = 4.0
            while left > 0:
                dur = rng.choice([1.0, 1.0, 2.0]) if left >= 2 else 1.0
                part.append(note.Note(rng.choice(PITCHES), quarterLength=dur))
                left -= dur
        score = stream.Score([part])
        score.write("musicxml", fp=str(out / f"melody{k:03d}.musicxml"))


@pytest.mark.slow
def test_omr_reads_held_out_melodies(tmp_path):
    from musicmoe.cli.eval import evaluate_checkpoint
    from musicmoe.config import load_config
    from musicmoe.training.run import train

    write_melodies(tmp_path / "src", 200)
    corpus, tokens = tmp_path / "corpus", tmp_path / "tokens"
    assert main(["data", "build", "--source", str(tmp_path / "src"), "--out", str(corpus), "--workers", "2",
                 "--quiet"]) == 0
    assert main(["data", "tokenize", str(corpus), "--out", str(tokens), "--no-progress"]) == 0
    cfg = load_config(None, [
        f"data.tokens={tokens}", "data.tasks.omr=1.0", "data.batch_size=16", "data.bucket_batches=4",
        "model.d_model=64", "model.n_heads=2", "model.enc_layers=2", "model.dec_layers=2", "model.d_ff=128",
        "model.image_input=pixels", "model.stem_channels=[16,32,64]", "model.dropout=0.1",
        "model.max_src_len=512", "model.max_tgt_len=256",
        "optim.lr=3e-3", "optim.warmup_steps=30", "optim.weight_decay=0.01",
        "trainer.max_steps=500", "trainer.checkpoint_every_n_steps=1000", "trainer.progress=none",
        "eval.every_n_steps=0", f"run.out_dir={tmp_path}", "run.name=reader",
    ])
    result = train(cfg)
    record = evaluate_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.ckpt", "test", "omr",
                                 str(tokens), out=tmp_path / "eval", batch_size=8)
    assert record["examples"] >= 6, record
    metrics = record["metrics"]
    gap, ser, ser_shuffled = metrics["omr/source_gap"], metrics["omr/ser"], metrics["omr/ser_shuffled"]
    assert gap > 0.3, metrics  # nats per LMX token: the true image explains the target better
    assert ser < ser_shuffled, metrics
