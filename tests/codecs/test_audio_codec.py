"""EnCodec wrapper: import without torchaudio, codes/waves shapes, save/load, published-weights loading."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

from musicmoe.codecs.audio import AudioCodec, AudioCodecConfig, AudioCodecError
from musicmoe.codecs.audio.losses import mel_filterbank, mel_loss, spectral_distance, stft_loss
from musicmoe.config import ConfigError, compose
from musicmoe.data.shards import Corpus

TINY = dict(n_filters=4, dimension=16, lstm=0, kmeans_iters=5)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def waves(tiny_corpus):
    corpus = Corpus(tiny_corpus, modalities=("audio",))
    return [corpus[i].audio for i in range(3)]


def test_encodec_imports_with_stand_in_and_resamples():
    from musicmoe.codecs.audio._encodec import EncodecModel, convert_audio

    assert EncodecModel.__module__ == "encodec.model"
    stub = sys.modules.get("torchaudio")
    assert stub is None or "stand-in" not in (stub.__doc__ or "")  # nobody else sees the stand-in
    t = torch.arange(16000) / 16000
    wave = torch.sin(2 * torch.pi * 440 * t)[None]
    out = convert_audio(wave, 16000, 24000, 1)
    assert out.shape == (1, 24000)
    spectrum = torch.fft.rfft(out[0]).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s at 24 kHz: bin = Hz


def test_config_derives_codebooks_and_frame_rate():
    cfg = AudioCodecConfig()
    assert (cfg.frame_rate, cfg.codebooks, cfg.hop_length) == (75, 4, 320)
    assert compose(AudioCodecConfig, None, ["bandwidth=6.0"]).codebooks == 8
    with pytest.raises(ConfigError, match="bandwidth"):
        compose(AudioCodecConfig, None, ["bandwidth=2.0"])
    with pytest.raises(ConfigError, match="codebook_size"):
        compose(AudioCodecConfig, None, ["codebook_size=1000"])
    for name in ("default", "demo"):  # shipped files validate and keep 4 x 1024 at 75 frames/s
        shipped = compose(AudioCodecConfig, f"audio_codec/{name}.yaml")
        assert (shipped.codebooks, shipped.codebook_size, shipped.frame_rate) == (4, 1024, 75)


def test_encode_decode_save_load(tmp_path, waves):
    codec = AudioCodec.build(AudioCodecConfig(**TINY))
    codec.init_codebooks(waves)
    wave = waves[0]
    codes = codec.encode(wave)
    assert codes.dtype == np.int64 and codes.shape == (4, -(-len(wave) // 320))
    assert codes.min() >= 0 and codes.max() < 1024
    assert len(np.unique(codes[0])) > 1
    out = codec.decode(codes)
    assert out.dtype == np.float32 and out.shape == (codes.shape[1] * 320,)
    assert codec.decode(codes[:2]).shape == out.shape  # fewer residual levels decode too
    assert codec.encode(wave[:1]).shape == (4, 1) and codec.encode(wave[:0]).shape == (4, 0)
    assert codec.encode(wave[:48000], sample_rate=48000).shape == (4, 75)  # resampled to 24 kHz

    path = codec.save(tmp_path / "codec.pt")
    assert not list(tmp_path.glob(".*tmp"))
    again = AudioCodec.load(path)
    assert again.content_hash == codec.content_hash and len(codec.content_hash) == 64
    np.testing.assert_array_equal(again.encode(wave), codes)
    np.testing.assert_array_equal(again.decode(codes), out)

    with pytest.raises(ValueError, match="0..1023"):
        codec.decode(np.full((4, 3), 1024))
    with pytest.raises(ValueError, match="mono"):
        codec.encode(np.zeros((2, 100), np.float32))
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["decoder.model.0.conv.conv.bias"] += 1.0
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(AudioCodecError, match="sha256"):
        AudioCodec.load(tmp_path / "tampered.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AudioCodecError, match="junk.pt"):
        AudioCodec.load(tmp_path / "junk.pt")


def test_published_weights_format(tmp_path, waves):
    """A file in the published format (random weights, named <name>-<sha256 prefix>.th) loads with 4 of 32
    codebooks and encodes exactly like EnCodec's own 24 kHz model at 3 kbps."""
    from musicmoe.codecs.audio._encodec import EncodecModel

    torch.manual_seed(0)
    full = EncodecModel.encodec_model_24khz(pretrained=False)
    with torch.no_grad():  # random codebooks (k-means over 32 of them would take minutes)
        for layer in full.quantizer.vq.layers:
            layer._codebook.embed.normal_(0, 0.1)
            layer._codebook.inited.fill_(1)
    raw = tmp_path / "weights.th"
    torch.save(full.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    published = raw.rename(tmp_path / f"encodec_24khz-{digest}.th")

    codec = AudioCodec.from_published(published)
    assert codec.num_codebooks == 4 and len(codec.model.quantizer.vq.layers) == 4
    full.set_target_bandwidth(3.0)
    clip = waves[1][:24000]
    with torch.no_grad():
        expected = full.encode(torch.from_numpy(clip)[None, None])[0][0][0].numpy()
    np.testing.assert_array_equal(codec.encode(clip), expected)
    assert AudioCodec.load(published).content_hash == codec.content_hash  # recognised by content too
    cfg = AudioCodecConfig(weights=str(published))
    assert AudioCodec.from_config(cfg).content_hash == codec.content_hash

    bad = tmp_path / "encodec_24khz-00000000.th"
    bad.write_bytes(published.read_bytes())
    with pytest.raises(AudioCodecError, match="checksum"):
        AudioCodec.from_published(bad)
    with pytest.raises(AudioCodecError, match="not found"):
        AudioCodec.from_published(tmp_path / "missing.th")
    with pytest.raises(AudioCodecError, match="no audio codec configured"):
        AudioCodec.from_config(AudioCodecConfig())


def test_losses_and_spectral_distance(waves):
    x = torch.from_numpy(waves[0][:24000])[None, None]
    noisy = x + 0.05 * torch.randn_like(x)
    noisier = x + 0.2 * torch.randn_like(x)
    assert spectral_distance(x, x) == 0.0
    assert 0 < spectral_distance(noisy, x) < spectral_distance(noisier, x)
    assert float(stft_loss(x, x)) < 1e-6 < float(stft_loss(noisy, x)) < float(stft_loss(noisier, x))
    assert float(mel_loss(noisy, x, 24000)) < float(mel_loss(noisier, x, 24000))
    fb = mel_filterbank(1024, 64, 24000)
    assert fb.shape == (64, 513) and torch.allclose(fb.sum(1), torch.ones(64), atol=1e-5)
