"""Log-mel degradations (musicmoe/data/mel_degrade.py) on the real synthesized audio of the tiny corpus."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from musicmoe.data.features import FeatureSource, FeatureSpec, log_mel
from musicmoe.data.mel_degrade import LN10_DB, OPS, MelDegradeConfig, MelDegrader, degrade_mel
from musicmoe.data.shards import Corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared training.fixtures module
from training.fixtures import tiny_overrides  # noqa: E402

SPEC = FeatureSpec(audio=True, mel_bins=96, mel_stack=2)


@pytest.fixture(scope="module")
def mel(tiny_corpus) -> np.ndarray:
    key = Corpus(tiny_corpus).records[0]["key"]
    return FeatureSource(str(tiny_corpus), SPEC, disk_cache=False).get(key, "audio")[0]


def only(op: str, **strength) -> MelDegradeConfig:
    probs = {f"p_{o}": 0.0 for o in OPS}
    probs[f"p_{op}"] = 1.0
    return MelDegradeConfig(enabled=True, **probs, **strength)


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_the_frames_but_keeps_shape_and_dtype(mel, op):
    before = mel.copy()
    applied: list[str] = []
    out = degrade_mel(mel, only(op), np.random.default_rng(3), stack=2, applied=applied)
    assert applied == [op]
    assert out.shape == mel.shape and out.dtype == mel.dtype == np.float16
    assert np.isfinite(out.astype(np.float32)).all()
    assert not np.array_equal(out, mel)
    assert np.array_equal(mel, before)  # input untouched


def test_gain_and_equalization_are_the_drawn_amounts(mel):
    out = degrade_mel(mel, only("gain", gain_db=6.0), np.random.default_rng(0), stack=2).astype(np.float32)
    shift = out - mel.astype(np.float32)
    assert np.ptp(shift) < 0.05 and 0 < abs(shift.mean()) <= 6.0 * LN10_DB + 0.01  # one level change everywhere
    eq = degrade_mel(mel, only("eq", eq_db=9.0), np.random.default_rng(0), stack=2).astype(np.float32)
    curve = (eq - mel.astype(np.float32)).reshape(-1, SPEC.mel_bins)
    assert np.ptp(curve, axis=0).max() < 0.05  # the same curve on every frame, stack halves included
    assert abs(np.abs(curve[0]).max() - 9.0 * LN10_DB) < 0.05


def test_noise_raises_the_quiet_cells_most(mel):
    """A noise floor at 10 dB SNR fills the silence between notes and barely moves the loud cells."""
    out = degrade_mel(mel, only("noise", snr_db=[10.0, 10.0]), np.random.default_rng(1), stack=2).astype(np.float32)
    clean = mel.astype(np.float32)
    loud, quiet = clean > np.quantile(clean, 0.95), clean < np.quantile(clean, 0.2)
    assert (out - clean)[quiet].mean() > 5 * abs((out - clean)[loud].mean())


def test_smearing_a_tone_keeps_its_peak_bin():
    """A 440 Hz tone smeared over frequency still peaks in its own filter, with more energy beside it."""
    sr = 24000
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(sr) / sr).astype(np.float32)
    frames = log_mel(wave, sr, SPEC)
    out = degrade_mel(frames, only("smear_freq", smear_freq_bins=[2.0, 2.0]), np.random.default_rng(0))
    mid = len(frames) // 2
    peak = int(frames[mid].astype(np.float32).argmax())
    assert int(out[mid].astype(np.float32).argmax()) == peak
    assert out[mid, peak + 3] > frames[mid, peak + 3]


def test_seeded_and_inactive(mel):
    cfg = MelDegradeConfig(enabled=True)
    a = degrade_mel(mel, cfg, np.random.default_rng(7), stack=2)
    assert np.array_equal(a, degrade_mel(mel, cfg, np.random.default_rng(7), stack=2))
    assert not np.array_equal(a, degrade_mel(mel, cfg, np.random.default_rng(8), stack=2))
    off = MelDegradeConfig()
    assert not off.active and MelDegrader(off)(mel, np.random.default_rng(0)) is mel
    assert np.array_equal(degrade_mel(mel, off, np.random.default_rng(0), stack=2), mel)


def test_bad_settings_name_the_key(mel):
    with pytest.raises(ValueError, match="audio_degrade.p_noise"):
        MelDegradeConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="audio_degrade.snr_db"):
        MelDegradeConfig(snr_db=[40.0, 10.0])
    with pytest.raises(ValueError, match=r"\(T, bins \* 5\)"):
        degrade_mel(mel, MelDegradeConfig(enabled=True), np.random.default_rng(0), stack=5)


def test_datamodule_degrades_mel_sources_per_draw(tokens_and_codecs, tmp_path):
    """``data.audio_degrade.enabled`` gives every training draw of an AMT example a new degradation of its log-mel
    frames (same seed, same frames); a model that reads audio codes is told the option needs mel frames."""
    from musicmoe.config import load_config
    from musicmoe.data.datamodule import TranslationDataModule

    tokens, codecs = tokens_and_codecs
    base = tiny_overrides(tokens, codecs, tmp_path) + ["model.max_src_len=1280", "data.tasks.lmx2midi=0",
                                                       "data.tasks.omr=0", "data.tasks.amt=1.0"]
    dm = TranslationDataModule(load_config(None, base + ["model.audio_input=mel", "data.audio_degrade.enabled=true"]))
    dm.prepare()
    loader = dm.train_dataloader()
    ds = loader.dataset
    task, item, _ = dm.sampler.batch(0)[0]
    clean = ds.views[0].source(ds.tokens[0][item], "audio", "midi")["src_features"]
    a, b, c = (ds[(task, item, seed)]["src_features"] for seed in (11, 11, 12))
    assert a.shape == clean.shape and np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, clean)
    next(iter(loader)).check(dm.vocab)
    codes = TranslationDataModule(load_config(None, base + ["data.audio_degrade.enabled=true"]))
    codes.prepare()
    with pytest.raises(ValueError, match="model.audio_input=mel"):
        codes.train_dataloader()


def test_envelope_noise_follows_the_music(mel):
    """Noise shaped by the blurred power: it lands beside the loud cells (around the notes), not in the silence far
    from them, unlike the stationary noise floor."""
    clean = mel.astype(np.float32)
    out = degrade_mel(mel, only("envelope_noise", envelope_snr_db=[10.0, 10.0]), np.random.default_rng(2),
                      stack=2).astype(np.float32)
    floor = degrade_mel(mel, only("noise", snr_db=[10.0, 10.0]), np.random.default_rng(2), stack=2).astype(np.float32)
    quiet = clean < np.quantile(clean, 0.2)
    assert (out - clean)[quiet].mean() < 0.5 * (floor - clean)[quiet].mean()
    assert (out - clean).mean() > 0.05
