"""Note F1 on a real chorale's MIDI, audio distances on tones of known pitch, and how the audio metrics score
failed generations (on the chorale rendered to audio)."""

import copy
import io
import math
from types import SimpleNamespace

import music21
import numpy as np
import pretty_midi
import pytest
import torch

from musicmoe.metrics import ChromaSimilarity, MelDistance, NoteF1, TokenAccuracy, chroma, multires_log_mel_distance
from musicmoe.metrics.audio import MIN_SAMPLES
from musicmoe.training.evaluate import METRICS, Evaluator


@pytest.fixture(scope="module")
def chorale_midi():
    score = music21.corpus.parse("bach/bwv66.6")
    mf = music21.midi.translate.streamToMidiFile(score)
    return pretty_midi.PrettyMIDI(io.BytesIO(mf.writestr()))


def _shifted(pm, dt):
    out = copy.deepcopy(pm)
    for inst in out.instruments:
        for n in inst.notes:
            n.start += dt
            n.end += dt
    return out


def test_note_f1_tolerances(chorale_midi):
    n_notes = sum(len(i.notes) for i in chorale_midi.instruments)
    assert n_notes > 100
    m = NoteF1()
    m.update([chorale_midi], [chorale_midi])
    assert float(m.compute()["onset_f1"]) == 1.0
    m = NoteF1()
    m.update([_shifted(chorale_midi, 0.03)], [chorale_midi])  # within the 50 ms onset tolerance
    scores = m.compute()
    assert float(scores["onset_f1"]) == 1.0 and float(scores["onset_offset_f1"]) == 1.0
    m = NoteF1()
    m.update([_shifted(chorale_midi, 0.08)], [chorale_midi])  # outside it
    assert float(m.compute()["onset_f1"]) == 0.0


def test_note_f1_counts_missing_notes(chorale_midi):
    half = copy.deepcopy(chorale_midi)
    for inst in half.instruments:
        inst.notes = inst.notes[::2]
    m = NoteF1()
    m.update([half], [chorale_midi])
    s = m.compute()
    assert float(s["onset_precision"]) == 1.0
    assert 0.45 < float(s["onset_recall"]) < 0.55
    empty = pretty_midi.PrettyMIDI()
    m.update([empty], [chorale_midi])  # nothing predicted: recall drops further, no crash
    assert float(m.compute()["onset_recall"]) < 0.3


def _tone(freqs, sr=24000, seconds=1.0):
    t = np.arange(int(sr * seconds)) / sr
    return sum(np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32) / len(freqs)


def test_chroma_peaks_at_pitch_class():
    c = chroma(torch.from_numpy(_tone([261.63])), 24000)  # C4
    assert int(c.sum(1).argmax()) == 0
    a = chroma(torch.from_numpy(_tone([440.0])), 24000)  # A4
    assert int(a.sum(1).argmax()) == 9


def test_audio_metrics_rank_similar_above_dissimilar():
    c_major = _tone([261.63, 329.63, 392.0])
    c_major_oct = _tone([523.25, 659.25, 783.99])
    f_sharp = _tone([369.99, 466.16, 554.37])
    sim = ChromaSimilarity()
    sim.update([c_major], [c_major])
    assert float(sim.compute()) > 0.99
    close, far = ChromaSimilarity(), ChromaSimilarity()
    close.update([c_major_oct], [c_major])
    far.update([f_sharp], [c_major])
    assert float(close.compute()) > 0.8 > float(far.compute())
    same, diff = MelDistance(), MelDistance()
    same.update([c_major], [c_major])
    diff.update([f_sharp], [c_major])
    assert float(same.compute()) == 0.0 and float(diff.compute()) > 0.5


def test_token_accuracy_counts_length_mismatch():
    m = TokenAccuracy()
    m.update([np.array([[1, 2, 3], [4, 5, 6]])], [np.array([[1, 2, 3, 7], [4, 0, 6, 7]])])
    assert abs(float(m.compute()) - 5 / 8) < 1e-12


SR = 24000


@pytest.fixture(scope="module")
def chorale_audio(chorale_midi):
    """The chorale's first 3 s and the next 3 s, rendered with sine waves (float32 in [-1, 1])."""
    wave = chorale_midi.synthesize(fs=SR).astype(np.float32)
    return wave[: 3 * SR], wave[3 * SR : 6 * SR]


def _failures(ref):
    return {"empty": np.zeros(0, np.float32), "too short": ref[: MIN_SAMPLES - 1].copy(), "none": None,
            "non-finite": np.where(np.arange(ref.size) == 100, np.nan, ref).astype(np.float32)}


def test_failed_generations_are_counted_and_get_the_worst_score(chorale_audio):
    ref, other = chorale_audio
    silence = float(multires_log_mel_distance(torch.zeros(ref.size), torch.from_numpy(ref), SR))
    assert silence > 1.0
    for name, bad in _failures(ref).items():
        mel, sim = MelDistance(SR), ChromaSimilarity(SR)
        mel.update([bad], [ref])
        sim.update([bad], [ref])
        assert int(mel.failed) == int(sim.failed) == mel.failures() == 1, name
        assert int(mel.count) == int(sim.count) == 1 and int(mel.skipped) == 0, name  # scored, not skipped
        assert math.isclose(float(mel.compute()), silence, rel_tol=1e-6), name  # the score of silence
        assert float(sim.compute()) == 0.0, name  # the minimum of chroma similarity
    # a long silent generation is no failure: it is scored, and as badly as a failure
    mel = MelDistance(SR)
    mel.update([np.zeros_like(ref)], [ref])
    assert int(mel.failed) == 0 and math.isclose(float(mel.compute()), silence, rel_tol=1e-6)


def test_good_generations_are_unaffected_and_failures_pull_the_mean(chorale_audio):
    ref, other = chorale_audio
    good = 0.8 * ref  # the right music, a little quieter
    mel, sim = MelDistance(SR), ChromaSimilarity(SR)
    mel.update([good], [ref])
    sim.update([good], [ref])
    good_mel, good_sim = float(mel.compute()), float(sim.compute())
    assert int(mel.failed) == int(sim.failed) == 0
    direct = multires_log_mel_distance(torch.from_numpy(good), torch.from_numpy(ref), SR)
    assert good_mel == pytest.approx(float(direct))
    assert good_sim > 0.95
    wrong = MelDistance(SR)
    wrong.update([other], [ref])
    silence = float(multires_log_mel_distance(torch.zeros(ref.size), torch.from_numpy(ref), SR))
    assert good_mel < float(wrong.compute()) < silence  # good < other music < a failure
    mel.update([ref[:1000]], [ref])
    sim.update([np.zeros(0, np.float32)], [ref])
    assert float(mel.compute()) == pytest.approx((good_mel + silence) / 2)
    assert float(sim.compute()) == pytest.approx(good_sim / 2)
    assert int(mel.failed) == int(sim.failed) == 1 and int(mel.count) == int(sim.count) == 2


def test_all_failed_batch_gives_the_worst_value_not_nan(chorale_audio):
    ref, other = chorale_audio
    refs = [ref, other, ref]
    bad = [np.zeros(0, np.float32), other[:MIN_SAMPLES - 1].copy(), None]
    mel, sim = MelDistance(SR), ChromaSimilarity(SR)
    mel.update(bad, refs)
    sim.update(bad, refs)
    silences = [float(multires_log_mel_distance(torch.zeros(r.size), torch.from_numpy(r), SR)) for r in refs]
    assert float(mel.compute()) == pytest.approx(np.mean(silences)) and float(sim.compute()) == 0.0
    assert mel.failures() == sim.failures() == 3


def test_failed_count_is_summed_like_the_other_states(chorale_audio):
    ref, _ = chorale_audio
    a, b = MelDistance(SR), MelDistance(SR)  # two ranks' metrics, merged with their sum reductions
    a.update([ref, np.zeros(0, np.float32)], [ref, ref])
    b.update([ref[:10]], [ref])
    a.merge_state(b)
    assert int(a.failed) == 2 and int(a.count) == 3


def test_unscorable_reference_is_skipped_and_counted_not_a_model_failure(chorale_audio):
    ref, _ = chorale_audio
    mel, sim = MelDistance(SR), ChromaSimilarity(SR)
    for m in (mel, sim):
        m.update([ref, ref], [ref[:100], np.zeros_like(ref)])  # a too-short reference; a silent one
    assert int(mel.skipped) == 1 and int(mel.count) == 1  # a silent reference still has a log-mel distance
    assert int(sim.skipped) == 2 and math.isnan(float(sim.compute()))  # chroma of silence is undefined
    assert int(mel.failed) == int(sim.failed) == 0
    empty = MelDistance(SR)
    empty.update([None], [ref[:100]])  # the generation failed even though the example cannot be scored
    assert int(empty.failed) == 1 and int(empty.skipped) == 1 and math.isnan(float(empty.compute()))


def test_evaluator_reports_failed_audio_generations(chorale_audio):
    ref, other = chorale_audio
    assert "failed" in METRICS["audio"]
    ev = Evaluator.__new__(Evaluator)  # _main_scores reads only the audio codec's sample rate
    ev.codecs = SimpleNamespace(audio=SimpleNamespace(sample_rate=SR))
    scores = ev._main_scores("audio", [ref, np.zeros(0, np.float32), other[:100]], [ref, other, other])
    assert scores["failed"] == 2.0
    assert np.isfinite(scores["mel_distance"]) and 0 < scores["chroma_similarity"] < 0.5
