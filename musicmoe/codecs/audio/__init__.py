"""EnCodec audio codec: mono 24 kHz waveforms <-> (codebooks, frames) codes; training on corpus audio.

Imports are lazy so that reading the config schema does not import torch.
"""

from __future__ import annotations

import importlib

from musicmoe.codecs.audio.config import AudioCodecConfig, AudioCodecTrainConfig

_LAZY = {
    "AudioCodec": "musicmoe.codecs.audio.codec",
    "AudioCodecError": "musicmoe.codecs.audio.codec",
    "build_model": "musicmoe.codecs.audio.codec",
    "train_audio_codec": "musicmoe.codecs.audio.train",
}

__all__ = ["AudioCodec", "AudioCodecConfig", "AudioCodecError", "AudioCodecTrainConfig", "build_model",
           "train_audio_codec"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
