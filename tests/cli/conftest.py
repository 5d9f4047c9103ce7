"""Session fixtures of the CLI tests: the same as tests/training/conftest.py (built once, see fixtures.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared training.fixtures module
from training.fixtures import ensure_codecs, ensure_run, ensure_tokens  # noqa: E402


def _base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "musicmoe_training"


@pytest.fixture(scope="session")
def tiny_codecs(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    return ensure_codecs(tiny_corpus, _base(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_tokens(tiny_corpus, tiny_codecs, tmp_path_factory) -> Path:
    return ensure_tokens(tiny_corpus, tiny_codecs, _base(tmp_path_factory))


@pytest.fixture(scope="session")
def tiny_run(tiny_tokens, tiny_codecs, tmp_path_factory) -> Path:
    """Run folder of a tiny model trained 2 steps (auto strategy) on omr, amt, lmx2image and midi2audio."""
    return ensure_run(tiny_tokens, tiny_codecs, _base(tmp_path_factory), "auto")


@pytest.fixture(scope="session")
def tiny_ds_run(tiny_tokens, tiny_codecs, tmp_path_factory) -> Path:
    """The same under DeepSpeed ZeRO-2 on the CPU (its last.ckpt is a checkpoint folder)."""
    return ensure_run(tiny_tokens, tiny_codecs, _base(tmp_path_factory), "deepspeed")
