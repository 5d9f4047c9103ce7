"""The root config: one typed section per stage of the pipeline.

Each section's dataclass lives beside the code it configures; this module only assembles them, so a key's
meaning is documented where it is used.  ``compose(Config, file, overrides)`` validates against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from musicmoe.codecs.audio.config import AudioCodecConfig
from musicmoe.codecs.image.config import ImageCodecConfig
from musicmoe.codecs.midi.config import MidiCodecConfig
from musicmoe.data.build.config import CorpusConfig
from musicmoe.data.config import DataConfig
from musicmoe.data.tokenize_config import TokenizeConfig
from musicmoe.models.config import ModelConfig
from musicmoe.sweeps.config import ClusterConfig
from musicmoe.training.config import EvalConfig, OptimConfig, TrainerConfig


@dataclass
class RunConfig:
    """Identity and output location of a run."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name must be a non-empty name without '/', got {self.name!r}")


@dataclass
class Config:
    """Everything a musicmoe command can be configured with (see configs/ for the shipped files)."""

    run: RunConfig = field(default_factory=RunConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    midi_codec: MidiCodecConfig = field(default_factory=MidiCodecConfig)
    image_codec: ImageCodecConfig = field(default_factory=ImageCodecConfig)
    audio_codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
