"""``musicmoe translate``: every task on real files, batch mode, bad inputs, malformed model output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from musicmoe.cli.main import main
from musicmoe.cli.translate import translate_files
from musicmoe.data.shards import Corpus
from musicmoe.data.tasks import TASK_NAMES, get_task

SUFFIX = {"image": ".png", "audio": ".wav", "midi": ".mid", "lmx": ".lmx"}


@pytest.fixture(scope="module")
def inputs(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """One real file per modality, written from the tiny corpus's first system (audio: its first second)."""
    out = tmp_path_factory.mktemp("inputs")
    ex = Corpus(tiny_corpus)[0]
    Image.fromarray(ex.image).save(out / "sys.png")
    sf.write(out / "sys.wav", ex.audio[: ex.sample_rate], ex.sample_rate)
    ex.midi.write(str(out / "sys.mid"))
    (out / "sys.lmx").write_text(" ".join(ex.lmx))
    return {m: out / f"sys{s}" for m, s in SUFFIX.items()}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_translate_runs_every_task(task, tiny_run, inputs, tmp_path):
    t = get_task(task)
    out = tmp_path / f"out_{task}"
    result = translate_files(tiny_run / "checkpoints" / "last.ckpt", task, [inputs[t.source]], out, max_len=6)
    assert len(result["written"]) == 1 and not result["failed"]
    written = Path(result["written"][0])
    assert written.is_file() and written.stat().st_size > 0
    assert written.suffix == {"image": ".png", "audio": ".wav", "midi": ".mid", "lmx": ".musicxml"}[t.target]
    if t.target == "lmx":
        assert written.read_text().lstrip().startswith("<?xml")


def test_translate_cli_beam_and_top_p(tiny_run, inputs, tmp_path, capsys):
    for decoding in ("beam", "top_p"):
        out = tmp_path / f"omr_{decoding}.musicxml"
        rc = main(["translate", "--ckpt", str(tiny_run), "--task", "omr", str(inputs["image"]), "-o", str(out),
                   "--decoding", decoding, "--beam-size", "2", "--max-len", "5"])
        assert rc == 0 and out.is_file()
    assert str(tmp_path / "omr_top_p.musicxml") in capsys.readouterr().out


def test_batch_mode_skips_and_counts_bad_inputs(tiny_run, inputs, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(inputs["image"].read_bytes())
    (folder / "b.png").write_bytes(inputs["image"].read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("ignored: not an image")
    rc = main(["translate", "--ckpt", str(tiny_run), "--task", "omr", str(folder), "-o", str(tmp_path / "out"),
               "--max-len", "4"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.musicxml", "b.musicxml"]
    assert "2 input(s) skipped" in capsys.readouterr().out


@pytest.mark.parametrize("task,name,content,message", [
    ("omr", "empty.png", b"", "input file is empty"),
    ("omr", "noise.png", b"this is not a picture", "cannot read image"),
    ("amt", "noise.wav", b"RIFF....WAVEfmt garbage", "cannot read audio"),
    ("midi2lmx", "noise.mid", b"MThd garbage", "cannot read MIDI"),
    ("lmx2midi", "blank.lmx", b"   \n# only a comment\n", "no LMX tokens"),
])
def test_bad_inputs_give_a_clear_error(task, name, content, message, tiny_run, tmp_path, capsys):
    bad = tmp_path / name
    bad.write_bytes(content)
    rc = main(["translate", "--ckpt", str(tiny_run), "--task", task, str(bad), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and str(bad) in err and "Traceback" not in err


def test_missing_checkpoint_and_no_inputs(tiny_run, tmp_path, capsys):
    rc = main(["translate", "--ckpt", str(tmp_path / "nope.ckpt"), "--task", "omr", str(tmp_path), "-o", "x"])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err
    rc = main(["translate", "--ckpt", str(tiny_run), "--task", "omr", str(tmp_path), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no image input files" in capsys.readouterr().err


def test_malformed_model_output_is_reported_not_raised(tiny_run):
    from musicmoe.training.checkpoint import load_model
    from musicmoe.training.codecs import CodecSet

    model, hp = load_model(tiny_run)
    codecs = CodecSet(hp["codecs"])
    rng = np.random.default_rng(0)
    v = model.vocab
    garbage_lmx = rng.integers(0, v.lmx.table_size, 60)  # content ids, PAD/BOS/SEP and EOS in random order
    dec = codecs.decode("lmx", garbage_lmx)
    assert dec.value.lstrip().startswith("<?xml") and dec.problems
    dec = codecs.decode("midi", rng.integers(0, v.midi.table_size, 80))
    assert dec.value is not None
    dec = codecs.decode("image", rng.integers(0, v.image.table_size, (4, 37)))
    assert dec.value.dtype == np.uint8 and dec.problems
    dec = codecs.decode("audio", rng.integers(-3, v.audio.table_size, (4, 20)))
    assert dec.value.dtype == np.float32 and dec.problems
    dec = codecs.decode("lmx", np.zeros(0, dtype=np.int64))
    assert dec.value.lstrip().startswith("<?xml")
