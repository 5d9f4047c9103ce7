"""``musicmoe ser``: corpus-level symbol error rate of any system's LMX outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from musicmoe.cli.common import existing_path


def _read_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        from musicmoe.cli.main import UserError

        raise UserError(f"{path} is not UTF-8 text: {err}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last sequence; it does not start an empty one
    return [line.split() for line in lines]


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.metrics.ser_counts import ser_scores

    gold, pred = _read_lines(args.gold), _read_lines(args.pred)
    if len(gold) != len(pred):
        raise UserError(f"{args.gold} has {len(gold)} lines but {args.pred} has {len(pred)}: one sequence per line")
    try:
        scores = ser_scores(pred, gold)
    except ValueError as err:
        raise UserError(f"{args.gold}: {err}") from None
    if args.json:
        print(json.dumps({**scores, "sequences": len(gold), "gold_tokens": sum(map(len, gold))}))
    else:
        print(f"SER: {scores['ser']:.3f}%")
        print(f"SER without tuplets: {scores['ser_no_tuplets']:.3f}%")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ser", help="symbol error rate of predicted vs gold LMX (one sequence per line)",
                       description="Corpus-level SER: summed token edit distance / gold tokens x 100, "
                                   "also without tuplet tokens (tuplet:start, tuplet:stop, NinM).")
    p.add_argument("--gold", required=True, type=existing_path, help="gold LMX, one sequence per line")
    p.add_argument("--pred", required=True, type=existing_path, help="predicted LMX, same line order")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)
