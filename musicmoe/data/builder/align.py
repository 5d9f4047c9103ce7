"""Time alignment: the piece's MIDI (from verovio, one instrument per part) and its cut per system.

Verovio writes one MIDI track per staff, in staff order, with tempo/time/key meta events scattered over the
tracks; pretty_midi only reads tempos from track 0, so the meta events are first gathered into track 0.
Staves are grouped back into the MusicXML parts (``<staves>`` per part) and each part gets a General MIDI
program from its instrument (see :func:`part_programs`).  Measure onsets in quarter notes (from verovio's
timemap) are converted to seconds with the same MIDI tempo map, so a system's span and its notes agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from musicmoe.data.builder.config import CorpusConfig

EPS = 1e-4          # seconds: a note starting this close before a system's start belongs to the system
MIN_NOTE = 1e-3     # seconds: shorter clipped notes are dropped
END_MARKER = "system-end"
MIDI_RESOLUTION = 960
_META = ("set_tempo", "time_signature", "key_signature")
_VOCAL = re.compile(
    r"\b(soprano|sopran|alto|altus|contralto|mezzo|tenor|tenore|bass|basso|bassus|baritone|bariton|voice|vox|"
    r"cantus|canto|quinto|quintus|sextus|superius|discantus|choir|chorus|coro|chor|sung|vocal)\b", re.I)


@dataclass
class PartInfo:
    """A MusicXML part as the builder uses it."""

    id: str
    name: str
    staves: int
    program: int
    is_drum: bool


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def part_programs(root: ET.Element, cfg: CorpusConfig) -> list[PartInfo]:
    """Parts in score order with their staff count and General MIDI program (0-based).

    The program comes from the instrument's name (music21's instrument table; voices give ``vocal_program``),
    else from the file's ``<midi-program>``, else ``vocal_program`` if the part has lyrics, else
    ``default_program``.  Parts with ``<midi-unpitched>`` (percussion) are drums.
    """
    declared = {sp.get("id", ""): sp for sp in root.iter("score-part")}
    out: list[PartInfo] = []
    for part in root.findall("part"):
        pid = part.get("id", "")
        sp = declared.get(pid)
        names = [_text(sp.find("part-name")) if sp is not None else "",
                 *([_text(e) for e in sp.iter("instrument-name")] if sp is not None else [])]
        names = [n for n in names if n]
        staves = max([int(_text(s)) for s in part.iter("staves") if _text(s).isdigit()] or [1])
        is_drum = sp is not None and sp.find(".//midi-unpitched") is not None
        program = _program_from_names(names)
        if program is None and sp is not None:
            mp = _text(sp.find(".//midi-program"))
            if mp.isdigit() and 1 <= int(mp) <= 128:
                program = int(mp) - 1
        if program == -1 or (program is None and part.find(".//lyric") is not None):
            program = cfg.vocal_program
        out.append(PartInfo(pid, names[0] if names else pid, staves,
                            cfg.default_program if program is None else program, is_drum))
    return out


def piece_program(piece_id: str, programs: list[int]) -> int:
    """The GM program drawn for ``piece_id`` from ``programs`` (a stable hash: the same on every machine)."""
    digest = hashlib.sha1(f"program:{piece_id}".encode()).digest()
    return int(programs[int.from_bytes(digest[:4], "big") % len(programs)])


def with_program(parts: list[PartInfo], program: int) -> list[PartInfo]:
    """``parts`` with every pitched part playing ``program`` (drum parts keep theirs)."""
    return [p if p.is_drum else dataclasses.replace(p, program=program) for p in parts]


def _program_from_names(names: list[str]) -> int | None:
    """GM program of the first recognised instrument name; -1 for a voice; None if none is known."""
    from music21 import instrument

    for name in names:
        if _VOCAL.search(name):
            return -1
        try:
            inst = instrument.fromString(name)
        except Exception:  # music21 raises InstrumentException (and others) for unknown names
            continue
        if isinstance(inst, instrument.Vocalist):
            return -1
        if inst.midiProgram is not None:
            return int(inst.midiProgram)
    return None


def _merge_meta_into_track0(data: bytes) -> tuple[bytes, int]:
    """Move tempo/time/key events of all tracks into track 0 (deduplicated) and name tracks ``staff:<k>``;
    returns the new file and its number of staff tracks."""
    import mido

    mf = mido.MidiFile(file=io.BytesIO(data))
    meta: dict[tuple, tuple[int, object]] = {}
    tracks: list[list[tuple[int, object]]] = []
    for ti, track in enumerate(mf.tracks):
        tick = 0
        rest: list[tuple[int, object]] = []
        for msg in track:
            tick += msg.time
            if msg.type in _META:
                meta[(tick, msg.type, tuple(sorted(msg.dict().items())))] = (tick, msg)
            elif msg.type == "track_name" or msg.type == "end_of_track":
                continue
            elif ti > 0:
                rest.append((tick, msg))
        if ti > 0:
            tracks.append(rest)
    out = mido.MidiFile(type=1, ticks_per_beat=mf.ticks_per_beat)

    def emit(events: list[tuple[int, object]], name: str | None) -> mido.MidiTrack:
        track = mido.MidiTrack()
        if name is not None:
            track.append(mido.MetaMessage("track_name", name=name, time=0))
        last = 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        return track

    order = {"set_tempo": 0, "time_signature": 1, "key_signature": 2}
    out.tracks.append(emit(sorted(meta.values(), key=lambda e: (e[0], order[e[1].type])), None))
    for k, events in enumerate(tracks):
        out.tracks.append(emit(events, f"staff:{k}"))
    buf = io.BytesIO()
    out.save(file=buf)
    return buf.getvalue(), len(tracks)


def piece_midi(data: bytes, parts: list[PartInfo]):
    """The whole piece as ``PrettyMIDI`` with one instrument per part (its staves merged), named after it."""
    import pretty_midi

    merged, n_tracks = _merge_meta_into_track0(data)
    n_staves = sum(p.staves for p in parts)
    if n_tracks != n_staves:
        raise ValueError(f"verovio's MIDI has {n_tracks} staff tracks, the MusicXML declares {n_staves} staves")
    pm = pretty_midi.PrettyMIDI(io.BytesIO(merged))
    staff_notes: dict[int, list] = {}
    staff_drum: dict[int, bool] = {}
    for inst in pm.instruments:
        k = int(inst.name.split(":", 1)[1]) if inst.name.startswith("staff:") else -1
        if not 0 <= k < n_staves:
            raise ValueError(f"verovio's MIDI has a track for staff {k}, the MusicXML declares {n_staves} staves")
        staff_notes.setdefault(k, []).extend(inst.notes)
        staff_drum[k] = staff_drum.get(k, False) or inst.is_drum
    instruments = []
    first = 0
    for part in parts:
        staves = range(first, first + part.staves)
        first += part.staves
        is_drum = part.is_drum or any(staff_drum.get(s) for s in staves)
        inst = pretty_midi.Instrument(program=part.program, is_drum=is_drum, name=part.name)
        inst.notes = sorted((n for s in staves for n in staff_notes.get(s, [])),
                            key=lambda n: (n.start, n.pitch, n.end))
        instruments.append(inst)
    pm.instruments = instruments
    return pm


def qstamps_to_seconds(pm, qstamps: list[float]) -> np.ndarray:
    """Seconds of positions given in quarter notes, through the MIDI's own tempo map."""
    return np.array([pm.tick_to_time(int(round(q * pm.resolution))) for q in qstamps], dtype=np.float64)


def tempo_at(pm, t: float) -> float:
    times, tempi = pm.get_tempo_changes()
    idx = int(np.searchsorted(times, t + EPS, side="right")) - 1
    return float(tempi[max(idx, 0)]) if len(tempi) else 120.0


def cut(pm, t0: float, t1: float):
    """The notes of ``pm`` starting in ``[t0, t1)`` (clipped at ``t1``) shifted so ``t0`` is time 0, plus the
    time/key signatures in force, the tempo at ``t0`` and an end marker so ``get_end_time() == t1 - t0``."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=tempo_at(pm, t0))
    for inst in pm.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        for n in inst.notes:
            if t0 - EPS <= n.start < t1 - EPS:
                start, end = max(n.start - t0, 0.0), min(n.end, t1) - t0
                if end - start >= MIN_NOTE:
                    new.notes.append(pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=start, end=end))
        out.instruments.append(new)
    for src, dst in ((pm.time_signature_changes, out.time_signature_changes),
                     (pm.key_signature_changes, out.key_signature_changes)):
        before = [e for e in src if e.time <= t0 + EPS]
        if before:
            e = before[-1]
            dst.append(type(e)(*_sig_args(e), 0.0))
        dst.extend(type(e)(*_sig_args(e), e.time - t0) for e in src if t0 + EPS < e.time < t1 - EPS)
    out.text_events.append(pretty_midi.Text(END_MARKER, t1 - t0))
    return out


def _sig_args(e) -> tuple:
    if hasattr(e, "numerator"):
        return (e.numerator, e.denominator)
    return (e.key_number,)
