"""MT3-style MIDI event codec: notes <-> a flat sequence of event ids.

Vocabulary (ids in this order; sizes for the default config):

=========  ===============================  =====================================================
range      values                           meaning
=========  ===============================  =====================================================
shift      1..max_shift_steps (100)         advance time by that many steps (10 ms each); a longer
                                            gap is several shift tokens
pitch      0..127                           note-on / note-off of a pitched note (by the current
                                            velocity: 0 = off, >0 = on) of the current program
velocity   0..velocity_bins (0..1)          set the current velocity bin (0 = note-off)
tie        (one token)                      ends the tie section
program    0..127                           set the current General MIDI program
drum       0..127                           a drum hit (onset only) at the current velocity
eos        (one token)                      end of sequence; everything after it is ignored
=========  ===============================  =====================================================

A sequence is ``[tie section] tie [events]``: the tie section lists the pitched notes already sounding at
the start of the window (``program``/``pitch`` pairs, sorted by program then pitch); then events in time
order.  At one time step, events are ordered pitched-before-drums, by program, note-offs before note-ons,
then by pitch; ``program`` and ``velocity`` tokens are emitted only when they change (state is reset after
the tie token, so every sequence decodes on its own).

Windows: ``encode(pm, start, end)`` keeps onsets in ``[start, end)`` and offsets in ``(start, end]``.
A note still sounding at ``end`` is *not* closed inside the window (MT3's convention); it appears in the
next window's tie section.  ``decode`` closes such notes at ``duration`` (the window length) when given,
else at the last time step of the sequence; ``decode_windows`` stitches windows back into a whole piece.

Canonical notes (what ``decode(encode(pm))`` reproduces exactly, see ``MidiCodec.notes``): times rounded to
steps, a note lasts at least one step, velocity quantised to its bin, programs mapped by
``program_granularity``, instruments with the same program merged (as MT3: one stream per program), and
notes of the same program and pitch made non-overlapping (identical onsets merged, an earlier note cut at
the next onset).  Drums keep onsets only and decode with ``drum_duration``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from numbers import Real
from typing import Iterable, NamedTuple, Sequence

import pretty_midi

from musicmoe.codecs.midi.config import MidiCodecConfig
from musicmoe.codecs.midi.vocab import EventRange, EventVocabulary

NUM_PITCHES = 128
NUM_PROGRAMS = 128


class Note(NamedTuple):
    """A quantised note: times in steps (``1 / steps_per_second`` s), absolute or window-relative."""

    start: int
    end: int
    pitch: int
    program: int
    is_drum: bool
    velocity: int


@dataclass
class DecodeReport:
    """What ``decode`` repaired or noticed.  Error counters are summed by ``errors``.

    Errors: ``invalid_ids`` (not in the vocabulary), ``after_eos`` (tokens after EOS), ``missing_tie``
    (a body event inside the tie section), ``stray_tie`` (tie token after the tie section),
    ``pitch_without_velocity`` (a pitch or drum with no velocity set, or a drum at velocity 0: taken as
    an onset at the top bin), ``off_without_on``, ``on_while_active`` (the sounding
    note is closed first), ``zero_length`` (dropped notes), ``after_duration`` (notes starting at or after
    ``duration``, dropped).  Information: ``notes`` (decoded), ``tied_in`` (notes carried into a sequence
    by its tie section without a matching sounding note, i.e. starting at the sequence start),
    ``tie_closed`` (sounding notes that the next window's tie section did not continue),
    ``unclosed`` (notes closed at the end / ``duration``; normal for windows).
    """

    notes: int = 0
    invalid_ids: int = 0
    after_eos: int = 0
    missing_tie: int = 0
    stray_tie: int = 0
    pitch_without_velocity: int = 0
    off_without_on: int = 0
    on_while_active: int = 0
    zero_length: int = 0
    after_duration: int = 0
    tied_in: int = 0
    tie_closed: int = 0
    unclosed: int = 0

    _INFO = ("notes", "tied_in", "tie_closed", "unclosed")

    @property
    def errors(self) -> int:
        """Total count of malformed-input repairs."""
        return sum(getattr(self, f.name) for f in fields(self) if f.name not in self._INFO)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class MidiCodec:
    """Encode ``pretty_midi.PrettyMIDI`` to event ids and back.  See the module docstring for the format."""

    config: MidiCodecConfig = field(default_factory=MidiCodecConfig)

    def __post_init__(self) -> None:
        c = self.config
        self.vocab = EventVocabulary(
            [
                EventRange("shift", 1, c.max_shift_steps),
                EventRange("pitch", 0, NUM_PITCHES - 1),
                EventRange("velocity", 0, c.velocity_bins),
                EventRange("tie", 0, 0),
                EventRange("program", 0, NUM_PROGRAMS - 1),
                EventRange("drum", 0, NUM_PITCHES - 1),
                EventRange("eos", 0, 0),
            ]
        )
        self._drum_steps = max(1, round(c.drum_duration * c.steps_per_second))

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def eos_id(self) -> int:
        return self.vocab.encode("eos")

    @property
    def tie_id(self) -> int:
        return self.vocab.encode("tie")

    def event_names(self, ids: Sequence[int]) -> list[str]:
        """Readable events for debugging, e.g. ``["program:0", "pitch:60", "tie", "shift:25", ...]``."""
        return self.vocab.names_of(ids)

    # ------------------------------------------------------------------ quantisation helpers
    def seconds_to_steps(self, t: float) -> int:
        return int(round(t * self.config.steps_per_second))

    def steps_to_seconds(self, steps: int) -> float:
        return steps / self.config.steps_per_second

    def velocity_to_bin(self, velocity: int) -> int:
        """0 stays 0 (off); 1..127 map to bins 1..velocity_bins."""
        if velocity <= 0:
            return 0
        b = self.config.velocity_bins
        return min(b, max(1, -(-min(int(velocity), 127) * b // 127)))  # ceil(v * b / 127)

    def bin_to_velocity(self, vbin: int) -> int:
        """The top velocity of a bin (MT3's choice): bins=1 decodes every note at 127."""
        b = self.config.velocity_bins
        return 0 if vbin <= 0 else 127 * min(int(vbin), b) // b

    def map_program(self, program: int) -> int:
        g = self.config.program_granularity
        if g == "flat":
            return 0
        if g == "family":
            return (int(program) // 8) * 8
        return int(program)

    # ------------------------------------------------------------------ canonical notes
    def notes(self, pm: pretty_midi.PrettyMIDI) -> list[Note]:
        """The piece's canonical quantised notes (absolute steps): exactly what a round trip returns."""
        groups: dict[tuple[bool, int, int], list[Note]] = defaultdict(list)
        for inst in pm.instruments:
            drum = bool(inst.is_drum)
            program = 0 if drum else self.map_program(inst.program)
            ends = self._sustained_ends(inst) if (self.config.apply_sustain and not drum) else None
            for i, n in enumerate(inst.notes):
                if not 0 <= n.pitch < NUM_PITCHES:
                    continue
                on = self.seconds_to_steps(n.start)
                off = on + self._drum_steps if drum else max(on + 1, self.seconds_to_steps(ends[i] if ends else n.end))
                vel = self.bin_to_velocity(max(1, self.velocity_to_bin(n.velocity)))
                groups[(drum, program, int(n.pitch))].append(Note(on, off, int(n.pitch), program, drum, vel))
        out: list[Note] = []
        for (drum, _, _), notes in groups.items():
            notes.sort(key=lambda n: (n.start, -n.end, -n.velocity))
            kept: list[Note] = []
            for n in notes:
                if kept and kept[-1].start == n.start:  # same onset: one note (drums: one hit)
                    if not drum and n.end > kept[-1].end:
                        kept[-1] = kept[-1]._replace(end=n.end)
                    continue
                if kept and not drum and n.start < kept[-1].end:  # overlap: cut the earlier note
                    kept[-1] = kept[-1]._replace(end=n.start)
                kept.append(n)
            out.extend(kept)
        out.sort(key=lambda n: (n.start, n.is_drum, n.program, n.pitch))
        return out

    @staticmethod
    def _sustained_ends(inst: pretty_midi.Instrument) -> list[float]:
        """Note ends extended to the sustain-pedal release when released while the pedal is down."""
        ccs = sorted((cc.time, cc.value) for cc in inst.control_changes if cc.number == 64)
        intervals: list[tuple[float, float]] = []
        down: float | None = None
        for t, v in ccs:
            if v >= 64 and down is None:
                down = t
            elif v < 64 and down is not None:
                intervals.append((down, t))
                down = None
        if down is not None:
            last = max([n.end for n in inst.notes] + [down])
            intervals.append((down, last))
        ends = []
        for n in inst.notes:
            end = n.end
            for a, b in intervals:
                if a <= end < b:
                    end = b
                    break
            ends.append(end)
        return ends

    # ------------------------------------------------------------------ encoding
    def encode(self, pm: pretty_midi.PrettyMIDI, start: float = 0.0, end: float | None = None) -> list[int]:
        """Event ids of the window ``[start, end)`` (seconds; ``end=None``: to the piece's last note-off).

        Times inside the sequence are relative to ``start``; notes sounding at ``start`` are in the tie
        section, notes still sounding at ``end`` are left open.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        notes = self.notes(pm)
        s = self.seconds_to_steps(start)
        e = self.seconds_to_steps(end) if end is not None else max([n.end for n in notes] + [s])
        if end is not None and e <= s:
            raise ValueError(f"empty window: start={start} end={end}")
        return self._encode_steps(notes, s, e)

    def encode_windows(self, pm: pretty_midi.PrettyMIDI, window: float) -> list[list[int]]:
        """Consecutive windows of ``window`` seconds covering the whole piece (``decode_windows`` inverts)."""
        w = self.seconds_to_steps(window)
        if w < 1:
            raise ValueError(f"window must last at least one step, got {window}")
        notes = self.notes(pm)
        last = max([n.end for n in notes] + [1])
        return [self._encode_steps(notes, s, min(s + w, last)) for s in range(0, last, w)]

    def _encode_steps(self, notes: Sequence[Note], s: int, e: int) -> list[int]:
        v = self.vocab
        ids: list[int] = []
        program: int | None = None
        velocity: int | None = None
        if self.config.ties:
            tied = sorted(
                (n for n in notes if not n.is_drum and n.start < s < n.end), key=lambda n: (n.program, n.pitch)
            )
            for n in tied:
                if n.program != program:
                    ids.append(v.encode("program", n.program))
                    program = n.program
                ids.append(v.encode("pitch", n.pitch))
            ids.append(v.encode("tie"))
            program = None
        # (time, is_drum, program, velocity bin, pitch)
        events: list[tuple[int, bool, int, int, int]] = []
        for n in notes:
            if s <= n.start < e:
                events.append((n.start, n.is_drum, n.program, self.velocity_to_bin(n.velocity), n.pitch))
            if not n.is_drum and s < n.end <= e:
                events.append((n.end, False, n.program, 0, n.pitch))
        events.sort()
        now = s
        for t, drum, prog, vbin, pitch in events:
            while now < t:
                step = min(t - now, self.config.max_shift_steps)
                ids.append(v.encode("shift", step))
                now += step
            if not drum and prog != program:
                ids.append(v.encode("program", prog))
                program = prog
            if vbin != velocity:
                ids.append(v.encode("velocity", vbin))
                velocity = vbin
            ids.append(v.encode("drum" if drum else "pitch", pitch))
        if self.config.append_eos:
            ids.append(v.encode("eos"))
        return ids

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int], *, duration: float | None = None) -> pretty_midi.PrettyMIDI:
        """Notes of one sequence (time 0 = its start).  Never raises on malformed ids; see ``decode_with_report``."""
        return self.decode_with_report(ids, duration=duration)[0]

    def decode_with_report(
        self, ids: Iterable[int], *, duration: float | None = None
    ) -> tuple[pretty_midi.PrettyMIDI, DecodeReport]:
        """``decode`` plus the counts of what was repaired (``DecodeReport``)."""
        notes, report = self.decode_notes(ids, duration=duration)
        return self.to_pretty_midi(notes), report

    def decode_notes(self, ids: Iterable[int], *, duration: float | None = None) -> tuple[list[Note], DecodeReport]:
        """Quantised notes (steps from the sequence start) and the repair report."""
        dec = _Decoder(self)
        dec.feed(ids, 0)
        return dec.finish(None if duration is None else self.seconds_to_steps(duration))

    def decode_windows(
        self,
        windows: Sequence[Iterable[int]],
        starts: Sequence[float] | float,
        *,
        duration: float | None = None,
    ) -> tuple[pretty_midi.PrettyMIDI, DecodeReport]:
        """Stitch consecutive window sequences into one piece.

        ``starts``: each window's start in seconds, or one window length for back-to-back windows.
        A window's tie section continues the notes sounding from the previous window; sounding notes it
        does not list end at the window start.  Returns the piece and the summed report.
        """
        if isinstance(starts, Real):
            starts = [i * float(starts) for i in range(len(windows))]
        if len(starts) != len(windows):
            raise ValueError(f"{len(windows)} windows but {len(starts)} start times")
        dec = _Decoder(self)
        for w, t in zip(windows, starts):
            dec.feed(w, self.seconds_to_steps(t))
        notes, report = dec.finish(None if duration is None else self.seconds_to_steps(duration))
        return self.to_pretty_midi(notes), report

    # ------------------------------------------------------------------ notes <-> PrettyMIDI
    def to_pretty_midi(self, notes: Iterable[Note], offset: float = 0.0) -> pretty_midi.PrettyMIDI:
        """One instrument per (program, drum), General MIDI names; times = steps / steps_per_second + offset."""
        pm = pretty_midi.PrettyMIDI()
        insts: dict[tuple[bool, int], pretty_midi.Instrument] = {}
        for n in sorted(notes, key=lambda n: (n.is_drum, n.program, n.start, n.pitch)):
            key = (n.is_drum, n.program)
            if key not in insts:
                name = "Drums" if n.is_drum else pretty_midi.program_to_instrument_name(n.program)
                insts[key] = pretty_midi.Instrument(program=n.program, is_drum=n.is_drum, name=name)
            insts[key].notes.append(
                pretty_midi.Note(
                    velocity=int(n.velocity),
                    pitch=int(n.pitch),
                    start=self.steps_to_seconds(n.start) + offset,
                    end=self.steps_to_seconds(n.end) + offset,
                )
            )
        pm.instruments.extend(insts[k] for k in sorted(insts))
        return pm


class _Decoder:
    """Tolerant state machine over one or more consecutive sequences."""

    def __init__(self, codec: MidiCodec) -> None:
        self.codec = codec
        self.vocab = codec.vocab
        self.report = DecodeReport()
        self.notes: list[Note] = []
        # (program, pitch) -> (start step, velocity)
        self.active: dict[tuple[int, int], tuple[int, int]] = {}
        self.time = 0
        self.last_time = 0

    def _close(self, key: tuple[int, int], t: int) -> None:
        start, vel = self.active.pop(key)
        if t <= start:
            self.report.zero_length += 1
            return
        self.notes.append(Note(start, t, key[1], key[0], False, vel))

    def feed(self, ids: Iterable[int], offset: int) -> None:
        rep, vocab, codec = self.report, self.vocab, self.codec
        self.time = offset
        self.last_time = max(self.last_time, offset)
        program = 0
        vbin: int | None = None
        in_tie = codec.config.ties
        tied: set[tuple[int, int]] = set()
        ended = False

        def end_tie() -> None:
            nonlocal in_tie
            in_tie = False
            for key in [k for k in self.active if k not in tied]:
                rep.tie_closed += 1
                self._close(key, offset)
            for key in sorted(tied - self.active.keys()):
                rep.tied_in += 1
                self.active[key] = (offset, codec.bin_to_velocity(codec.config.velocity_bins))

        try:
            seq = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # numpy / torch ids too
            if not isinstance(seq, list):  # a 0-d array
                seq = [seq]
        except TypeError:
            seq = []
            rep.invalid_ids += 1
        for tok in seq:
            if ended:
                rep.after_eos += 1
                continue
            try:
                name, value = vocab.decode(tok)
            except (ValueError, TypeError, OverflowError):
                rep.invalid_ids += 1
                continue
            if in_tie:
                if name == "program":
                    program = value
                    continue
                if name == "pitch":
                    tied.add((program, value))
                    continue
                if name == "tie":
                    end_tie()
                    continue
                rep.missing_tie += 1
                end_tie()
            if name == "shift":
                self.time += value
            elif name == "program":
                program = value
            elif name == "velocity":
                vbin = value
            elif name == "pitch":
                key = (program, value)
                if vbin is None:
                    rep.pitch_without_velocity += 1
                    vbin_eff = codec.config.velocity_bins
                else:
                    vbin_eff = vbin
                if vbin_eff == 0:
                    if key in self.active:
                        self._close(key, self.time)
                    else:
                        rep.off_without_on += 1
                else:
                    if key in self.active:
                        rep.on_while_active += 1
                        self._close(key, self.time)
                    self.active[key] = (self.time, codec.bin_to_velocity(vbin_eff))
            elif name == "drum":
                vel = codec.bin_to_velocity(vbin if vbin else codec.config.velocity_bins)
                if not vbin:
                    rep.pitch_without_velocity += 1
                self.notes.append(Note(self.time, self.time + codec._drum_steps, value, 0, True, vel))
            elif name == "tie":
                rep.stray_tie += 1
            elif name == "eos":
                ended = True
        if in_tie:  # sequence ended inside its tie section (e.g. empty or tie-only prefix)
            if tied or seq:
                rep.missing_tie += 1
            end_tie()
        self.last_time = max(self.last_time, self.time)

    def finish(self, duration: int | None) -> tuple[list[Note], DecodeReport]:
        rep = self.report
        end = self.last_time if duration is None else duration
        for key in list(self.active):
            start, _ = self.active[key]
            if duration is not None and start >= duration:
                rep.after_duration += 1
                del self.active[key]
                continue
            rep.unclosed += 1
            self._close(key, max(end, start + 1))
        notes = self.notes
        if duration is not None:
            kept = []
            for n in notes:
                if n.start >= duration:
                    rep.after_duration += 1
                    continue
                kept.append(n._replace(end=min(n.end, duration)) if n.end > duration else n)
            notes = kept
        notes.sort(key=lambda n: (n.start, n.is_drum, n.program, n.pitch))
        rep.notes = len(notes)
        return notes, rep
