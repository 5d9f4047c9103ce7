"""Pre-tokenization of the tiny corpus: round trip, resume, corrupt members, length limits, missing codecs."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch

from musicmoe.codecs.audio import AudioCodec, AudioCodecConfig
from musicmoe.codecs.image.codec import ImageCodec
from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.image.layout import flatten_codes
from musicmoe.codecs.lmx import Vocabulary
from musicmoe.codecs.midi import MidiCodec
from musicmoe.config import load_config
from musicmoe.data import tokenize as tokenize_module
from musicmoe.data.shards import SHARD_DIR, Corpus
from musicmoe.data.tokenize import TokenizeError, tokenize
from musicmoe.data.tokens import TokenDataError, TokenDataset, pad_collate, vocab_spec


@pytest.fixture(scope="module")
def codecs(tiny_corpus, tmp_path_factory):
    """Tiny untrained codecs with k-means-initialised codebooks (the weights do not matter here)."""
    torch.manual_seed(0)
    corpus = Corpus(tiny_corpus, modalities=("image", "audio"))
    examples = [corpus[i] for i in range(3)]
    image = ImageCodec(ImageCodecConfig(codebook_size=64, latent_dim=8, base_channels=4, max_channels=8, res_blocks=0))
    image.init_codebooks([ex.image for ex in examples])
    audio = AudioCodec.build(AudioCodecConfig(n_filters=4, dimension=16, lstm=0, kmeans_iters=5))
    audio.init_codebooks([ex.audio for ex in examples])
    folder = tmp_path_factory.mktemp("codecs")
    image.save(folder / "image.pt")
    audio.save(folder / "audio.pt")
    return folder / "image.pt", folder / "audio.pt"


def _cfg(*overrides):
    return load_config(None, ["tokenize.chunk_size=4", "tokenize.threads=1", "tokenize.device=cpu", *overrides])


@pytest.fixture(scope="module")
def tokdir(tiny_corpus, codecs, tmp_path_factory):
    """The tiny corpus tokenized through the real CLI."""
    from musicmoe.cli.main import main

    out = tmp_path_factory.mktemp("tokens") / "tok"
    rc = main(["data", "tokenize", str(tiny_corpus), "tokenize.chunk_size=4", "tokenize.threads=1",
               "tokenize.workers=1", "tokenize.device=cpu", "--image-codec", str(codecs[0]), "--audio-codec",
               str(codecs[1]), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_round_trip_equals_direct_encoding(tiny_corpus, codecs, tokdir, capsys):
    image, audio = ImageCodec.load(codecs[0]), AudioCodec.load(codecs[1])
    vocab, midi = Vocabulary.from_file(), MidiCodec()
    corpus = Corpus(tiny_corpus)
    meta = json.loads((tokdir / "meta.json").read_text())
    assert meta["codecs"]["image"]["content_hash"] == image.content_hash
    assert meta["codecs"]["audio"]["content_hash"] == audio.content_hash
    assert meta["vocab"] == {"image": {"vocab_size": 64, "codebooks": 4}, "audio": {"vocab_size": 1024, "codebooks": 4},
                             "lmx": {"vocab_size": len(vocab), "codebooks": 1},
                             "midi": {"vocab_size": midi.vocab_size, "codebooks": 1}}
    assert vocab_spec(meta).max_codebooks == 4
    total = 0
    for split, n in meta["splits"].items():
        idx = corpus.split_indices(split)
        assert n == len(idx)
        if not n:
            continue
        ds = TokenDataset(tokdir, split)
        assert len(ds) == n and ds.modalities == ("image", "lmx", "midi", "audio")
        for j, i in enumerate(idx):
            ex, item = corpus[i], ds[j]
            assert item["key"] == ex.key
            np.testing.assert_array_equal(item["image"], flatten_codes(image.encode(ex.image)))
            h, w = ds.image_grid(j)
            assert ds.image_size(j) == ex.image.shape and h * w == item["image"].shape[1]
            np.testing.assert_array_equal(item["audio"], audio.encode(ex.audio, ex.sample_rate))
            np.testing.assert_array_equal(item["lmx"], vocab.encode(ex.lmx))
            np.testing.assert_array_equal(item["midi"], midi.encode(ex.midi, 0.0, ex.meta["duration"]))
            assert all(v.dtype == np.int64 for k, v in item.items() if k != "key")
            assert ds.lengths()[j] == {m: item[m].shape[-1] for m in ("image", "lmx", "midi", "audio")}
        total += n
    assert total == len(corpus)
    assert json.loads((tokdir / "report.json").read_text())["examples"] == len(corpus)
    assert not (tokdir / ".work").exists()


def test_loader_with_workers_and_rerun_is_a_no_op(tiny_corpus, codecs, tokdir):
    from torch.utils.data import DataLoader

    ds = TokenDataset(tokdir, "train", modalities=["audio", "lmx"])
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=pad_collate)))
    assert set(batch) == {"key", "lmx", "lmx_mask", "audio", "audio_mask"}
    assert batch["audio"].shape[:2] == (3, 4) and batch["audio"].dtype == torch.int64
    assert int(batch["lmx_mask"][0].sum()) == len(ds[0]["lmx"])
    report = tokenize(tiny_corpus, tokdir, _cfg(), image_codec=codecs[0], audio_codec=codecs[1], progress=False)
    assert report["up_to_date"] is True
    with pytest.raises(TokenizeError, match="other inputs"):  # same folder, other limits
        tokenize(tiny_corpus, tokdir, _cfg("tokenize.max_lmx_tokens=10"), image_codec=codecs[0],
                 audio_codec=codecs[1], progress=False)


def test_resume_after_interruption(tiny_corpus, codecs, tokdir, tmp_path, monkeypatch):
    out = tmp_path / "tok"
    cfg = _cfg("tokenize.chunk_size=3")
    real_write = tokenize_module._Tokenizer._write_chunk
    written: list[str] = []

    def write_then_die(self, path, results):
        real_write(self, path, results)
        written.append(path.name)
        if len(written) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after the second commit

    monkeypatch.setattr(tokenize_module._Tokenizer, "_write_chunk", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        tokenize(tiny_corpus, out, cfg, image_codec=codecs[0], audio_codec=codecs[1], progress=False)
    assert len(list((out / ".work").rglob("chunk-*.npz"))) == 2
    with pytest.raises(TokenDataError, match="incomplete"):
        TokenDataset(out, "train")
    monkeypatch.setattr(tokenize_module._Tokenizer, "_write_chunk", real_write)
    with pytest.raises(TokenizeError, match="unfinished"):  # resuming with other settings is refused
        tokenize(tiny_corpus, out, _cfg("tokenize.chunk_size=5"), image_codec=codecs[0], audio_codec=codecs[1],
                 progress=False)
    report = tokenize(tiny_corpus, out, cfg, image_codec=codecs[0], audio_codec=codecs[1], progress=False)
    n = len(Corpus(tiny_corpus))
    assert report["examples"] == n and report["examples_this_run"] == n - 6  # two chunks of 3 were kept
    for split in ("train", "valid", "test"):
        if (tokdir / split / "index.npz").is_file() and len(TokenDataset(tokdir, split)):
            a, b = TokenDataset(tokdir, split), TokenDataset(out, split)
            for i in range(len(a)):
                x, y = a[i], b[i]
                assert x.keys() == y.keys()
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k])


def _corrupt_member(corpus_dir, key: str, ext: str) -> None:
    """Overwrite a member's bytes in its shard with garbage of the same length (offsets stay valid)."""
    rec = next(r for r in Corpus(corpus_dir).records if r["key"] == key)
    start, size = rec["members"][ext]
    tar = corpus_dir / SHARD_DIR / rec["shard"]
    data = bytearray(tar.read_bytes())
    data[start:start + size] = bytes((i * 37 + 11) % 256 for i in range(size))
    tar.write_bytes(bytes(data))
    with tarfile.open(tar) as tf:  # still a valid tar: only member contents changed
        assert len(tf.getnames()) > 0


def test_corrupt_members_are_skipped_and_reported(tiny_corpus, codecs, tmp_path, capsys):
    corpus_dir = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus_dir)
    keys = [r["key"] for r in Corpus(corpus_dir).records]
    _corrupt_member(corpus_dir, keys[1], "png")
    _corrupt_member(corpus_dir, keys[2], "flac")
    from musicmoe.cli.main import main

    out = tmp_path / "tok"
    rc = main(["data", "tokenize", str(corpus_dir), "tokenize.chunk_size=4", "tokenize.threads=1",
               "tokenize.device=cpu", "--image-codec", str(codecs[0]), "--audio-codec", str(codecs[1]),
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 image stream(s) corrupt" in printed and "1 audio stream(s) corrupt" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["corrupt"] == {"image": 1, "audio": 1}
    by_split = {m: [k for rep in report["splits"].values() for k, _ in rep["corrupt"].get(m, [])]
                for m in ("image", "audio")}
    assert by_split == {"image": [keys[1]], "audio": [keys[2]]}
    items = {}
    for split in ("train", "valid", "test"):
        if json.loads((out / "meta.json").read_text())["splits"][split]:
            ds = TokenDataset(out, split)
            items.update({ds[i]["key"]: ds[i] for i in range(len(ds))})
    assert "image" not in items[keys[1]] and {"lmx", "midi", "audio"} <= items[keys[1]].keys()
    assert "audio" not in items[keys[2]] and {"lmx", "midi", "image"} <= items[keys[2]].keys()
    assert all(len(items[k]) == 5 for k in keys if k not in keys[1:3])


def test_over_long_streams_are_counted_not_cut(tiny_corpus, tmp_path):
    vocab = Vocabulary.from_file()
    corpus = Corpus(tiny_corpus, modalities=("lmx",))
    tokens = {ex.key: ex.lmx for ex in corpus}
    lengths = {k: len(v) for k, v in tokens.items()}
    limit = int(np.median(list(lengths.values())))
    too_long = sorted(k for k, n in lengths.items() if n > limit)
    assert too_long
    report = tokenize(tiny_corpus, tmp_path / "tok", _cfg(f"tokenize.max_lmx_tokens={limit}"), progress=False)
    assert report["over_limit"] == {"lmx": len(too_long)}
    listed = sorted(k for rep in report["splits"].values() for k, n in rep["over_limit"].get("lmx", []))
    assert listed == too_long
    ds = TokenDataset(tmp_path / "tok", "train")
    for i in range(len(ds)):
        item = ds[i]
        if item["key"] in too_long:
            assert "lmx" not in item and "midi" in item
        elif "lmx" in item:  # kept streams are whole
            assert len(item["lmx"]) == lengths[item["key"]] <= limit
            np.testing.assert_array_equal(item["lmx"], vocab.encode(tokens[item["key"]]))


def test_missing_codecs_skip_their_streams(tiny_corpus, tmp_path):
    report = tokenize(tiny_corpus, tmp_path / "tok", _cfg(), progress=False)
    assert report["streams"]["image"] == 0 and report["streams"]["audio"] == 0
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert meta["streams"]["image"]["available"] is False
    assert meta["streams"]["image"]["reason"] == "no image codec given"
    assert meta["codecs"]["audio"] is None
    ds = TokenDataset(tmp_path / "tok", "train")
    assert ds.modalities == ("lmx", "midi") and set(ds[0]) == {"key", "lmx", "midi"}
    with pytest.raises(TokenDataError, match="no audio tokens"):
        TokenDataset(tmp_path / "tok", "train", modalities=["audio"])
    with pytest.raises(TokenDataError, match="no split"):
        TokenDataset(tmp_path / "tok", "dev")
    with pytest.raises(TokenDataError, match="not a token folder"):
        TokenDataset(tmp_path, "train")
    with pytest.raises(TokenizeError, match="not a corpus folder"):
        tokenize(tmp_path, tmp_path / "x", _cfg(), progress=False)


def test_shipped_tokenize_configs_validate():
    from musicmoe.config import ConfigError, compose
    from musicmoe.data.tokenize_config import TokenizeConfig

    for name in ("default", "demo"):
        cfg = compose(TokenizeConfig, f"tokenize/{name}.yaml")
        assert cfg.limit("audio") == cfg.max_audio_frames > 0
    with pytest.raises(ConfigError, match="splits"):
        compose(TokenizeConfig, None, ["splits=[train,dev]"])

