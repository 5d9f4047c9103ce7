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
"""

from musicmoe.models.batch import Batch, BatchInfo, TranslationExample, collate
from musicmoe.models.codebooks import DepthDecoder, apply_delay, revert_delay
from musicmoe.models.config import ModelConfig
from musicmoe.models.moe import GroupedMoE, MoEStats
from musicmoe.models.params import active_params, count_params, param_groups
from musicmoe.models.translator import DecoderCache, ModelOutput, Translator
from musicmoe.models.vocab import MODALITIES, MODALITY_INDEX, N_SPECIALS, ModalitySpec, VocabSpec, modality_index

__all__ = [
    "MODALITIES", "MODALITY_INDEX", "N_SPECIALS", "ModalitySpec", "VocabSpec", "modality_index", "ModelConfig",
    "Batch", "BatchInfo", "TranslationExample", "collate", "Translator", "ModelOutput", "DecoderCache", "GroupedMoE",
    "MoEStats", "DepthDecoder", "apply_delay", "revert_delay", "param_groups", "active_params", "count_params",
]
