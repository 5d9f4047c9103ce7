"""The one place that imports the ``encodec`` package.

Why this module exists: ``encodec`` imports ``torchaudio`` at import time (``encodec/utils.py``), but uses it
only for ``torchaudio.transforms.Resample`` (in ``convert_audio``) and ``torchaudio.save`` (in ``save_audio``).
PyPI's torchaudio wheel is a CUDA build whose native library fails to load beside the CPU torch we pin
(``OSError: ... _torchaudio.abi3.so``), which would make ``import encodec`` fail.  So: try the real
torchaudio first (it works on GPU machines); if it cannot be imported, put a minimal stand-in module into
``sys.modules`` only while ``encodec`` is imported, then take it out again so that no other library sees it.
The stand-in offers exactly the two things encodec uses: polyphase resampling (scipy) and WAV saving
(soundfile).  Everything else in musicmoe does its own audio I/O with soundfile.
"""

from __future__ import annotations

import sys
import types
from math import gcd

import numpy as np
import torch

_STUB_NAME = "torchaudio"


class _Resample(torch.nn.Module):
    """Band-limited polyphase resampling along the last axis (scipy's ``resample_poly``)."""

    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, **_: object) -> None:
        super().__init__()
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.orig_freq == self.new_freq:
            return wav
        from scipy.signal import resample_poly

        g = gcd(self.orig_freq, self.new_freq)
        out = resample_poly(wav.detach().cpu().numpy(), self.new_freq // g, self.orig_freq // g, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(out)).to(dtype=wav.dtype, device=wav.device)


def _save(path, wav: torch.Tensor, sample_rate: int, encoding: str = "PCM_S", bits_per_sample: int = 16, **_):
    """``torchaudio.save`` for (channels, samples) float tensors, via soundfile."""
    import soundfile as sf

    subtype = {16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}.get(bits_per_sample, "PCM_16")
    sf.write(str(path), wav.detach().cpu().numpy().T, int(sample_rate), subtype=subtype)


def _stand_in() -> types.ModuleType:
    mod = types.ModuleType(_STUB_NAME)
    mod.__doc__ = "musicmoe stand-in for torchaudio (resampling and saving only); see musicmoe/codecs/audio/_encodec.py"
    transforms = types.ModuleType(f"{_STUB_NAME}.transforms")
    transforms.Resample = _Resample  # type: ignore[attr-defined]
    mod.transforms = transforms  # type: ignore[attr-defined]
    mod.save = _save  # type: ignore[attr-defined]
    return mod


def _import_encodec() -> types.ModuleType:
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    try:
        import torchaudio  # noqa: F401
    except Exception:  # OSError (broken native library) or ImportError (not installed)
        for name in [n for n in sys.modules if n == _STUB_NAME or n.startswith(_STUB_NAME + ".")]:
            del sys.modules[name]  # half-imported pieces of the broken package
        stub = _stand_in()
        sys.modules[_STUB_NAME] = stub
        sys.modules[f"{_STUB_NAME}.transforms"] = stub.transforms
        try:
            import encodec
        finally:  # encodec keeps its own reference; nobody else should find the stand-in
            sys.modules.pop(_STUB_NAME, None)
            sys.modules.pop(f"{_STUB_NAME}.transforms", None)
        return encodec
    import encodec

    return encodec


encodec = _import_encodec()
EncodecModel = encodec.EncodecModel
SEANetEncoder = encodec.modules.SEANetEncoder
SEANetDecoder = encodec.modules.SEANetDecoder
ResidualVectorQuantizer = encodec.quantization.ResidualVectorQuantizer
convert_audio = encodec.utils.convert_audio

__all__ = ["EncodecModel", "SEANetDecoder", "SEANetEncoder", "ResidualVectorQuantizer", "convert_audio", "encodec"]
