"""Shard writer/reader round trip on a real chorale excerpt."""

import numpy as np
import pretty_midi
import pytest

from musicmoe.data import Corpus, CorpusError, Example, ShardWriter, split_for, write_manifest
from musicmoe.data.shards import SHARD_DIR, shard_done


def _example(key: str) -> Example:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=52)
    for i, pitch in enumerate((60, 64, 67, 72)):
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=0.5 * i, end=0.5 * i + 0.5))
    pm.instruments.append(inst)
    rng = np.random.default_rng(0)
    return Example(
        key=key, piece="bach/bwv66.6", composer="bach", split="train", system=1, measures=(4, 7),
        image=rng.integers(0, 256, (40, 120), dtype=np.uint8), lmx=["measure", "key:fifths:3", "C4", "quarter"],
        midi=pm, audio=rng.uniform(-0.5, 0.5, 24000).astype(np.float32),
    )


def test_roundtrip(tmp_path):
    with ShardWriter(tmp_path, "bach_bwv66.6") as w:
        w.add(_example("a"))
        w.add(_example("b"))
    assert shard_done(tmp_path, "bach_bwv66.6")
    assert write_manifest(tmp_path) == 2
    corpus = Corpus(tmp_path)
    ex = corpus[1]
    ref = _example("b")
    assert ex.key == "b" and ex.measures == (4, 7)
    np.testing.assert_array_equal(ex.image, ref.image)
    assert ex.lmx == ref.lmx
    assert [n.pitch for n in ex.midi.instruments[0].notes] == [60, 64, 67, 72]
    assert ex.midi.instruments[0].program == 52
    assert np.max(np.abs(ex.audio - ref.audio)) < 1e-4  # 16-bit FLAC
    only_lmx = Corpus(tmp_path, modalities=("lmx",))[0]
    assert only_lmx.image is None and only_lmx.lmx == ref.lmx


def test_failed_write_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "broken") as w:
            w.add(_example("a"))
            raise RuntimeError("engraving failed")
    assert list((tmp_path / SHARD_DIR).iterdir()) == []


def test_truncated_shard_is_reported(tmp_path):
    with ShardWriter(tmp_path, "p") as w:
        w.add(_example("a"))
    write_manifest(tmp_path)
    tar = tmp_path / SHARD_DIR / "p.tar"
    tar.write_bytes(tar.read_bytes()[:2000])
    with pytest.raises(CorpusError, match="p.tar"):
        Corpus(tmp_path)[0]


def test_missing_manifest_names_folder(tmp_path):
    with pytest.raises(CorpusError, match="manifest.jsonl"):
        Corpus(tmp_path)


def test_split_is_stable_and_balanced():
    pieces = [f"piece{i}" for i in range(4000)]
    splits = [split_for(p) for p in pieces]
    assert splits == [split_for(p) for p in pieces]
    assert 0.87 < splits.count("train") / len(splits) < 0.93
    assert split_for("bach/bwv66.6") == split_for("bach/bwv66.6")
