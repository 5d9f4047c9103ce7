"""Score-image codec: an RQ-VAE that turns grayscale system crops into residual code grids and back.

Public API (imported lazily, so loading the config schema does not import torch):
``ImageCodec`` (encode/decode/save/load, ``codec.py``), the code layout helpers ``flatten_codes``,
``unflatten_codes``, ``join_systems``, ``split_systems``, ``pad_to_patch`` (``layout.py``), and
``train_image_codec`` (``train.py``, Lightning).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageCodec": "codec", "CodecFileError": "codec", "weights_hash": "codec",
    "ImageCodecConfig": "config", "ImageCodecTrainConfig": "config",
    "flatten_codes": "layout", "unflatten_codes": "layout", "join_systems": "layout", "split_systems": "layout",
    "pad_to_patch": "layout", "train_image_codec": "train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
