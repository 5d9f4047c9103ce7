"""music21 scores to ``pretty_midi`` through music21's own MIDI export."""

from __future__ import annotations

import io
from typing import Any

import pretty_midi


def stream_to_pretty_midi(stream: Any, name: str = "<stream>") -> pretty_midi.PrettyMIDI:
    """Export a music21 stream with ``streamToMidiFile`` and read it back with pretty_midi.

    Some scores do not export (repeats, or files pretty_midi rejects as corrupt):
    raises ``ValueError`` naming ``name`` in that case.
    """
    from music21.midi import translate

    try:
        data = translate.streamToMidiFile(stream).writestr()
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # music21 and mido/pretty_midi raise many types on such scores
        raise ValueError(f"cannot convert {name} to MIDI: {type(err).__name__}: {err}") from err


def corpus_pretty_midi(path: str) -> pretty_midi.PrettyMIDI:
    """A piece of music21's bundled corpus (e.g. ``"bach/bwv66.6"``) as ``pretty_midi``."""
    from music21 import corpus

    try:
        score = corpus.parse(path)
    except Exception as err:
        raise ValueError(f"cannot parse music21 corpus piece {path!r}: {err}") from err
    return stream_to_pretty_midi(score, name=path)
