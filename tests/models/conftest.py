"""Fixtures for the model tests: tiny vocabulary, configs and mixed-task examples (CPU, seconds).

The ``mt`` fixture bundles them (pytest runs with ``--import-mode=importlib``, so test files cannot import a
sibling helper module).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musicmoe.data.features import image_patches
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


def staff_image(width: int = 200, seed: int = 0) -> np.ndarray:
    """A five-line staff with a few filled noteheads (white background, uint8)."""
    rng = np.random.default_rng(seed)
    img = np.full((44, width), 255, dtype=np.uint8)
    for k in range(5):
        img[12 + 4 * k, :] = 0
    for x in rng.integers(10, width - 10, 6):
        y = int(rng.integers(10, 30))
        img[y - 2: y + 2, x - 3: x + 3] = 0
    return img


def pixel_examples() -> list[dict]:
    """Three image -> lmx rows (pixel patches of staff images, random LMX ids) and one audio -> midi row (mel)."""
    vocab = TINY_VOCAB
    out = []
    for i, width in enumerate((200, 120, 170)):
        patches, rows = image_patches(staff_image(width, seed=i), 16)
        out.append({"src_features": patches, "src_rows": rows, "src_modality": "image",
                    "tgt": torch.randint(0, vocab["lmx"].vocab_size, (5 + i,)), "tgt_modality": "lmx", "task": 0})
    mel = np.random.default_rng(0).normal(size=(23, 32)).astype(np.float16)
    out.append({"src_features": mel, "src_modality": "audio", "tgt": torch.randint(0, vocab["midi"].vocab_size, (6,)),
                "tgt_modality": "midi", "task": 1})
    return out


@pytest.fixture
def mt() -> SimpleNamespace:
    """The model-test kit: ``VOCAB``, ``config(**overrides)``, ``examples(pairs, ...)``, ``MIXED``, ``ALL``,
    ``staff_image(width, seed)``, ``pixel_examples()`` (three image -> lmx rows of pixel patches, one audio -> midi
    row of mel frames)."""
    return SimpleNamespace(VOCAB=TINY_VOCAB, config=tiny_config, examples=make_examples, MIXED=MIXED_PAIRS,
                           staff_image=staff_image, pixel_examples=pixel_examples,
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
