"""MT3-style MIDI event codec: ``MidiCodec(MidiCodecConfig())`` encodes ``pretty_midi`` pieces to event ids."""

from musicmoe.codecs.midi.codec import DecodeReport, MidiCodec, Note
from musicmoe.codecs.midi.config import MidiCodecConfig
from musicmoe.codecs.midi.vocab import EventRange, EventVocabulary

__all__ = ["DecodeReport", "EventRange", "EventVocabulary", "MidiCodec", "MidiCodecConfig", "Note"]
