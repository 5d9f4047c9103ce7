"""Training data of the image codec: system crops from a corpus, with corrupt images skipped and reported.

Training items are random windows ``crop_width`` pixels wide at full system height (narrower systems are
padded with white on the right); a batch is padded with white at the bottom to its tallest item, rounded up to
a multiple of the patch size.  Validation items are whole systems (batch size 1, no cropping).

A system whose PNG cannot be decoded does not stop training: the item comes back as a skip record, the
collate function passes the keys on (``batch["skipped"]``), and the training module counts and reports them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from musicmoe.codecs.image.codec import image_to_ink
from musicmoe.codecs.image.layout import WHITE
from musicmoe.data.shards import Corpus, CorpusError

log = logging.getLogger(__name__)


@dataclass
class Skipped:
    """A corpus item that could not be used, with the reason."""

    key: str
    error: str


class SystemImages(Dataset):
    """Images of the corpus records ``indices``: random ``crop_width`` windows, or whole systems (``crop_width=0``)."""

    def __init__(self, corpus: Corpus, indices: Sequence[int], crop_width: int = 0) -> None:
        self.corpus = corpus
        self.indices = list(indices)
        self.crop_width = crop_width

    def __len__(self) -> int:
        return len(self.indices)

    def key(self, i: int) -> str:
        return str(self.corpus.records[self.indices[i]]["key"])

    def __getitem__(self, i: int) -> dict[str, Any] | Skipped:
        index = self.indices[i]
        key = self.key(i)
        try:
            image = self.corpus[index].image
        except CorpusError as err:
            return Skipped(key, str(err))
        if image is None:
            return Skipped(key, "record has no image")
        if image.ndim != 2 or image.dtype != np.uint8 or 0 in image.shape:
            return Skipped(key, f"not a 2-D uint8 image: {image.dtype} {image.shape}")
        h, w = image.shape
        if self.crop_width:
            if w > self.crop_width:
                x0 = int(torch.randint(0, w - self.crop_width + 1, ()).item())
                image = image[:, x0 : x0 + self.crop_width]
            elif w < self.crop_width:
                image = np.pad(image, ((0, 0), (0, self.crop_width - w)), constant_values=WHITE)
        return {"image": image, "key": key, "size": (h, min(w, self.crop_width) if self.crop_width else w)}


def collate_images(items: Sequence[dict[str, Any] | Skipped], patch: int) -> dict[str, Any]:
    """Pad the good items with white to one shape (multiples of ``patch``) -> ``{"ink", "sizes", "keys", "skipped"}``.

    ``ink`` is ``(B, 1, H, W)`` float (``None`` if every item was skipped); ``sizes`` the original ``(h, w)``.
    """
    good = [it for it in items if isinstance(it, dict)]
    skipped = [(it.key, it.error) for it in items if isinstance(it, Skipped)]
    if not good:
        return {"ink": None, "sizes": [], "keys": [], "skipped": skipped}
    h = max(it["image"].shape[0] for it in good)
    w = max(it["image"].shape[1] for it in good)
    h, w = h + (-h % patch), w + (-w % patch)
    batch = np.full((len(good), h, w), WHITE, dtype=np.uint8)
    for i, it in enumerate(good):
        img = it["image"]
        batch[i, : img.shape[0], : img.shape[1]] = img
    return {
        "ink": image_to_ink(batch), "sizes": [it["size"] for it in good],
        "keys": [it["key"] for it in good], "skipped": skipped,
    }


class Collate:
    """Picklable ``collate_fn`` for DataLoader workers."""

    def __init__(self, patch: int) -> None:
        self.patch = patch

    def __call__(self, items: Sequence[dict[str, Any] | Skipped]) -> dict[str, Any]:
        return collate_images(items, self.patch)


def split_train_val(corpus: Corpus, val_split: str, val_images: int) -> tuple[list[int], list[int], str]:
    """Indices of training and held-out systems (only records that have an image), and where val came from.

    Validation uses up to ``val_images`` systems of ``val_split``; if that split is empty, the last
    ``val_images`` training systems are held out of training instead (so validation images are never trained on).
    """
    with_image = [i for i, r in enumerate(corpus.records) if "png" in r.get("members", {})]
    train = [i for i in with_image if corpus.records[i].get("split", "train") == "train"]
    val = [i for i in with_image if corpus.records[i].get("split") == val_split]
    if not train:
        raise CorpusError(f"{corpus.dir}: no training systems with an image (splits: "
                          f"{sorted({r.get('split') for r in corpus.records})})")
    if val_images == 0:
        return train, [], "none"
    if val:
        step = max(1, len(val) // val_images)  # spread over pieces rather than the first few systems
        return train, val[::step][:val_images], val_split
    if len(train) <= val_images:
        raise CorpusError(
            f"{corpus.dir}: no '{val_split}' systems and only {len(train)} training systems: cannot hold out "
            f"{val_images} for validation (set image_codec.train.val_images lower)"
        )
    log.warning("corpus %s has no '%s' systems: holding out the last %d training systems for validation",
                corpus.dir, val_split, val_images)
    return train[:-val_images], train[-val_images:], f"held-out train ({val_images})"
