"""SoundFont synthesis (TinySoundFont + TimGM6mb) of a real chorale excerpt and small MIDI made here."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from musicmoe.codecs.midi.music21_io import corpus_pretty_midi
from musicmoe.data.synth import default_soundfont, synthesize

SR = 24000
HOP = 240  # 10 ms frames


def _excerpt(pm: pretty_midi.PrettyMIDI, end: float) -> pretty_midi.PrettyMIDI:
    out = pretty_midi.PrettyMIDI()
    for inst in pm.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        new.notes = [
            pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, end)) for n in inst.notes if n.start < end
        ]
        out.instruments.append(new)
    return out


def _one_note(start: float, end: float, pitch: int = 60, program: int = 0, drum: bool = False):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=drum)
    inst.notes.append(pretty_midi.Note(100, pitch, start, end))
    pm.instruments.append(inst)
    return pm


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // HOP
    return np.sqrt((audio[: n * HOP].reshape(n, HOP) ** 2).mean(axis=1))


@pytest.fixture(scope="module")
def chorale() -> pretty_midi.PrettyMIDI:
    return _excerpt(corpus_pretty_midi("bach/bwv66.6"), 8.0)


@pytest.fixture(scope="module")
def chorale_audio(chorale) -> np.ndarray:
    return synthesize(chorale, SR)


def test_default_soundfont_ships_with_pretty_midi():
    assert default_soundfont().is_file() and default_soundfont().name == "TimGM6mb.sf2"


def test_chorale_length_level_and_determinism(chorale, chorale_audio):
    audio = chorale_audio
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SR - chorale.get_end_time()) <= 0.05
    assert len(audio) == round(chorale.get_end_time() * SR)
    assert np.sqrt(np.mean(audio**2)) > 0.02  # not silent
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=1e-4)  # peak-normalised to -1 dBFS
    assert np.array_equal(audio, synthesize(chorale, SR))
    # the last 5 ms fade out (the release is cut at the MIDI end)
    assert np.abs(audio[-3:]).max() < 0.05 * np.abs(audio).max()


def test_energy_rises_at_note_onsets(chorale, chorale_audio):
    rms = _frame_rms(chorale_audio) + 1e-5
    novelty = np.maximum(0.0, np.diff(np.log(rms), prepend=np.log(rms[0])))
    onsets = np.zeros_like(novelty)
    for inst in chorale.instruments:
        for n in inst.notes:
            onsets[min(len(onsets) - 1, int(round(n.start * SR / HOP)))] += 1

    def corr(lag: int) -> float:
        return float(np.corrcoef(novelty, np.roll(onsets, lag))[0, 1])

    aligned = max(corr(0), corr(1))  # the onset falls in its frame or raises the next one
    elsewhere = max(abs(corr(lag)) for lag in [*range(-30, -2), *range(3, 31)])
    assert aligned > 0.3, aligned
    assert aligned > 3 * elsewhere, (aligned, elsewhere)


def test_single_note_starts_on_time_and_tail():
    pm = _one_note(1.0, 1.5)
    audio = synthesize(pm, SR)
    assert len(audio) == int(1.5 * SR)
    assert np.abs(audio[: int(0.999 * SR)]).max() == 0.0
    rms = _frame_rms(audio)
    first = int(np.argmax(rms > 0.1 * rms.max()))
    assert abs(first * HOP / SR - 1.0) <= 0.02
    longer = synthesize(pm, SR, tail=0.5)
    assert len(longer) == 2 * SR
    assert np.sqrt(np.mean(longer[int(1.55 * SR) :] ** 2)) > 1e-4  # the release rings into the tail
    assert len(synthesize(pretty_midi.PrettyMIDI(), SR)) == 0
    assert np.array_equal(synthesize(pretty_midi.PrettyMIDI(), SR, tail=0.2), np.zeros(int(0.2 * SR), np.float32))


def test_fixed_gain_and_peak_safety(chorale):
    quiet = synthesize(chorale, SR, gain_db=-20.0)
    quieter = synthesize(chorale, SR, gain_db=-26.0)
    assert np.abs(quiet).max() < 1.0
    np.testing.assert_allclose(quieter, quiet * 10 ** (-6 / 20), atol=1e-6)
    loud = synthesize(chorale, SR, gain_db=40.0)
    assert np.abs(loud).max() <= 1.0 and np.abs(loud).max() == pytest.approx(1.0, abs=1e-5)


def test_programs_and_drums_sound_different():
    piano = synthesize(_one_note(0.0, 0.5, pitch=38), SR, gain_db=0.0)
    violin = synthesize(_one_note(0.0, 0.5, pitch=38, program=40), SR, gain_db=0.0)
    snare = synthesize(_one_note(0.0, 0.5, pitch=38, drum=True), SR, gain_db=0.0)
    for a in (piano, violin, snare):
        assert np.sqrt(np.mean(a**2)) > 1e-3
    for a, b in ((piano, violin), (piano, snare), (violin, snare)):
        assert np.corrcoef(a, b)[0, 1] < 0.9


def test_more_instruments_than_midi_channels():
    pm = pretty_midi.PrettyMIDI()
    for k in range(20):  # 20 parts, one note each: channels beyond 16 are used
        inst = pretty_midi.Instrument(program=(0, 6, 40, 73)[k % 4])
        inst.notes.append(pretty_midi.Note(100, 48 + k, 0.2 * k, 0.2 * k + 0.15))
        pm.instruments.append(inst)
    full = synthesize(pm, SR, gain_db=0.0)
    assert len(full) == round(pm.get_end_time() * SR)
    for k in range(20):  # each part's own contribution (the synth is linear): present and where its note is
        rest = pretty_midi.PrettyMIDI()
        rest.instruments = [inst for j, inst in enumerate(pm.instruments) if j != k]
        others = synthesize(rest, SR, gain_db=0.0, tail=pm.get_end_time() - rest.get_end_time())
        part = full - others
        rms = _frame_rms(part)
        assert rms.max() > 0.005, k
        assert abs(int(np.argmax(rms > 0.1 * rms.max())) - 20 * k) <= 2, k


def test_bad_soundfont_errors_name_the_file(tmp_path):
    pm = _one_note(0.0, 0.2)
    missing = tmp_path / "nothere.sf2"
    with pytest.raises(FileNotFoundError, match="nothere.sf2"):
        synthesize(pm, SR, soundfont=missing)
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"RIFF" + bytes(1000))
    with pytest.raises(ValueError, match="garbage.sf2"):
        synthesize(pm, SR, soundfont=str(garbage))
    with pytest.raises(ValueError, match="tail"):
        synthesize(pm, SR, tail=-1.0)
