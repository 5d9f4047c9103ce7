"""MIDI event codec on real pieces of music21's bundled corpus (exported by music21, read by pretty_midi)."""

from __future__ import annotations

import io
from functools import lru_cache

import pretty_midi
import pytest

from musicmoe.codecs.midi import MidiCodec, MidiCodecConfig, Note
from musicmoe.codecs.midi.music21_io import corpus_pretty_midi

# two chorales (4 voices on program 0, many unisons) and a string-quartet movement (programs 40, 41, 42)
PIECES = ["bach/bwv66.6", "bach/bwv269", "mozart/k458/movement3"]


@lru_cache(maxsize=None)
def _load(name: str) -> pretty_midi.PrettyMIDI:  # parsed once per session; tests never mutate it
    return corpus_pretty_midi(name)


@pytest.fixture(scope="module", params=PIECES)
def piece(request) -> pretty_midi.PrettyMIDI:
    return _load(request.param)


@pytest.fixture(scope="module")
def chorale() -> pretty_midi.PrettyMIDI:
    return _load("bach/bwv66.6")


def _all_notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[bool, int, int, float, float]]:
    return [(i.is_drum, i.program, n.pitch, n.start, n.end) for i in pm.instruments for n in i.notes]


def _assert_onsets_kept(original: pretty_midi.PrettyMIDI, decoded: pretty_midi.PrettyMIDI, tol: float = 0.01):
    """Every original note has a decoded note of the same program and pitch starting within ``tol`` s."""
    onsets: dict[tuple[bool, int, int], list[float]] = {}
    for drum, prog, pitch, start, _ in _all_notes(decoded):
        onsets.setdefault((drum, prog, pitch), []).append(start)
    missing = []
    for drum, prog, pitch, start, _ in _all_notes(original):
        cands = onsets.get((drum, 0 if drum else prog, pitch), [])
        if not any(abs(s - start) <= tol for s in cands):
            missing.append((prog, pitch, start))
    assert not missing, f"{len(missing)} notes lost, e.g. {missing[:5]}"


def _instrument(program: int, notes) -> pretty_midi.Instrument:
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in notes]
    return inst


# ---------------------------------------------------------------- config and vocabulary
def test_config_validation_names_the_key():
    for kwargs, key in [
        ({"steps_per_second": 0}, "steps_per_second"),
        ({"max_shift_steps": 0}, "max_shift_steps"),
        ({"velocity_bins": 0}, "velocity_bins"),
        ({"velocity_bins": 128}, "velocity_bins"),
        ({"program_granularity": "coarse"}, "program_granularity"),
        ({"drum_duration": 0.0}, "drum_duration"),
        ({"drum_duration": 0.001}, "drum_duration"),
    ]:
        with pytest.raises(ValueError, match=key):
            MidiCodecConfig(**kwargs)


def test_vocabulary_layout():
    codec = MidiCodec()
    v = codec.vocab
    assert v.names == ("shift", "pitch", "velocity", "tie", "program", "drum", "eos")
    assert codec.vocab_size == 100 + 128 + 2 + 1 + 128 + 128 + 1 == 488
    assert v.id_range("shift") == (0, 100) and v.id_range("pitch") == (100, 228)
    for i in range(codec.vocab_size):  # every id decodes and re-encodes to itself
        assert v.encode(*v.decode(i)) == i
    assert codec.event_names([0, 99, 160, 229, codec.tie_id, codec.eos_id, -1, 488]) == [
        "shift:1", "shift:100", "pitch:60", "velocity:1", "tie", "eos", "invalid:-1", "invalid:488"
    ]
    big = MidiCodec(MidiCodecConfig(max_shift_steps=50, velocity_bins=32))
    assert big.vocab_size == 50 + 128 + 33 + 1 + 128 + 128 + 1
    with pytest.raises(ValueError):
        v.encode("pitch", 128)
    with pytest.raises(KeyError, match="velocityy"):
        v.encode("velocityy", 1)


# ---------------------------------------------------------------- round trips on real pieces
def test_round_trip_whole_piece(piece):
    codec = MidiCodec()
    ids = codec.encode(piece)
    assert ids[0] == codec.tie_id  # empty tie section at the start of a piece
    assert all(0 <= i < codec.vocab_size for i in ids)
    notes, report = codec.decode_notes(ids)
    assert report.errors == 0 and report.unclosed == 0
    assert notes == codec.notes(piece)  # canonical notes come back exactly
    decoded = codec.decode(ids)
    _assert_onsets_kept(piece, decoded)
    assert {i.program for i in decoded.instruments} == {i.program for i in piece.instruments}
    # the decoded PrettyMIDI survives a MIDI file round trip (tick quantisation keeps 10 ms)
    buf = io.BytesIO()
    decoded.write(buf)
    _assert_onsets_kept(piece, pretty_midi.PrettyMIDI(io.BytesIO(buf.getvalue())))


def test_quartet_keeps_programs():
    pm = _load("mozart/k458/movement3")
    codec = MidiCodec()
    decoded = codec.decode(codec.encode(pm))
    by_prog = {i.program: len(i.notes) for i in decoded.instruments}
    assert set(by_prog) == {40, 41, 42}
    for inst in pm.instruments[2:]:  # viola (41) and cello (42) are alone on their programs: no merging
        assert by_prog[inst.program] == len(inst.notes)


@pytest.mark.parametrize("window", [2.0, 0.73])
def test_windows_with_ties_reconstruct_piece(piece, window):
    codec = MidiCodec()
    windows = codec.encode_windows(piece, window)
    canonical = codec.notes(piece)
    w = codec.seconds_to_steps(window)
    crossing = sum(1 for n in canonical if n.start // w != (n.end - 1) // w)
    assert crossing > 10  # the test exercises ties
    tied = sum(ids.index(codec.tie_id) > 0 for ids in windows)
    assert tied > 0
    decoded, report = codec.decode_windows(windows, window)
    assert report.errors == 0 and report.tied_in == 0 and report.tie_closed == 0
    assert codec.notes(decoded) == canonical
    _assert_onsets_kept(piece, decoded)


def test_single_window_matches_clipped_notes(chorale):
    codec = MidiCodec()
    start, end = 3.37, 7.12
    ids = codec.encode(chorale, start, end)
    s, e = codec.seconds_to_steps(start), codec.seconds_to_steps(end)
    expected = sorted(
        (
            Note(max(n.start, s) - s, min(n.end, e) - s, n.pitch, n.program, n.is_drum, n.velocity)
            for n in codec.notes(chorale)
            if n.start < e and n.end > s
        ),
        key=lambda n: (n.start, n.is_drum, n.program, n.pitch),
    )
    notes, report = codec.decode_notes(ids, duration=end - start)
    assert report.errors == 0
    assert report.tied_in == sum(1 for n in codec.notes(chorale) if n.start < s < n.end) > 0
    assert report.unclosed == sum(1 for n in codec.notes(chorale) if n.start < e < n.end) > 0
    assert notes == expected
    # the tie section lists the sounding notes by program then pitch, then the tie token
    names = codec.event_names(ids)
    tie_at = names.index("tie")
    assert names[0] == "program:0" and all(x.startswith("pitch:") for x in names[1:tie_at])


def test_long_gaps_use_repeated_shifts(chorale):
    moved = pretty_midi.PrettyMIDI()
    for inst in chorale.instruments:
        new = pretty_midi.Instrument(program=inst.program, name=inst.name)
        for n in inst.notes:  # a 3.456 s rest before the music, another one in the middle
            gap = 3.456 + (2.5 if n.start >= 10.0 else 0.0)
            new.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start + gap, n.end + gap))
        moved.instruments.append(new)
    for max_shift in (100, 7):
        codec = MidiCodec(MidiCodecConfig(max_shift_steps=max_shift))
        ids = codec.encode(moved)
        names = codec.event_names(ids)
        lead = codec.seconds_to_steps(3.456)  # 346 steps of silence before the first note
        assert names[1 : 1 + lead // max_shift] == [f"shift:{max_shift}"] * (lead // max_shift)
        assert names[1 + lead // max_shift] == f"shift:{lead % max_shift}"
        notes, report = codec.decode_notes(ids)
        assert report.errors == 0 and notes == codec.notes(moved)
        _assert_onsets_kept(moved, codec.decode(ids))


def test_velocity_bins(chorale):
    pm = pretty_midi.PrettyMIDI()
    k = 0
    for inst in chorale.instruments:
        new = pretty_midi.Instrument(program=inst.program)
        for n in inst.notes:
            k += 1
            new.notes.append(pretty_midi.Note(1 + (k * 37) % 127, n.pitch, n.start, n.end))
        pm.instruments.append(new)
    exact = MidiCodec(MidiCodecConfig(velocity_bins=127))
    decoded = exact.decode(exact.encode(pm))
    key = lambda n: (n.pitch, round(n.start, 2))  # noqa: E731
    vel = {key(n): n.velocity for i in decoded.instruments for n in i.notes}
    orig = {key(n): n.velocity for i in pm.instruments for n in i.notes}
    same = sum(vel.get(k) == v for k, v in orig.items())
    assert same >= 0.9 * len(orig)  # unisons merge into one note (one velocity); everything else is exact
    eight = MidiCodec(MidiCodecConfig(velocity_bins=8))
    notes, report = eight.decode_notes(eight.encode(pm))
    assert report.errors == 0 and notes == eight.notes(pm)
    assert len({n.velocity for n in notes}) == 8
    onoff = MidiCodec()
    assert {n.velocity for n in onoff.decode_notes(onoff.encode(pm))[0]} == {127}


def test_drums_onsets_and_program_granularity(chorale):
    pm = pretty_midi.PrettyMIDI()
    for inst, program in zip(chorale.instruments, (73, 40, 42, 33)):
        pm.instruments.append(_instrument(program, inst.notes))
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="kit")
    for n in chorale.instruments[3].notes:  # kick on every bass note, hi-hat on every soprano note
        kit.notes.append(pretty_midi.Note(100, 36, n.start, n.end))
    for n in chorale.instruments[0].notes:
        kit.notes.append(pretty_midi.Note(80, 42, n.start, n.start + 0.05))
    pm.instruments.append(kit)
    codec = MidiCodec()
    ids = codec.encode(pm)
    assert any(x.startswith("drum:") for x in codec.event_names(ids))
    notes, report = codec.decode_notes(ids)
    assert report.errors == 0 and notes == codec.notes(pm)
    decoded = codec.decode(ids)
    drums = [i for i in decoded.instruments if i.is_drum]
    assert len(drums) == 1
    assert len(drums[0].notes) == len({(n.pitch, codec.seconds_to_steps(n.start)) for n in kit.notes})
    assert all(abs(n.end - n.start - 0.1) < 1e-9 for n in drums[0].notes)
    _assert_onsets_kept(pm, decoded)
    family = MidiCodec(MidiCodecConfig(program_granularity="family"))
    assert {i.program for i in family.decode(family.encode(pm)).instruments if not i.is_drum} == {72, 40, 32}
    flat = MidiCodec(MidiCodecConfig(program_granularity="flat"))
    assert {(i.program, i.is_drum) for i in flat.decode(flat.encode(pm)).instruments} == {(0, False), (0, True)}


def test_sustain_pedal_extends_notes(chorale):
    soprano = chorale.instruments[0]
    inst = _instrument(0, soprano.notes)
    inst.control_changes = [pretty_midi.ControlChange(64, 127, 2.0), pretty_midi.ControlChange(64, 0, 6.0)]
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(inst)
    plain = MidiCodec().notes(pm)
    held = MidiCodec(MidiCodecConfig(apply_sustain=True)).notes(pm)
    assert [n.start for n in plain] == [n.start for n in held]
    changed = 0
    for p, h in zip(plain, held):
        if 200 <= p.end < 600:
            nxt = min([q.start for q in plain if q.pitch == p.pitch and q.start > p.start] + [600])
            assert h.end == min(600, nxt)
            changed += h.end != p.end
        else:
            assert h.end == p.end
    assert changed > 0
    codec = MidiCodec(MidiCodecConfig(apply_sustain=True))
    assert codec.decode_notes(codec.encode(pm))[0] == held


def test_append_eos_and_decode_stops_there(chorale):
    codec = MidiCodec(MidiCodecConfig(append_eos=True))
    ids = codec.encode(chorale)
    assert ids[-1] == codec.eos_id
    notes, report = codec.decode_notes(ids + ids[1:50])
    assert notes == codec.notes(chorale)
    assert report.after_eos == 49 and report.errors == 49


def test_no_ties_config(chorale):
    codec = MidiCodec(MidiCodecConfig(ties=False))
    windows = codec.encode_windows(chorale, 2.0)
    assert all(codec.tie_id not in w for w in windows)
    assert codec.decode_notes(codec.encode(chorale))[0] == codec.notes(chorale)
