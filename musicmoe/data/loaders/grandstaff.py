"""GrandStaff (Ríos-Vila et al. 2023) and its LMX variant (OLiMPiC's ``grandstaff-lmx``) into corpus shards.

Published layout: one folder per piece (``<composer>/<collection>/<piece>/``) holding the samples of its
systems, each ``<name>.krn`` (**kern), ``<name>.bekrn``, ``<name>.jpg`` (the rendered system) and
``<name>_distorted.jpg`` (camera-like distortions).  The LMX variant adds ``<name>.lmx`` and
``<name>.musicxml`` per sample and ``samples.{train,dev,test}.txt`` at the root (sample paths without
extension); without those index files the split is drawn per piece folder from a hash of its path.

One shard per piece folder; examples are image + LMX.  LMX comes from the .lmx file, else from the
.musicxml, else from the .krn (music21 reads **kern; our codec linearizes the MusicXML it exports).
``distorted=True`` takes the ``_distorted.jpg`` images.
"""

from __future__ import annotations

import tempfile
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
    safe_id,
)
from musicmoe.data.loaders.olimpic import SPLIT_NAMES, find_image, lmx_tokens, read_splits
from musicmoe.data.split import split_for


def kern_lmx(krn: Path) -> list[str]:
    """LMX of a **kern file: music21 parses it, exports MusicXML, our codec linearizes it.

    GrandStaff's two spines are the two staves of one piano: music21 reads them as two parts, so they are
    turned into the staves of one part (PartStaffs joined by a brace), as the LMX variant has them."""
    from music21 import converter, layout, stream

    from musicmoe.codecs.lmx import linearize_score, load_musicxml

    score = converter.parse(str(krn), format="humdrum", forceSource=True, storePickle=False)
    parts = list(score.parts)
    if len(parts) == 2:
        staves = []
        for part in parts:
            score.remove(part)
            staff = stream.PartStaff()
            staff.append(list(part))
            score.append(staff)
            staves.append(staff)
        score.insert(0, layout.StaffGroup(staves, name="Piano", symbol="brace"))
    with tempfile.TemporaryDirectory(prefix="musicmoe-krn-") as tmp:
        xml = Path(score.write("musicxml", fp=str(Path(tmp) / "score.musicxml")))
        return linearize_score(load_musicxml(xml))


class GrandStaffLoader:
    name = "grandstaff"

    def items(self, cfg: ImportConfig) -> list[Item]:
        root = Path(cfg.source)
        if any((root / f"samples.{s}.txt").is_file() for s in SPLIT_NAMES):
            splits = read_splits(root, "GrandStaff")
        else:
            bases = sorted({str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.krn")}
                           | {str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.bekrn")})
            if not bases:
                raise DatasetLayoutError(f"{root} does not look like GrandStaff: no samples.*.txt index and no "
                                         f".krn/.bekrn files below it")
            frac = [1 - 2 * cfg.valid_fraction, cfg.valid_fraction, cfg.valid_fraction]
            splits = {b: split_for(str(Path(b).parent), frac, salt=f"grandstaff:{cfg.seed}") for b in bases}
        groups: dict[str, list[tuple[str, str]]] = {}
        for sample, split in splits.items():
            groups.setdefault(str(Path(sample).parent), []).append((sample, split))
        return [Item(safe_id(folder), {"folder": folder, "samples": sorted(s)}) for folder, s in sorted(groups.items())]

    def convert(self, item: Item, cfg: ImportConfig, counts: Counter) -> Iterator[Example]:
        root = Path(cfg.source)
        prefix = cfg.name or self.name
        written = 0
        for k, (sample, split) in enumerate(item.data["samples"]):
            counts["samples"] += 1
            base = root / sample
            image_path = find_image(base, ("_distorted.jpg",) if cfg.distorted else (".jpg", ".png"))
            if image_path is None:
                counts["samples_no_image"] += 1
                continue
            try:
                image, staff = normalize_image(read_image(image_path), cfg, str(image_path))
            except ValueError as err:
                counts["samples_bad_image" if "unreadable" in str(err) else "samples_no_staff"] += 1
                continue
            has_text = any(base.with_name(base.name + s).is_file() for s in (".lmx", ".musicxml"))
            if has_text:
                tokens = lmx_tokens(base, counts)
            elif (krn := base.with_name(base.name + ".krn")).is_file():
                try:
                    tokens = kern_lmx(krn)
                    counts["samples_lmx_from_kern"] += 1
                except Exception:  # music21's humdrum parser raises many types on odd files
                    counts["samples_bad_kern"] += 1
                    tokens = None
            else:
                counts["samples_no_lmx"] += 1
                tokens = None
            if not tokens:
                continue
            written += 1
            yield Example(
                key=f"{prefix}-{item.id}-{safe_id(base.name)}", piece=f"{prefix}-{item.id}", split=split,
                system=k, image=image, lmx=tokens,
                meta={"source": prefix, "sample": sample, "image": image_path.name,
                      "source_staff_height": round(staff, 2), "staff_height_px": cfg.staff_height_px},
            )
        if not written:
            raise ItemError(f"none of its {len(item.data['samples'])} samples is usable ({dict(counts)})")
