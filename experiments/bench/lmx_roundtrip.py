"""LMX round trip on real music21 corpus pieces: linearize -> delinearize -> linearize per system.

Usage: python experiments/bench/lmx_roundtrip.py [--pieces 60] [--max-windows N] [--flavor core|extended]
                                                 [--json OUT.json]

Systems are the scores' own system breaks, or consecutive 4-measure windows when a piece has none.
Prints the share of systems whose tokens survive unchanged, each failure (piece, window, first differing
token), the vocabulary's unknown-token rate, and delinearizer repairs. Unreadable pieces are skipped and
counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from musicmoe.codecs.lmx import LmxError, Vocabulary
from musicmoe.codecs.lmx.io import write_text_atomic
from musicmoe.codecs.lmx.roundtrip import corpus_pieces, roundtrip_piece


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=60, help="number of corpus pieces (round robin over composers)")
    ap.add_argument("--window-size", type=int, default=4, help="measures per window for pieces without breaks")
    ap.add_argument("--max-windows", type=int, default=None, help="only N evenly spread windows of each piece")
    ap.add_argument("--flavor", choices=("core", "extended"), default="core")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = ap.parse_args(argv)

    vocab = Vocabulary.from_file()
    pieces = corpus_pieces(args.pieces)
    t0 = time.time()
    results, skipped = [], []
    for path in tqdm(pieces, desc="pieces", unit="piece", disable=not sys.stderr.isatty()):
        try:
            results += roundtrip_piece(path, args.window_size, args.max_windows, flavor=args.flavor)
        except LmxError as e:
            skipped.append(str(e))
    elapsed = time.time() - t0

    n_ok = sum(r.ok for r in results)
    n_tok = sum(r.n_tokens for r in results)
    for r in results:
        vocab.encode(r.tokens)
    n_unk = sum(vocab.unknown.values())
    repaired = [r for r in results if r.errors]
    failures = [r for r in results if not r.ok]
    rate = n_ok / len(results) if results else 0.0

    print(f"pieces: {len(pieces) - len(skipped)} read, {len(skipped)} skipped; systems: {len(results)}")
    print(f"round trip identical: {n_ok}/{len(results)} = {100 * rate:.2f}%  ({elapsed:.1f} s)")
    print(f"tokens: {n_tok}; outside vocabulary: {n_unk} ({100 * n_unk / max(n_tok, 1):.4f}%) "
          f"{dict(vocab.unknown.most_common(10))}")
    print(f"systems with delinearizer repairs: {len(repaired)}")
    for s in skipped:
        print(f"SKIPPED {s}")
    for r in failures:
        i, want, got = r.first_diff
        print(f"FAIL {r.piece} measures {r.window[0]}-{r.window[1]}: token {i}: expected {want!r}, got {got!r}")
    kinds = Counter((r.first_diff[1], r.first_diff[2]) for r in failures)
    if kinds:
        print("failure kinds (expected, got):", kinds.most_common(10))
    if args.json:
        report = {
            "pieces": [str(p) for p in pieces], "skipped": skipped, "systems": len(results), "identical": n_ok,
            "rate": rate, "tokens": n_tok, "unknown_tokens": n_unk, "unknown": dict(vocab.unknown),
            "seconds": elapsed,
            "failures": [{"piece": r.piece, "window": r.window, "first_diff": r.first_diff} for r in failures],
        }
        write_text_atomic(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
