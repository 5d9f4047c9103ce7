"""Throughput of the corpus builder: systems per second per core, audio-seconds per CPU-second.

Builds a fresh corpus (default: the first 20 Bach files of music21's corpus) with the real builder, then
times the synthesizer alone on the built systems' MIDI.  CPU time of the build is the parent's plus that
of its (reaped) worker processes.

    python experiments/bench/corpus_build.py [--composers bach] [--limit 20] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="music21")
    ap.add_argument("--composers", default="bach")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    ap.add_argument("--out", help="corpus folder (default: a temporary one, deleted)")
    ap.add_argument("--synth-systems", type=int, default=40, help="systems to re-synthesize for the synth-only figure")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    from musicmoe.data.builder import CorpusConfig, build_corpus
    from musicmoe.data.builder.runner import default_workers
    from musicmoe.data.shards import Corpus
    from musicmoe.data.synth import synthesize

    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        out = Path(args.out or Path(tmp) / "corpus")
        cfg = CorpusConfig(source=args.source, composers=[c for c in args.composers.split(",") if c],
                           limit=args.limit, out=str(out), workers=workers)
        cpu0, wall0 = _cpu(), time.perf_counter()
        report = build_corpus(cfg, progress=None)
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        run = report["run"]
        if run["files_already_built"]:
            print(f"warning: {out} already held {run['files_already_built']} files; figures cover only the new ones",
                  file=sys.stderr)
        corpus = Corpus(out, modalities=("midi",))
        systems = run.get("systems_written", 0)
        audio_s = sum(r.get("audio_seconds", 0.0) for r in corpus.records)

        n = min(args.synth_systems, len(corpus))
        midis = [corpus[i].midi for i in range(n)]
        t0 = time.process_time()
        synth_audio = sum(len(synthesize(m, cfg.sample_rate)) / cfg.sample_rate for m in midis)
        synth_cpu = time.process_time() - t0

    figures = {
        "files": run["files_built"], "files_failed": run["files_failed"], "systems": systems,
        "workers": workers, "cores": os.cpu_count(), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "systems_per_s_per_core": round(systems / (wall * workers), 3) if wall else 0.0,
        "systems_per_cpu_s": round(systems / cpu, 3) if cpu else 0.0,
        "audio_s": round(audio_s, 1),
        "build_audio_s_per_cpu_s": round(audio_s / cpu, 2) if cpu else 0.0,
        "synth_audio_s_per_cpu_s": round(synth_audio / synth_cpu, 2) if synth_cpu else 0.0,
    }
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
