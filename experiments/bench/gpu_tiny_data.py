"""Build the tiny corpus, codecs and token shards for the GPU check's end-to-end training step, on the CPU.

The GPU machine lacks music21 (the corpus source) and building there would cost scarce device time, so the
inputs are made here once, into a folder that travels with the run (``.gpu/`` by default; git-ignored):

    python experiments/bench/gpu_tiny_data.py [--out .gpu]

Same recipe as the test suite's ``tiny_*`` fixtures (tests/training/fixtures.py): three real Bach chorales,
k-means-initialised image/audio codecs, the real tokenizer. Writes ``OUT/codecs/{image,audio}_codec.pt`` and
``OUT/tokens/``; the corpus itself (audio, images) is deleted afterwards to keep the travelling tree small.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder is sys.path[0]; a sibling named like a stdlib module (tokenize.py) would shadow it
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import shutil

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--keep-corpus", action="store_true", help="keep OUT/corpus (not needed for training)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from musicmoe.cli.main import main as cli
    from training.fixtures import ensure_codecs, ensure_tokens  # the test suite's recipe

    out: Path = args.out
    corpus = out / "corpus"
    if not (corpus / "manifest.jsonl").is_file():
        rc = cli(["data", "build", "--config", "corpus/tiny.yaml", "--out", str(corpus), "--workers", "2", "--quiet"])
        if rc != 0:
            print(f"building the tiny corpus failed (exit {rc}); see {corpus / 'build.log'}", file=sys.stderr)
            return rc
    codecs = ensure_codecs(corpus, out / "codecs")
    tokens = ensure_tokens(corpus, codecs, out)
    if not args.keep_corpus:
        shutil.rmtree(corpus)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{tokens} and {', '.join(str(p) for p in codecs.values())}: {size / 2 ** 20:.1f} MiB in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
