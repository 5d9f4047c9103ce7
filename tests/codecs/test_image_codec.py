"""ImageCodec: shapes on real systems, decode cropping, checkpoint files, shipped configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicmoe.codecs.image import CodecFileError, ImageCodec, ImageCodecConfig
from musicmoe.codecs.image.codec import FORMAT, weights_hash
from musicmoe.config import CONFIG_ROOT, ConfigError, compose, load_config

TINY = dict(codebook_size=64, base_channels=8, max_channels=16, latent_dim=8, res_blocks=1)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec(system_images) -> ImageCodec:
    torch.manual_seed(0)
    codec = ImageCodec(ImageCodecConfig(**TINY))
    codec.init_codebooks(system_images)
    return codec.eval()


def test_shapes_and_ranges_on_real_systems(codec, system_images):
    for img in system_images[:4]:
        codes = codec.encode(img)
        h, w = img.shape
        assert codes.shape == (4, -(-h // 16), -(-w // 16))
        assert codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 64
        full = codec.decode(codes)
        assert full.dtype == np.uint8 and full.shape == (codes.shape[1] * 16, codes.shape[2] * 16)
        cropped = codec.decode(codes, size=img.shape)
        assert cropped.shape == img.shape and np.array_equal(cropped, full[:h, :w])
    # more than one code per codebook is in use on real music
    codes = codec.encode(system_images[0])
    assert all(len(np.unique(codes[q])) > 1 for q in range(4))


def test_encode_is_deterministic_and_batch_equals_single(codec, system_images):
    images = system_images[:3] + [system_images[0]]
    single = [codec.encode(img) for img in images]
    assert np.array_equal(single[0], codec.encode(system_images[0]))
    for a, b in zip(single, codec.encode_batch(images)):
        assert np.array_equal(a, b)


def test_decode_rejects_bad_codes(codec):
    with pytest.raises(ValueError, match="separator"):
        codec.decode(np.full((4, 2, 2), 64))
    with pytest.raises(ValueError, match="Q=4"):
        codec.decode(np.zeros((3, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        codec.decode(np.zeros((4, 2, 2), dtype=np.int64), size=(40, 10))


def test_untrained_codec_refuses_to_encode(system_images):
    with pytest.raises(ValueError, match="not initialised"):
        ImageCodec(ImageCodecConfig(**TINY)).encode(system_images[0])


def test_save_load_gives_identical_codes(codec, system_images, tmp_path):
    path = tmp_path / "codec.pt"
    digest = codec.save(path)
    assert digest == codec.content_hash and len(digest) == 12
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file
    loaded = ImageCodec.load(path)
    assert loaded.content_hash == digest and loaded.cfg == codec.cfg
    for img in system_images[:3]:
        assert np.array_equal(loaded.encode(img), codec.encode(img))
        assert np.array_equal(loaded.decode(codec.encode(img)), codec.decode(codec.encode(img)))


def test_content_hash_tracks_weights(codec):
    state = {k: v.clone() for k, v in codec.state_dict().items()}
    before = weights_hash(state)
    name = next(k for k in state if k.endswith("weight"))
    state[name].view(-1)[0] += 1e-3
    assert weights_hash(state) != before


def test_load_rejects_tampered_and_foreign_files(codec, tmp_path):
    path = tmp_path / "codec.pt"
    codec.save(path)
    blob = torch.load(path, weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith("weight"))
    blob["state_dict"][key] = blob["state_dict"][key] + 1.0
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(CodecFileError, match="content hash"):
        ImageCodec.load(tmp_path / "tampered.pt")
    torch.save({"format": "other"}, tmp_path / "foreign.pt")
    with pytest.raises(CodecFileError, match="neither"):
        ImageCodec.load(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecFileError, match="cannot read"):
        ImageCodec.load(tmp_path / "garbage.pt")
    with pytest.raises(CodecFileError, match="not found"):
        ImageCodec.load(tmp_path / "missing.pt")
    assert blob["format"] == FORMAT


def test_shipped_configs_validate():
    default = compose(ImageCodecConfig, CONFIG_ROOT / "image_codec" / "default.yaml")
    assert (default.patch, default.codebooks, default.codebook_size) == (16, 4, 1024)
    assert default.sep_id == 1024 and default.stages == 4
    demo = compose(ImageCodecConfig, CONFIG_ROOT / "image_codec" / "demo.yaml")
    assert demo.patch == 16 and demo.codebooks == 4 and demo.train.max_steps <= 500
    # the root schema accepts the section too
    cfg = load_config(None, ["image_codec.codebook_size=512", "image_codec.train.crop_width=128"])
    assert cfg.image_codec.codebook_size == 512


@pytest.mark.parametrize("override, message", [
    ("patch=12", "power of two"),
    ("train.crop_width=100", "multiple of image_codec.patch"),
    ("train.loss=l3", "must be one of"),
    ("ema_decay=1.5", "ema_decay"),
    ("codebok_size=3", "did you mean"),
    ("output=tanh", "image_codec.output must be one of"),
    ("train.loss=bce", "needs image_codec.output: sigmoid"),
])
def test_bad_config_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        compose(ImageCodecConfig, CONFIG_ROOT / "image_codec" / "default.yaml", [override])


def test_default_config_builds_paper_codec():
    cfg = compose(ImageCodecConfig, CONFIG_ROOT / "image_codec" / "default.yaml")
    codec = ImageCodec(cfg)
    assert codec.quantizer.num_quantizers == 4 and codec.quantizer.codebook_size == 1024
    ink = torch.zeros(1, 1, 64, 96)
    assert codec.encoder(ink).shape == (1, cfg.latent_dim, 4, 6)
