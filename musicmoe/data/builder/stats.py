"""Look at a built corpus: summary statistics, and one example written out as PNG / MIDI / WAV / LMX."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from musicmoe.data.shards import MANIFEST, Corpus, CorpusError, iter_records


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "max": 0.0, "min": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 2), "max": round(float(arr.max()), 2), "min": round(float(arr.min()), 2)}


def corpus_stats(corpus_dir: str | Path) -> dict[str, Any]:
    """Counts per split and composer, audio hours, LMX tokens, image sizes and durations per example."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / MANIFEST).is_file():
        raise CorpusError(f"{corpus_dir} is not a corpus folder: {corpus_dir / MANIFEST} is missing")
    per_split: Counter = Counter()
    pieces_split: dict[str, set] = defaultdict(set)
    per_composer: Counter = Counter()
    pieces_composer: dict[str, set] = defaultdict(set)
    audio_s = 0.0
    lmx, heights, widths, durations, notes, measures = [], [], [], [], [], []
    for rec in iter_records(corpus_dir):
        split, composer = rec.get("split", "?"), rec.get("composer") or "?"
        per_split[split] += 1
        pieces_split[split].add(rec["piece"])
        per_composer[composer] += 1
        pieces_composer[composer].add(rec["piece"])
        audio_s += float(rec.get("audio_seconds", 0.0))
        if "lmx_tokens" in rec:
            lmx.append(rec["lmx_tokens"])
        if "image_shape" in rec:
            heights.append(rec["image_shape"][0])
            widths.append(rec["image_shape"][1])
        durations.append(float(rec.get("duration", 0.0)))
        notes.append(rec.get("midi_notes", 0))
        m = rec.get("measures", [0, 0])
        measures.append(m[1] - m[0] + 1)
    report: dict[str, Any] = {}
    rp = corpus_dir / "report.json"
    if rp.is_file():
        try:
            report = json.loads(rp.read_text())
        except json.JSONDecodeError:
            report = {}
    return {
        "examples": sum(per_split.values()),
        "pieces": len(set().union(*pieces_split.values())) if pieces_split else 0,
        "splits": {s: {"examples": n, "pieces": len(pieces_split[s])} for s, n in sorted(per_split.items())},
        "composers": {c: {"examples": n, "pieces": len(pieces_composer[c])} for c, n in per_composer.most_common()},
        "audio_hours": round(audio_s / 3600, 4),
        "lmx_tokens": _summary(lmx), "image_height": _summary(heights), "image_width": _summary(widths),
        "duration_s": _summary(durations), "midi_notes": _summary(notes), "measures": _summary(measures),
        "build": {k: report.get("run", {}).get(k, 0) for k in
                  ("files_failed", "systems_too_tall", "systems_empty", "systems_lmx_failed")} if report else {},
    }


def format_stats(stats: dict[str, Any]) -> str:
    """Plain-text tables of :func:`corpus_stats`."""
    lines = [f"examples {stats['examples']}  pieces {stats['pieces']}  audio {stats['audio_hours']:.3f} h", "",
             f"{'split':<10}{'examples':>10}{'pieces':>10}"]
    lines += [f"{s:<10}{v['examples']:>10}{v['pieces']:>10}" for s, v in stats["splits"].items()]
    lines += ["", f"{'composer':<24}{'examples':>10}{'pieces':>10}"]
    lines += [f"{c[:23]:<24}{v['examples']:>10}{v['pieces']:>10}" for c, v in stats["composers"].items()]
    lines += ["", f"{'per example':<16}{'mean':>10}{'min':>10}{'max':>10}"]
    for key in ("lmx_tokens", "image_height", "image_width", "duration_s", "midi_notes", "measures"):
        v = stats[key]
        lines.append(f"{key:<16}{v['mean']:>10.2f}{v['min']:>10.2f}{v['max']:>10.2f}")
    if stats.get("build"):
        lines += ["", "last build: " + ", ".join(f"{k} {v}" for k, v in stats["build"].items())]
    return "\n".join(lines)


def find_index(corpus: Corpus, index: int | None = None, key: str | None = None) -> int:
    """Index of an example given by position (negative counts from the end) or by key."""
    if key is not None:
        for i, rec in enumerate(corpus.records):
            if rec["key"] == key:
                return i
        raise CorpusError(f"no example with key {key!r} in {corpus.dir}")
    index = 0 if index is None else index
    if not -len(corpus) <= index < len(corpus):
        raise CorpusError(f"index {index} out of range: {corpus.dir} has {len(corpus)} examples")
    return index % len(corpus)


def export_example(corpus_dir: str | Path, index: int | None = None, outdir: str | Path = ".",
                   key: str | None = None) -> dict[str, Any]:
    """Write example ``index`` (or ``key``) as ``<key>.png/.mid/.wav/.lmx`` into ``outdir``; returns its paths,
    LMX tokens and metadata."""
    import soundfile as sf
    from PIL import Image

    corpus = Corpus(corpus_dir)
    ex = corpus[find_index(corpus, index, key)]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if ex.image is not None:
        Image.fromarray(ex.image, mode="L").save(p := outdir / f"{ex.key}.png")
        paths["image"] = str(p)
    if ex.midi is not None:
        ex.midi.write(str(p := outdir / f"{ex.key}.mid"))
        paths["midi"] = str(p)
    if ex.audio is not None:
        sf.write(p := outdir / f"{ex.key}.wav", ex.audio, ex.sample_rate, subtype="PCM_16")
        paths["audio"] = str(p)
    if ex.lmx is not None:
        from musicmoe.codecs.lmx import format_lmx

        (p := outdir / f"{ex.key}.lmx").write_text(format_lmx(ex.lmx))
        paths["lmx"] = str(p)
    corpus.close()
    return {"key": ex.key, "paths": paths, "lmx": ex.lmx, "meta": ex.meta, "duration": ex.duration}
