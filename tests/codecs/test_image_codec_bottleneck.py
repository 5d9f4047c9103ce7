"""experiments/bench/image_codec_bottleneck.py on the tiny corpus and its trained codec."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from musicmoe.codecs.image import ImageCodec
from musicmoe.data.shards import Corpus

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "image_codec_bottleneck.py"


def test_psnr_through_the_codes_is_the_reconstruction_psnr(tiny_corpus, tiny_codecs, capsys):
    spec = importlib.util.spec_from_file_location("image_codec_bottleneck", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--codec", str(tiny_codecs["image"]), "--corpus", str(tiny_corpus), "--split", "train",
                      "--limit", "3"])
    assert out["crops"] == 3 and "psnr_codes_db" in capsys.readouterr().out
    # independently: the codec's own encode -> decode of the same crops (uint8 output: within 0.2 dB)
    codec = ImageCodec.load(tiny_codecs["image"])
    corpus = Corpus(tiny_corpus)
    images = [corpus[i].image for i, r in enumerate(corpus.records) if r.get("split") == "train"][:3]
    p = codec.patch
    padded = []
    for im in images:  # white to whole patches, as the codec sees them
        canvas = np.full((-(-im.shape[0] // p) * p, -(-im.shape[1] // p) * p), 255, dtype=np.uint8)
        canvas[: im.shape[0], : im.shape[1]] = im
        padded.append(canvas)
    err = sum(np.sum((codec.reconstruct(im) / 255.0 - im / 255.0) ** 2) for im in padded)
    expected = -10 * math.log10(err / sum(im.size for im in padded))
    assert out["psnr_codes_db"] == pytest.approx(expected, abs=0.2)
    assert math.isfinite(out["psnr_continuous_db"]) and out["psnr_continuous_db"] > 0
