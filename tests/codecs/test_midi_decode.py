"""Tolerant decoding: hand-made malformed sequences (each repair counted) and a fuzz test."""

from __future__ import annotations

import io

import numpy as np
import pretty_midi
import pytest

from musicmoe.codecs.midi import MidiCodec, MidiCodecConfig
from musicmoe.codecs.midi.music21_io import corpus_pretty_midi

CODEC = MidiCodec()
V = CODEC.vocab


def ev(*events: str) -> list[int]:
    """``ev("tie", "shift:10", "velocity:1", "pitch:60")`` -> ids."""
    out = []
    for e in events:
        name, _, value = e.partition(":")
        out.append(V.encode(name, int(value) if value else 0))
    return out


def test_empty_and_tie_only():
    for ids in ([], ev("tie"), ev("eos")):
        pm, rep = CODEC.decode_with_report(ids)
        assert pm.instruments == [] and rep.notes == 0
    assert CODEC.decode_with_report([])[1].errors == 0
    assert CODEC.decode([], duration=2.0).instruments == []


def test_well_formed_sequence():
    ids = ev("tie", "program:40", "velocity:1", "pitch:60", "shift:50", "velocity:0", "pitch:60", "program:0",
             "velocity:1", "drum:36")
    notes, rep = CODEC.decode_notes(ids)
    assert rep.errors == 0
    assert [(n.start, n.end, n.pitch, n.program, n.is_drum) for n in notes] == [
        (0, 50, 60, 40, False), (50, 60, 36, 0, True)
    ]


@pytest.mark.parametrize(
    "events, field, count, n_notes",
    [
        (("tie", "velocity:0", "pitch:60", "shift:10", "velocity:1", "pitch:61", "shift:5", "velocity:0", "pitch:61"),
         "off_without_on", 1, 1),
        (("tie", "pitch:60", "shift:10", "velocity:0", "pitch:60"), "pitch_without_velocity", 1, 1),
        (("tie", "drum:36"), "pitch_without_velocity", 1, 1),
        (("tie", "velocity:1", "pitch:60", "shift:10", "pitch:60", "shift:10", "velocity:0", "pitch:60"),
         "on_while_active", 1, 2),
        (("tie", "velocity:1", "pitch:60", "velocity:0", "pitch:60"), "zero_length", 1, 0),
        (("tie", "velocity:1", "pitch:60", "shift:10", "velocity:0", "pitch:60", "eos", "pitch:62", "shift:3"),
         "after_eos", 2, 1),
        (("tie", "velocity:1", "pitch:60", "tie", "shift:10", "velocity:0", "pitch:60"), "stray_tie", 1, 1),
        (("velocity:1", "pitch:60", "shift:10", "velocity:0", "pitch:60"), "missing_tie", 1, 1),
    ],
)
def test_each_repair_is_counted(events, field, count, n_notes):
    notes, rep = CODEC.decode_notes(ev(*events))
    assert getattr(rep, field) == count, rep
    assert rep.errors == count
    assert len(notes) == n_notes
    assert all(n.end > n.start for n in notes)


def test_invalid_ids_are_skipped():
    ids = [-1, 10**12, CODEC.vocab_size, "x", None, 3.5] + ev("tie", "velocity:1", "pitch:60", "shift:20")
    notes, rep = CODEC.decode_notes(ids)
    assert rep.invalid_ids == 6 and len(notes) == 1
    assert (notes[0].start, notes[0].end) == (0, 20) and rep.unclosed == 1  # closed at the last time step
    # numpy ids (what a model emits) work too
    assert CODEC.decode_notes(np.array(ev("tie", "velocity:1", "pitch:60", "shift:20")))[0] == notes


def test_duration_closes_and_clips():
    ids = ev("tie", "velocity:1", "pitch:60", "shift:100", "shift:100", "pitch:62", "shift:100", "pitch:64")
    notes, rep = CODEC.decode_notes(ids, duration=2.5)
    assert [(n.pitch, n.start, n.end) for n in notes] == [(60, 0, 250), (62, 200, 250)]
    assert rep.after_duration == 1 and rep.unclosed == 2
    # a tie section without a preceding window: the notes start at 0
    notes, rep = CODEC.decode_notes(ev("program:5", "pitch:70", "tie", "shift:30"), duration=1.0)
    assert [(n.pitch, n.program, n.start, n.end) for n in notes] == [(70, 5, 0, 100)]
    assert rep.tied_in == 1 and rep.errors == 0


def test_windows_tie_mismatch():
    w1 = ev("tie", "velocity:1", "pitch:60", "pitch:64", "shift:50")
    w2 = ev("pitch:64", "pitch:67", "tie", "shift:20", "velocity:0", "pitch:64", "pitch:67")
    pm, rep = CODEC.decode_windows([w1, w2], [0.0, 1.0])
    got = sorted((n.pitch, round(n.start, 2), round(n.end, 2)) for i in pm.instruments for n in i.notes)
    # 60 is not continued -> ends at the window start; 64 continues; 67 appears from nowhere -> starts at 1.0
    assert got == [(60, 0.0, 1.0), (64, 0.0, 1.2), (67, 1.0, 1.2)]
    assert rep.tie_closed == 1 and rep.tied_in == 1 and rep.errors == 0
    with pytest.raises(ValueError, match="start times"):
        CODEC.decode_windows([w1, w2], [0.0])


def _check(pm: pretty_midi.PrettyMIDI, duration: float | None, write: bool = True) -> None:
    for inst in pm.instruments:
        assert 0 <= inst.program < 128
        for n in inst.notes:
            assert 0 <= n.pitch < 128 and 0 <= n.start < n.end and 1 <= n.velocity <= 127
            if duration is not None:
                assert n.end <= duration + 0.005 + 1e-9  # duration is rounded to 10 ms steps
    if write:
        pm.write(io.BytesIO())  # a writable MIDI file


@pytest.mark.parametrize("config", [MidiCodecConfig(), MidiCodecConfig(velocity_bins=16, max_shift_steps=20)])
def test_fuzz_never_raises(config):
    codec = MidiCodec(config)
    rng = np.random.default_rng(0)
    real = codec.encode(corpus_pretty_midi("bach/bwv66.6"))
    size = codec.vocab_size
    total_errors = 0
    for trial in range(300):
        kind = trial % 4
        if kind == 0:  # uniform noise, including ids outside the vocabulary
            ids = rng.integers(-3, size + 4, size=int(rng.integers(0, 400))).tolist()
        elif kind == 1:  # a real sequence cut anywhere
            ids = real[int(rng.integers(0, len(real))):][: int(rng.integers(0, len(real)))]
        elif kind == 2:  # a real sequence with 5% of its tokens replaced, dropped or duplicated
            ids = []
            for t in real:
                r = rng.random()
                if r < 0.02:
                    ids.append(int(rng.integers(0, size)))
                elif r < 0.04:
                    continue
                elif r < 0.05:
                    ids += [t, t]
                else:
                    ids.append(t)
        else:  # noise biased to the structural tokens (ties, eos, programs, velocities)
            pool = [codec.tie_id, codec.eos_id, *range(*codec.vocab.id_range("velocity")),
                    *range(*codec.vocab.id_range("program"))[:3], *range(*codec.vocab.id_range("pitch"))[60:64]]
            ids = rng.choice(pool, size=int(rng.integers(0, 100))).tolist()
        duration = None if trial % 3 else float(rng.uniform(0.01, 30.0))
        pm, rep = codec.decode_with_report(ids, duration=duration)
        _check(pm, duration, write=trial % 10 == 0)
        total_errors += rep.errors
        half = len(ids) // 2
        pm2, _ = codec.decode_windows([ids[:half], ids[half:]], 5.0, duration=duration)
        _check(pm2, duration, write=False)
    assert total_errors > 0
