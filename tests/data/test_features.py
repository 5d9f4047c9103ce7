"""Continuous source features (musicmoe/data/features.py) on the real tiny corpus: pixel patches on the image
codec's grid, stacked log-mel frames, lengths known from the manifest, and the data module serving them."""

import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from musicmoe.data.features import FeatureSource, FeatureSpec, image_patches, log_mel, mel_filterbank, patches_to_image
from musicmoe.data.shards import Corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared training.fixtures module
from training.fixtures import tiny_overrides  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return Corpus(tiny_corpus)


def test_patches_follow_the_codec_grid_column_by_column(corpus):
    for ex in list(corpus)[:4]:
        img = ex.image
        patches, rows = image_patches(img, 16)
        h, w = img.shape
        assert rows == -(-h // 16) and patches.shape == (rows * (-(-w // 16)), 256)
        back = patches_to_image(patches, rows, 16)
        assert np.array_equal(back[:h, :w], 255 - img) and not back[h:].any() and not back[:, w:].any()
        # position t is grid cell (t % rows, t // rows): the patch of the darkest cell has the most ink
        cells = (255 - img[: h // 16 * 16, : w // 16 * 16]).reshape(h // 16, 16, w // 16, 16).sum((1, 3))
        r, c = np.unravel_index(cells.argmax(), cells.shape)
        assert patches[c * rows + r].sum() == cells[r, c]


def test_lengths_from_the_manifest_match_the_features(tiny_corpus, corpus):
    spec = FeatureSpec(image=True, audio=True)
    fs = FeatureSource(str(tiny_corpus), spec)
    for ex in list(corpus)[:3]:
        feats, rows = fs.get(ex.key, "image")
        assert feats.shape[0] == fs.length(ex.key, "image") and rows > 0
        mel, none = fs.get(ex.key, "audio")
        assert none == 0 and mel.shape == (fs.length(ex.key, "audio"), spec.mel_bins * spec.mel_stack)
        assert np.isfinite(mel.astype(np.float32)).all()
    with pytest.raises(KeyError, match="not in the corpus"):
        fs.length("no-such-key", "image")


def test_log_mel_puts_a_tone_in_its_band():
    spec = FeatureSpec(audio=True)
    sr = spec.sample_rate
    t = np.arange(sr) / sr
    for freq in (220.0, 880.0):
        mel = log_mel(0.3 * np.sin(2 * np.pi * freq * t), sr, spec).astype(np.float32)
        assert mel.shape == (sr // spec.mel_hop + 1, spec.mel_bins)
        fb = mel_filterbank(sr, 2048, spec.mel_bins)
        centre = (fb * np.linspace(0, sr / 2, fb.shape[1])).sum(1)  # filters' centroid frequencies
        peak = centre[mel[5:-5].mean(0).argmax()]
        assert abs(peak - freq) < 0.1 * freq


def test_log_frequency_filters_resolve_semitones_where_mel_filters_cannot():
    """``mel_scale: log`` (folk AMT): neighbouring semitones of a low note peak in different filters, and the
    filters of one note's octave sit the same number of filters apart at every pitch."""
    mel_spec = FeatureSpec(audio=True)
    log_spec = FeatureSpec(audio=True, mel_bins=192, mel_scale="log", mel_fmin=50.0, mel_fmax=8000.0, mel_fft=4096)
    assert log_spec.key("audio") != mel_spec.key("audio")  # separate disk caches
    sr = log_spec.sample_rate
    t = np.arange(sr) / sr

    def peak(spec, freq):
        return int(log_mel(0.3 * np.sin(2 * np.pi * freq * t), sr, spec).astype(np.float32)[5:-5].mean(0).argmax())

    low = [110.0 * 2 ** (k / 12) for k in range(4)]  # A2, A#2, B2, C3
    assert len({peak(log_spec, f) for f in low}) == 4
    assert len({peak(mel_spec, f) for f in low}) < 4
    octave = [peak(log_spec, 2 * f) - peak(log_spec, f) for f in (110.0, 220.0, 440.0)]
    assert max(octave) - min(octave) <= 1
    fb = mel_filterbank(sr, 4096, 192, 50.0, 8000.0, "log")
    assert (fb.sum(1) > 0.99).all()  # every filter covers at least one STFT bin
    with pytest.raises(ValueError, match="scale"):
        mel_filterbank(sr, 4096, 192, 50.0, 8000.0, "bark")


def test_model_config_rejects_bad_filterbank_settings():
    from musicmoe.models.config import ModelConfig

    with pytest.raises(ValueError, match="mel_scale"):
        ModelConfig(audio_input="mel", mel_scale="cqt")
    with pytest.raises(ValueError, match="mel_fmin"):
        ModelConfig(audio_input="mel", mel_fmin=9000.0, mel_fmax=8000.0)
    with pytest.raises(ValueError, match="mel_fft"):
        ModelConfig(audio_input="mel", mel_fft=100)


def test_datamodule_serves_pixels_and_mel(tokens_and_codecs, tmp_path):
    from musicmoe.config import load_config
    from musicmoe.data.datamodule import TranslationDataModule
    tokens, codecs = tokens_and_codecs
    cfg = load_config(None, tiny_overrides(tokens, codecs, tmp_path) + [
        "model.max_src_len=1280", "model.max_tgt_len=1280", "model.image_input=pixels", "model.audio_input=mel",
        "model.stem_channels=[8,8,8]", "data.tasks.lmx2midi=0", "data.tasks.omr=1.0", "data.tasks.amt=1.0",
        "data.tasks.lmx2image=1.0", "data.batch_size=4"])
    dm = TranslationDataModule(cfg)
    dm.prepare()
    seen = set()
    for b in islice(iter(dm.train_dataloader()), 12):
        b.check(dm.vocab)
        if not {int(m) for m in b.src_modality} & {0, 3}:  # a batch of LMX sources only (lmx2image) has no features
            assert b.src_features is None
            continue
        assert b.src_features is not None and b.src_rows is not None
        for row in range(len(b)):
            src, tgt = int(b.src_modality[row]), int(b.tgt_modality[row])
            n = b.info.src_lengths[row] - 1
            if src in (0, 3):  # image / audio sources: features, PAD ids, then EOS
                seen.add(src)
                assert (b.src_tokens[row, :n, 0] == dm.vocab[src].pad_id).all()
                assert b.src_features[row, :n].abs().sum() > 0
                assert (b.src_rows[row] > 0) == (src == 0)
            if tgt == 0:  # image targets know their grid height
                assert b.tgt_rows[row] > 0
    assert seen == {0, 3}


def test_mel_disk_cache_is_filled_once_and_reused(tiny_corpus, tmp_path):
    import shutil

    from musicmoe.cli.main import main
    from musicmoe.data.features import precompute

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    spec = FeatureSpec(audio=True)
    assert main(["data", "features", str(corpus), "model.audio_input=mel", "--workers", "2", "--no-progress"]) == 0
    files = sorted((corpus / "features").rglob("*.npy"))
    assert len(files) == len(Corpus(corpus)) and files[0].parent.name == spec.key("audio")
    again = precompute(str(corpus), spec, workers=1, progress=False)
    assert again["computed"] == 0 and again["cached"] == len(files) and not again["failed"]
    key = files[0].stem
    cached = FeatureSource(str(corpus), spec).get(key, "audio")[0]
    fresh = FeatureSource(str(corpus), spec, disk_cache=False).get(key, "audio")[0]
    assert np.array_equal(cached, fresh)
    # a transform (e.g. a codec's reconstruction) changes the features and never touches the cache
    quiet = FeatureSource(str(corpus), spec, transform={"audio": lambda w, sr: (0.1 * w, sr)}).get(key, "audio")[0]
    assert not np.array_equal(quiet, fresh) and len(sorted((corpus / "features").rglob("*.npy"))) == len(files)
