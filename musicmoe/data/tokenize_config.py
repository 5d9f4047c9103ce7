"""Settings of pre-tokenization into token shards (owner: tokenize)."""

from __future__ import annotations

from dataclasses import dataclass, field

from musicmoe.data.split import SPLITS


@dataclass
class TokenizeConfig:
    """``musicmoe data tokenize``: length limits, work units and devices.

    A stream longer than its limit is left out of that example (the example keeps its other streams) and
    counted in ``report.json`` with the example's key: never silently cut.  Work is committed in chunks of
    ``chunk_size`` examples, so an interrupted run continues where it stopped.
    """

    out: str = "runs/tokens"
    max_image_positions: int = 2048   # H' x W' code positions of one system image
    max_audio_frames: int = 2250      # EnCodec frames (75 per second: 30 s)
    max_lmx_tokens: int = 1024
    max_midi_tokens: int = 2048
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    chunk_size: int = 256             # examples per committed work unit
    workers: int = 0                  # processes decoding the corpus (PNG/FLAC/MIDI) and encoding LMX/MIDI
    batch_size: int = 16              # images per image-codec forward pass
    device: str = "auto"              # where the image/audio codecs run: auto (cuda if available), cpu, cuda
    threads: int = 0                  # torch CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        for name in ("max_image_positions", "max_audio_frames", "max_lmx_tokens", "max_midi_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"tokenize.{name} must be > 0")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or not self.splits:
            raise ValueError(f"tokenize.splits must be a non-empty subset of {list(SPLITS)}, got {self.splits}")
        if self.chunk_size <= 0 or self.batch_size <= 0 or self.workers < 0 or self.threads < 0:
            raise ValueError("tokenize.chunk_size and batch_size must be > 0; workers and threads >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"tokenize.device must be auto, cpu or cuda[:N], got {self.device!r}")

    def limit(self, modality: str) -> int:
        """The length limit of a modality's stream."""
        return {"image": self.max_image_positions, "audio": self.max_audio_frames,
                "lmx": self.max_lmx_tokens, "midi": self.max_midi_tokens}[modality]
