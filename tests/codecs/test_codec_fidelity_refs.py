"""The reference degradations of experiments/bench/codec_fidelity.py on real corpus media (tiny corpus)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from musicmoe.data.shards import Corpus, decode_audio

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "codec_fidelity.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("codec_fidelity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_white_noise_is_added_at_the_asked_snr(bench, tiny_corpus):
    corpus = Corpus(tiny_corpus)
    wave, sr = decode_audio(corpus.read_bytes(0, "audio"), "0.flac")
    noisy, sr2 = bench.white_noise(20.0)(wave, sr)
    assert sr2 == sr and noisy.shape == wave.shape and noisy.dtype == np.float32
    noise = noisy.astype(np.float64) - wave
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(20.0, abs=0.2)
    assert np.array_equal(bench.white_noise(20.0)(wave, sr)[0], noisy)  # reproducible


def test_blur_softens_a_crop_without_moving_it(bench, tiny_corpus):
    image = Corpus(tiny_corpus, modalities=("image",))[0].image
    out = bench.gaussian_blur(0.6)(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - image.astype(int)).mean() < 20
