"""SoundFont synthesis of ``pretty_midi`` pieces with TinySoundFont (the ``tinysoundfont`` package).

Length: the audio lasts exactly ``pm.get_end_time() + tail`` seconds (rounded to samples), so it stays
aligned with the MIDI.  With ``tail=0`` (default) the release of notes still ringing at the end is cut,
with a 5 ms fade-out so the cut does not click.

Channels: each pretty_midi instrument gets its own synth channel (so unisons of two parts on the same
program do not cut each other off): its General MIDI program from bank 0, drums from the drum bank (128)
on channel 10 (index 9; further drum instruments on channels >= 16).  Control changes (volume, pan,
sustain pedal, ...) and pitch bends are sent as well; TinySoundFont ignores controllers it does not know.

Level: ``gain_db=None`` peak-normalises to -1 dBFS; a number applies that fixed gain and then scales the
whole signal down only if its peak would exceed 1 (no clipping).  Rendering is deterministic.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pretty_midi

PEAK_DBFS = -1.0
FADE_SECONDS = 0.005
DRUM_CHANNEL = 9
DRUM_BANK = 128


def default_soundfont() -> Path:
    """``TimGM6mb.sf2``, the General MIDI SoundFont shipped inside the pretty_midi package."""
    return Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"


@lru_cache(maxsize=4)
def _soundfont_bytes(path: str, mtime_ns: int, size: int) -> bytes:
    return Path(path).read_bytes()


def _load_synth(path: Path, sample_rate: int):
    import tinysoundfont

    if not path.is_file():
        raise FileNotFoundError(f"SoundFont not found: {path}")
    st = path.stat()
    data = _soundfont_bytes(str(path), st.st_mtime_ns, st.st_size)
    synth = tinysoundfont.Synth(samplerate=int(sample_rate))
    try:
        sfid = synth.sfload(data)
    except Exception as err:  # tinysoundfont raises RuntimeError for unreadable data
        raise ValueError(f"cannot read SoundFont {path}: {err}") from err
    return synth, sfid


def _channels(instruments: list[pretty_midi.Instrument]) -> list[int]:
    """Channel per instrument: drums on 9 first, pitched on 0-8, 10-15, then 16+ (TinySoundFont grows)."""
    out: list[int] = []
    used: set[int] = set()
    for inst in instruments:
        if inst.is_drum and DRUM_CHANNEL not in used:
            ch = DRUM_CHANNEL
        else:
            ch = next(c for c in range(len(instruments) + 17) if c not in used and c != DRUM_CHANNEL)
        used.add(ch)
        out.append(ch)
    return out


def _select_program(synth, sfid: int, chan: int, inst: pretty_midi.Instrument) -> None:
    bank = DRUM_BANK if inst.is_drum else 0
    program = int(inst.program) if 0 <= int(inst.program) < 128 else 0
    try:
        synth.program_select(chan, sfid, bank, program, inst.is_drum)
    except RuntimeError:  # preset missing from this SoundFont: fall back to the bank's first preset
        synth.program_select(chan, sfid, bank, 0, inst.is_drum)


def synthesize(
    pm: pretty_midi.PrettyMIDI,
    sample_rate: int = 24000,
    soundfont: str | Path | None = None,
    gain_db: float | None = None,
    tail: float = 0.0,
) -> np.ndarray:
    """Render ``pm`` to float32 mono audio in [-1, 1] of length ``round((end_time + tail) * sample_rate)``."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if tail < 0:
        raise ValueError(f"tail must be >= 0 seconds, got {tail}")
    path = Path(soundfont).expanduser() if soundfont else default_soundfont()
    synth, sfid = _load_synth(path, sample_rate)

    total = int(round((pm.get_end_time() + tail) * sample_rate))
    # (sample, order, channel, kind, a, b): at one sample, controls before note-offs before note-ons
    events: list[tuple[int, int, int, int, int, int]] = []
    for inst, ch in zip(pm.instruments, _channels(pm.instruments)):
        _select_program(synth, sfid, ch, inst)
        for cc in inst.control_changes:
            events.append((int(round(cc.time * sample_rate)), 0, ch, 0, int(cc.number), int(cc.value)))
        for pb in inst.pitch_bends:
            events.append((int(round(pb.time * sample_rate)), 0, ch, 1, int(pb.pitch) + 8192, 0))
        for n in inst.notes:
            on = int(round(n.start * sample_rate))
            off = max(on + 1, int(round(n.end * sample_rate)))
            events.append((on, 2, ch, 3, int(n.pitch), int(n.velocity)))
            events.append((off, 1, ch, 2, int(n.pitch), 0))
    events.sort()

    stereo = np.zeros((total, 2), dtype=np.float32)
    pos = 0

    def render_until(stop: int) -> None:
        nonlocal pos
        if stop > pos:
            buf = synth.generate(stop - pos)
            stereo[pos:stop] = np.frombuffer(buf, dtype=np.float32).reshape(-1, 2)
            pos = stop

    for sample, _, ch, kind, a, b in events:
        if sample >= total:
            break
        render_until(sample)
        if kind == 0:
            synth.control_change(ch, a, b)
        elif kind == 1:
            synth.pitchbend(ch, min(16383, max(0, a)))
        elif kind == 2:
            synth.noteoff(ch, a)
        elif b > 0:
            synth.noteon(ch, a, min(127, b))
    render_until(total)

    audio = stereo.mean(axis=1)
    fade = min(total, int(round(FADE_SECONDS * sample_rate)))
    if fade > 1:
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if total else 0.0
    if peak > 0:
        if gain_db is None:
            audio *= np.float32(10 ** (PEAK_DBFS / 20) / peak)
        else:
            audio *= np.float32(10 ** (gain_db / 20))
            peak_after = peak * 10 ** (gain_db / 20)
            if peak_after > 1.0:
                audio /= np.float32(peak_after)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
