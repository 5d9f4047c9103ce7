"""The musicmoe translator: one encoder-decoder Transformer with a modality-routed MoE decoder.

Public API (kept stable; see each module's docstring for details)::

    from musicmoe.models import (MODALITIES, ModalitySpec, VocabSpec, ModelConfig, Batch, TranslationExample,
                                 collate, Translator, ModelOutput, param_groups, active_params, count_params)

    vocab = VocabSpec.build(lmx_vocab_size=..., midi_vocab_size=...)   # image/audio: 4 codebooks x 1024
    model = Translator(ModelConfig(), vocab)                            # ModelConfig.paper() for full size
    batch = collate([{"src": img_codes, "src_modality": "image", "tgt": lmx_ids, "tgt_modality": "lmx",
                      "task": 0}, ...], vocab)
    out = model(batch); out.loss.backward()
    seqs = model.generate(batch.src_tokens, batch.src_mask, batch.src_modality, batch.tgt_modality, max_len=256)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.01), lr=3e-4)

The names are loaded on first use (PEP 562 ``__getattr__``), so importing a torch-free sub-module such as
``musicmoe.models.config`` (the config schema does) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from musicmoe.lazy import lazy_exports

_EXPORTS = {
    "musicmoe.models.batch": ("Batch", "BatchInfo", "TranslationExample", "collate"),
    "musicmoe.models.codebooks": ("DepthDecoder", "apply_delay", "revert_delay"),
    "musicmoe.models.config": ("ModelConfig",),
    "musicmoe.models.moe": ("GroupedMoE", "MoEStats"),
    "musicmoe.models.params": ("active_params", "count_params", "param_groups"),
    "musicmoe.models.translator": ("DecoderCache", "ModelOutput", "Translator"),
    "musicmoe.models.vocab": ("MODALITIES", "MODALITY_INDEX", "N_SPECIALS", "ModalitySpec", "VocabSpec",
                              "modality_index"),
}

if TYPE_CHECKING:
    from musicmoe.models.batch import Batch, BatchInfo, TranslationExample, collate
    from musicmoe.models.codebooks import DepthDecoder, apply_delay, revert_delay
    from musicmoe.models.config import ModelConfig
    from musicmoe.models.moe import GroupedMoE, MoEStats
    from musicmoe.models.params import active_params, count_params, param_groups
    from musicmoe.models.translator import DecoderCache, ModelOutput, Translator
    from musicmoe.models.vocab import MODALITIES, MODALITY_INDEX, N_SPECIALS, ModalitySpec, VocabSpec, modality_index


__getattr__, __dir__, __all__ = lazy_exports(globals(), _EXPORTS)
