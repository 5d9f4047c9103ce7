"""OLiMPiC (ufal/olimpic-icdar24 releases; synthetic and scanned variants) into corpus shards.

Published layout::

    ROOT/samples.train.txt, samples.dev.txt, samples.test.txt   one sample path per line, e.g.
                                                                 samples/<score id>/<name> (no extension)
    ROOT/samples/<score id>/<name>.png                           a system image
    ROOT/samples/<score id>/<name>.lmx                           its LMX tokens (one line)
    ROOT/samples/<score id>/<name>.musicxml                      its MusicXML

(the scanned variant has dev and test only).  One shard per score id; examples are image + LMX; split
``dev`` becomes ``valid``.  A sample whose .lmx is missing is linearized from its .musicxml with our LMX
codec; a sample with no readable image, no staff in it, or no LMX source is skipped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from musicmoe.data.example import Example
from musicmoe.data.loaders.common import (
    DatasetLayoutError,
    ImportConfig,
    Item,
    ItemError,
    normalize_image,
    read_image,
    read_index,
    safe_id,
)

SPLIT_NAMES = {"train": "train", "dev": "valid", "test": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PAGE_SYSTEM = re.compile(r"p(\d+)-s(\d+)")


def read_splits(root: Path, dataset: str) -> dict[str, str]:
    """Sample path (relative, no extension) -> our split, from ``samples.{train,dev,test}.txt``."""
    found = {name: root / f"samples.{name}.txt" for name in SPLIT_NAMES if (root / f"samples.{name}.txt").is_file()}
    if not found:
        raise DatasetLayoutError(f"{root} does not look like {dataset}: no samples.train.txt, samples.dev.txt or "
                                 f"samples.test.txt index (a release folder has them next to samples/)")
    out: dict[str, str] = {}
    for name, path in found.items():
        for line in read_index(path):
            out.setdefault(line.removesuffix(".png").removesuffix(".jpg"), SPLIT_NAMES[name])
    return out


def lmx_tokens(base: Path, counts: Counter) -> list[str] | None:
    """LMX of a sample: its .lmx, else its .musicxml linearized; None (counted) if neither is usable."""
    from musicmoe.codecs.lmx import LmxError, linearize_score, load_musicxml, read_lmx

    lmx = base.with_name(base.name + ".lmx")
    if lmx.is_file():
        try:
            tokens = read_lmx(lmx)
        except LmxError:
            counts["samples_bad_lmx"] += 1
            return None
        if tokens:
            return tokens
    xml = base.with_name(base.name + ".musicxml")
    if xml.is_file():
        try:
            tokens = linearize_score(load_musicxml(xml))
            counts["samples_lmx_from_musicxml"] += 1
            return tokens
        except (LmxError, ValueError):
            counts["samples_bad_musicxml"] += 1
            return None
    counts["samples_no_lmx"] += 1
    return None


def find_image(base: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Path | None:
    for s in suffixes:
        p = base.with_name(base.name + s)
        if p.is_file():
            return p
    return None


def sample_order(name: str) -> tuple[int, int, str]:
    """Sort key: page and system from OLiMPiC's ``p<page>-s<system>`` names, else the name."""
    m = _PAGE_SYSTEM.search(name)
    return (int(m.group(1)), int(m.group(2)), name) if m else (1 << 30, 0, name)


class OlimpicLoader:
    name = "olimpic"

    def items(self, cfg: ImportConfig) -> list[Item]:
        root = Path(cfg.source)
        splits = read_splits(root, "OLiMPiC")
        groups: dict[str, list[tuple[str, str]]] = {}
        for sample, split in splits.items():
            parts = Path(sample).parts
            score = parts[-2] if len(parts) >= 2 else "root"
            groups.setdefault(score, []).append((sample, split))
        return [Item(safe_id(score), {"score": score, "samples": sorted(s, key=lambda x: sample_order(x[0]))})
                for score, s in sorted(groups.items())]

    def convert(self, item: Item, cfg: ImportConfig, counts: Counter) -> Iterator[Example]:
        root = Path(cfg.source)
        prefix = cfg.name or self.name
        written = 0
        for k, (sample, split) in enumerate(item.data["samples"]):
            counts["samples"] += 1
            base = root / sample
            image_path = find_image(base)
            if image_path is None:
                counts["samples_no_image"] += 1
                continue
            try:
                image, staff = normalize_image(read_image(image_path), cfg, str(image_path))
            except ValueError as err:
                counts["samples_bad_image" if "unreadable" in str(err) else "samples_no_staff"] += 1
                continue
            tokens = lmx_tokens(base, counts)
            if tokens is None:
                continue
            written += 1
            yield Example(
                key=f"{prefix}-{item.id}-{safe_id(base.name)}", piece=f"{prefix}-{item.id}", split=split,
                system=k, image=image, lmx=tokens,
                meta={"source": prefix, "sample": sample, "source_staff_height": round(staff, 2),
                      "staff_height_px": cfg.staff_height_px},
            )
        if not written:
            raise ItemError(f"none of its {len(item.data['samples'])} samples is usable ({dict(counts)})")
