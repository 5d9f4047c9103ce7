"""Note F1 on a real chorale's MIDI, and audio distances on tones of known pitch."""

import copy
import io

import music21
import numpy as np
import pretty_midi
import pytest
import torch

from musicmoe.metrics import ChromaSimilarity, MelDistance, NoteF1, TokenAccuracy, chroma


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
