"""Settings of the MT3-style MIDI event codec (owner: MIDI codec)."""

from __future__ import annotations

from dataclasses import dataclass

PROGRAM_GRANULARITIES = ("full", "family", "flat")


@dataclass
class MidiCodecConfig:
    """Vocabulary and quantisation of the MIDI event codec.

    ``steps_per_second``: time resolution of shift events (100 = 10 ms, as MT3).
    ``max_shift_steps``: the largest single shift token; longer gaps are repeated shifts (100 = 1 s).
    ``velocity_bins``: on-velocity bins; 1 = MT3's on/off vocabulary (decoded velocity: 127 x bin / bins).
    ``ties``: start every sequence with a tie section (notes already sounding) closed by a ``tie`` token.
    ``append_eos``: end ``encode`` output with the codec's own ``eos`` token (the model adds its own EOS,
    so this is off by default; the token is in the vocabulary either way).
    ``program_granularity``: "full" (128 General MIDI programs), "family" (first program of each
    8-program GM family) or "flat" (every pitched instrument becomes program 0), as MT3's options.
    ``drum_duration``: seconds given to decoded drum hits (drums are encoded by onset only).
    ``apply_sustain``: extend notes held by the sustain pedal (CC64 >= 64) before encoding, as MT3.
    """

    steps_per_second: int = 100
    max_shift_steps: int = 100
    velocity_bins: int = 1
    ties: bool = True
    append_eos: bool = False
    program_granularity: str = "full"
    drum_duration: float = 0.1
    apply_sustain: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.steps_per_second, int) or not 1 <= self.steps_per_second <= 10000:
            raise ValueError(f"midi_codec.steps_per_second must be an int in 1..10000, got {self.steps_per_second!r}")
        if not isinstance(self.max_shift_steps, int) or self.max_shift_steps < 1:
            raise ValueError(f"midi_codec.max_shift_steps must be an int >= 1, got {self.max_shift_steps!r}")
        if not isinstance(self.velocity_bins, int) or not 1 <= self.velocity_bins <= 127:
            raise ValueError(f"midi_codec.velocity_bins must be an int in 1..127, got {self.velocity_bins!r}")
        if self.program_granularity not in PROGRAM_GRANULARITIES:
            raise ValueError(
                f"midi_codec.program_granularity must be one of {PROGRAM_GRANULARITIES}, "
                f"got {self.program_granularity!r}"
            )
        if not self.drum_duration > 0:
            raise ValueError(f"midi_codec.drum_duration must be > 0 seconds, got {self.drum_duration!r}")
        if self.drum_duration * self.steps_per_second < 1:
            raise ValueError(
                f"midi_codec.drum_duration ({self.drum_duration} s) must last at least one step "
                f"(1/{self.steps_per_second} s)"
            )
