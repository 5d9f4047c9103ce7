"""Fixtures of the data tests: the tiny corpus's token shards and codecs (made once per session)."""

from __future__ import annotations

import pytest

from training.fixtures import ensure_codecs, ensure_tokens


@pytest.fixture(scope="module")
def tokens_and_codecs(tiny_corpus, tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "musicmoe_training"
    codecs = ensure_codecs(tiny_corpus, base)
    return ensure_tokens(tiny_corpus, codecs, base), codecs
