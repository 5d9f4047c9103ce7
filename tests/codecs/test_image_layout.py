"""Image-code layout: padding, vertical reading order, joining systems with SEP - exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicmoe.codecs.image import (
    ImageCodec,
    ImageCodecConfig,
    flatten_codes,
    join_systems,
    pad_to_patch,
    split_systems,
    unflatten_codes,
)

TINY = dict(codebook_size=64, base_channels=8, max_channels=16, latent_dim=8, res_blocks=1)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real_codes(system_images) -> list[np.ndarray]:
    torch.manual_seed(0)
    codec = ImageCodec(ImageCodecConfig(**TINY))
    codec.init_codebooks(system_images)
    return [codec.encode(img) for img in system_images]


def test_flatten_is_column_by_column():
    grid = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # Q=2, H'=3, W'=4
    flat = flatten_codes(grid)
    assert flat.shape == (2, 12)
    for q in range(2):
        for h in range(3):
            for w in range(4):
                assert flat[q, w * 3 + h] == grid[q, h, w]
    # first column's rows top to bottom, then the second column
    assert flat[0, :4].tolist() == [grid[0, 0, 0], grid[0, 1, 0], grid[0, 2, 0], grid[0, 0, 1]]


def test_real_systems_round_trip_exactly(real_codes, system_images):
    assert len({c.shape for c in real_codes}) > 1, "systems of different sizes expected"
    for codes, image in zip(real_codes, system_images):
        q, h, w = codes.shape
        assert (h, w) == (-(-image.shape[0] // 16), -(-image.shape[1] // 16))
        flat = flatten_codes(codes)
        assert flat.shape == (q, h * w)
        back = unflatten_codes(flat, h)
        assert back.dtype == codes.dtype and np.array_equal(back, codes)

    sep = 64
    flats = [flatten_codes(c) for c in real_codes]
    joined = join_systems(flats, sep)
    assert joined.shape == (4, sum(f.shape[1] for f in flats) + len(flats) - 1)
    assert (joined == sep).all(axis=0).sum() == len(flats) - 1
    parts = split_systems(joined, sep)
    assert len(parts) == len(flats)
    for part, flat, codes in zip(parts, flats, real_codes):
        assert np.array_equal(part, flat)
        assert np.array_equal(unflatten_codes(part, codes.shape[1]), codes)


def test_join_keeps_empty_and_single_systems():
    a = np.array([[1, 2], [3, 4]])
    empty = np.zeros((2, 0), dtype=a.dtype)
    joined = join_systems([a, empty, a], sep=9)
    assert joined.tolist() == [[1, 2, 9, 9, 1, 2], [3, 4, 9, 9, 3, 4]]
    parts = split_systems(joined, sep=9)
    assert [p.shape[1] for p in parts] == [2, 0, 2]
    assert np.array_equal(split_systems(join_systems([a], 9), 9)[0], a)


def test_join_widens_dtype_for_separator():
    a = np.array([[1, 200]], dtype=np.uint8)
    joined = join_systems([a, a], sep=1024)
    assert joined[0, 2] == 1024 and joined.dtype.itemsize >= 2


def test_layout_errors():
    with pytest.raises(ValueError, match="separator"):
        join_systems([np.array([[1, 64]])], sep=64)
    with pytest.raises(ValueError, match="codebooks"):
        join_systems([np.zeros((2, 3), int), np.zeros((3, 3), int)], sep=64)
    with pytest.raises(ValueError, match="malformed separator"):
        split_systems(np.array([[1, 64, 2], [1, 5, 2]]), sep=64)
    with pytest.raises(ValueError, match="columns of height"):
        unflatten_codes(np.zeros((4, 10), int), 3)
    with pytest.raises(ValueError, match="3-D integer"):
        flatten_codes(np.zeros((4, 10)))


def test_pad_to_patch_pads_white_bottom_right(system_images):
    img = system_images[0]
    padded = pad_to_patch(img, 16)
    assert padded.shape[0] % 16 == 0 and padded.shape[1] % 16 == 0
    assert np.array_equal(padded[: img.shape[0], : img.shape[1]], img)
    assert (padded[img.shape[0]:] == 255).all() and (padded[:, img.shape[1]:] == 255).all()
    aligned = np.full((32, 48), 7, np.uint8)
    assert pad_to_patch(aligned, 16) is aligned
    with pytest.raises(ValueError, match="uint8"):
        pad_to_patch(img.astype(np.float32), 16)
