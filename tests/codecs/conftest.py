"""Fixtures shared by the codec tests."""

from __future__ import annotations

import numpy as np
import pytest

from musicmoe.data.shards import Corpus
from musicmoe.runtime import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a busy
    2-core machine several times faster than two."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def system_images(tiny_corpus) -> list[np.ndarray]:
    """The tiny corpus's real system crops."""
    corpus = Corpus(tiny_corpus, modalities=("image",))
    images = [ex.image for ex in corpus]
    corpus.close()
    assert len(images) >= 5 and all(img is not None for img in images)
    return images
