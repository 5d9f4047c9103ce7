"""Fixtures for the model tests: tiny vocabulary, configs and mixed-task examples (CPU, seconds).

The ``mt`` fixture bundles them (pytest runs with ``--import-mode=importlib``, so test files cannot import a
sibling helper module).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from musicmoe.models import MODALITIES, ModelConfig, VocabSpec, collate

# small but distinct sizes so that mixing up modalities or codebook counts shows up as an error
TINY_VOCAB = VocabSpec.build(lmx_vocab_size=37, midi_vocab_size=29, image_codebooks=3, image_codebook_size=19,
                             audio_codebooks=4, audio_codebook_size=23)


def tiny_config(**overrides) -> ModelConfig:
    values = dict(d_model=32, n_heads=4, enc_layers=1, dec_layers=2, d_ff=64, dropout=0.0,
                  subdecoder_dim=16, subdecoder_heads=2, max_src_len=64, max_tgt_len=64)
    values.update(overrides)
    return ModelConfig(**values)


def random_codes(modality: str, length: int, gen: torch.Generator) -> torch.Tensor:
    spec = TINY_VOCAB[modality]
    shape = (spec.codebooks, length) if spec.multi_codebook else (length,)
    return torch.randint(0, spec.vocab_size, shape, generator=gen)


def make_examples(pairs, seed: int = 0, src_len=(3, 9), tgt_len=(2, 7)) -> list[dict]:
    """One example per (src modality, tgt modality) pair, random lengths; task id = pair index."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, (s, t) in enumerate(pairs):
        ls = int(torch.randint(src_len[0], src_len[1] + 1, (1,), generator=gen))
        lt = int(torch.randint(tgt_len[0], tgt_len[1] + 1, (1,), generator=gen))
        out.append({"src": random_codes(s, ls, gen), "src_modality": s, "tgt": random_codes(t, lt, gen),
                    "tgt_modality": t, "task": i, "key": f"ex{i}"})
    return out


MIXED_PAIRS = [("image", "lmx"), ("audio", "midi"), ("image", "audio"), ("lmx", "image"), ("midi", "lmx"),
               ("lmx", "audio")]
ALL_PAIRS = [(s, t) for s in MODALITIES for t in MODALITIES]




@pytest.fixture
def mt() -> SimpleNamespace:
    """The model-test kit: ``VOCAB``, ``config(**overrides)``, ``examples(pairs, ...)``, ``MIXED``, ``ALL``."""
    return SimpleNamespace(VOCAB=TINY_VOCAB, config=tiny_config, examples=make_examples, MIXED=MIXED_PAIRS,
                           ALL=ALL_PAIRS, collate=lambda examples, **kw: collate(examples, TINY_VOCAB, **kw))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and the CI machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
