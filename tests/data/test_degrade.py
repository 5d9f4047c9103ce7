"""Image degradations on real engraved system crops (from the tiny corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from musicmoe.data.degrade import OPS, DegradeConfig, Degrader, degrade
from musicmoe.data.shards import Corpus


@pytest.fixture(scope="module")
def image(tiny_corpus) -> np.ndarray:
    return Corpus(tiny_corpus, modalities=("image",))[0].image


def only(op: str, **strength) -> DegradeConfig:
    probs = {f"p_{o}": 0.0 for o in OPS}
    probs[f"p_{op}"] = 1.0
    return DegradeConfig(**probs, **strength)


@pytest.mark.parametrize("op", [o for o in OPS if o != "resize"])
def test_each_op_changes_the_image_but_keeps_size_and_dtype(image, op):
    before = image.copy()
    applied: list[str] = []
    out = degrade(image, only(op), np.random.default_rng(3), applied)
    assert applied == [op]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.array_equal(image, before)  # input untouched
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 40  # still the same picture


def test_resize_scales_by_the_drawn_factor(image):
    cfg = only("resize", resize_range=[0.8, 0.8])
    out = degrade(image, cfg, np.random.default_rng(0))
    assert out.dtype == np.uint8
    assert out.shape == (round(image.shape[0] * 0.8), round(image.shape[1] * 0.8))
    grow = degrade(image, only("resize", resize_range=[1.1, 1.2]), np.random.default_rng(0))
    assert image.shape[0] * 1.1 - 1 <= grow.shape[0] <= image.shape[0] * 1.2 + 1


def test_shift_moves_content_by_one_pixel(image):
    out = degrade(image, only("shift", shift_px=1), np.random.default_rng(1))
    dy, dx = next((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if (dy or dx) and np.array_equal(np.roll(image, (dy, dx), axis=(0, 1))[2:-2, 2:-2], out[2:-2, 2:-2]))
    assert (dy, dx) != (0, 0)


def test_zero_probability_is_identity(image):
    cfg = DegradeConfig(**{f"p_{o}": 0.0 for o in OPS})
    for seed in range(5):
        assert np.array_equal(degrade(image, cfg, np.random.default_rng(seed)), image)
    assert not cfg.active
    assert Degrader(cfg)(image, np.random.default_rng(0)) is image
    assert np.array_equal(degrade(image, DegradeConfig(enabled=False), np.random.default_rng(0)), image)


def test_seeded_generator_reproduces(image):
    cfg = DegradeConfig(p_resize=0.5, p_rotate=0.5, p_blur=0.5, p_shift=0.5, p_jpeg=0.5)
    a = [degrade(image, cfg, np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    rng = np.random.default_rng(11)
    outs = [degrade(image, cfg, rng) for _ in range(6)]
    assert len({o.tobytes() for o in outs}) > 1  # a running generator gives varied degradations


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="p_blur"):
        DegradeConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradeConfig(jpeg_quality=[90, 30])
    with pytest.raises(ValueError, match="uint8"):
        degrade(np.zeros((4, 4), dtype=np.float32), DegradeConfig(), np.random.default_rng(0))
