"""Token streams back to PNG / WAV / MIDI / MusicXML, for clean and malformed (model-like) input."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch
from PIL import Image

from musicmoe.codecs.audio import AudioCodec, AudioCodecConfig
from musicmoe.codecs.image.codec import ImageCodec
from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.image.layout import flatten_codes
from musicmoe.codecs.lmx import Vocabulary
from musicmoe.codecs.midi import MidiCodec
from musicmoe.data.media import (
    audio_from_codes,
    clean_codes,
    clean_ids,
    image_from_codes,
    midi_from_ids,
    musicxml_from_lmx_ids,
)
from musicmoe.data.shards import Corpus


@pytest.fixture(scope="module")
def example(tiny_corpus):
    return Corpus(tiny_corpus)[0]


@pytest.fixture(scope="module")
def image_codec(tiny_corpus):
    torch.manual_seed(0)
    corpus = Corpus(tiny_corpus, modalities=("image",))
    codec = ImageCodec(ImageCodecConfig(codebook_size=64, latent_dim=8, base_channels=4, max_channels=8, res_blocks=0))
    codec.init_codebooks([corpus[i].image for i in range(3)])
    return codec.eval()


@pytest.fixture(scope="module")
def audio_codec(tiny_corpus):
    torch.manual_seed(0)
    corpus = Corpus(tiny_corpus, modalities=("audio",))
    codec = AudioCodec.build(AudioCodecConfig(n_filters=4, dimension=16, lstm=0, kmeans_iters=5))
    codec.init_codebooks([corpus[i].audio for i in range(3)])
    return codec


def test_clean_ids_and_codes():
    ids, problems = clean_ids([3, 7, 10, -1, 4, 12, 5, 5], vocab_size=10)  # 10 = PAD, 12 = EOS
    assert ids.tolist() == [3, 7, 4] and len(problems) == 2
    codes, problems = clean_codes(np.array([[1, 10, 2, 3, 12], [4, 10, 11, 6, 0]]), codebooks=4, codebook_size=10)
    assert codes.tolist() == [[1, 2, 3], [4, 4, 6]] and len(problems) == 2  # EOS was last: nothing after it
    with pytest.raises(ValueError, match="codes must have shape"):
        clean_codes(np.zeros((5, 3), int), codebooks=4, codebook_size=10)


def test_image_png(example, image_codec, tmp_path):
    grid = image_codec.encode(example.image)
    flat = flatten_codes(grid)
    h = grid.shape[1]
    expected = image_codec.decode(grid, size=example.image.shape)
    out = image_from_codes(torch.from_numpy(flat), image_codec, tmp_path / "a.png", height_patches=h,
                           size=example.image.shape)
    assert out.problems == [] and out.path == tmp_path / "a.png"
    np.testing.assert_array_equal(out.value, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(out.path)), expected)
    # model-like output: an incomplete last column, then EOS and junk after it
    eos = np.full((4, 1), 64 + 2)
    ragged = np.concatenate([flat[:, :-2], eos, flat[:, :5]], axis=1)
    bad = image_from_codes(ragged, image_codec, tmp_path / "b.png", height_patches=h)
    assert bad.value.shape == (grid.shape[1] * 16, grid.shape[2] * 16) and len(bad.problems) == 2
    keep = (grid.shape[2] - 4) * 16  # away from the repaired last column (the decoder's receptive field)
    np.testing.assert_array_equal(bad.value[:, :keep], image_codec.decode(grid)[:, :keep])
    empty = image_from_codes(np.zeros((4, 0), int), image_codec, tmp_path / "c.png", height_patches=h)
    assert empty.value.min() == 255 and empty.problems
    with pytest.raises(ValueError, match="height_patches"):
        image_from_codes(flat, image_codec)


def test_audio_wav(example, audio_codec, tmp_path):
    codes = audio_codec.encode(example.audio)
    out = audio_from_codes(codes, audio_codec, tmp_path / "a.wav", num_samples=len(example.audio))
    wave, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 24000 and len(wave) == len(example.audio) == len(out.value)
    ref = audio_codec.decode(codes)[: len(example.audio)]
    np.testing.assert_allclose(out.value, ref)
    np.testing.assert_allclose(wave, np.clip(ref, -1, 1), atol=1 / 32000)
    pad = np.full((4, 3), 1024)  # model PAD steps and a truncated codebook row
    junk = audio_from_codes(np.concatenate([codes[:, :10], pad], axis=1)[:3], audio_codec, tmp_path / "b.wav")
    assert len(junk.value) == 10 * 320 and junk.problems
    assert audio_from_codes(np.zeros((4, 0), int), audio_codec).value.size == 0


def test_midi_file(example, tmp_path):
    codec = MidiCodec()
    ids = codec.encode(example.midi, 0.0, example.meta["duration"])
    out = midi_from_ids(np.asarray(ids), tmp_path / "a.mid", codec=codec, duration=example.meta["duration"])
    back = pretty_midi.PrettyMIDI(str(tmp_path / "a.mid"))
    notes = sorted((round(n.start, 2), n.pitch) for i in back.instruments for n in i.notes)
    ref = sorted((round(n.start, 2), n.pitch) for i in example.midi.instruments for n in i.notes
                 if n.start < example.meta["duration"] - 1e-3)
    assert notes == ref and out.problems == []
    junk = midi_from_ids(np.random.default_rng(0).integers(-5, codec.vocab_size + 10, 300), tmp_path / "b.mid")
    assert junk.problems and pretty_midi.PrettyMIDI(str(tmp_path / "b.mid")) is not None


def test_musicxml_file(example, tmp_path):
    vocab = Vocabulary.from_file()
    ids = vocab.encode(example.lmx)
    out = musicxml_from_lmx_ids(ids + [len(vocab) + 2, 5, 6], tmp_path / "a.musicxml", vocab=vocab)
    root = ET.parse(tmp_path / "a.musicxml").getroot()
    assert root.tag == "score-partwise"
    n_parts = max(1, example.lmx.count("part"))
    assert len(root.findall("part/measure")) == example.lmx.count("measure")
    assert len(root.findall("part")) == n_parts
    assert out.problems == ["2 id(s) after EOS ignored"]
    junk = musicxml_from_lmx_ids(np.random.default_rng(1).integers(-3, len(vocab) + 5, 200), tmp_path / "b.musicxml")
    assert ET.parse(tmp_path / "b.musicxml").getroot().tag == "score-partwise" and junk.problems
