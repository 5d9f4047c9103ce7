"""``musicmoe eval --ckpt CKPT --split test [--tasks omr,amt]``: metrics.json and a markdown table.

Besides each metric the table shows its shuffled baseline (every example given another example's source) and the
source gap, unless ``--no-shuffled-baseline``; generation lengths are the config's per-modality budget
(``eval.decode_budget``, or ``--max-new-tokens`` for every target). Each main metric also gets its spread over
disjoint folds of the held-out pieces (``eval.spread_folds`` / ``--spread-folds``, default 5: median [min, max]).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def default_out(ckpt: Path, split: str) -> Path:
    """<run>/eval/<split> for a run's checkpoint, else <ckpt stem>_eval_<split> beside the file."""
    ckpt = ckpt.resolve()
    if ckpt.is_dir() and (ckpt / "checkpoints").is_dir():
        return ckpt / "eval" / split
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "eval" / split
    return ckpt.with_name(f"{ckpt.stem}_eval_{split}")


def evaluate_checkpoint(ckpt: str | Path, split: str = "test", tasks: str | None = None, tokens: str | None = None,
                        out: str | Path | None = None, device: str = "cpu", **overrides) -> dict:
    """Evaluate a checkpoint on a token split; writes ``metrics.json`` and ``metrics.md`` into ``out``."""
    from musicmoe.data.tasks import parse_tasks
    from musicmoe.data.tokens import TokenDataset
    from musicmoe.training.checkpoint import load_model
    from musicmoe.training.codecs import CodecSet
    from musicmoe.training.config import EvalConfig
    from musicmoe.training.evaluate import Evaluator, format_table

    model, hp = load_model(ckpt, device)
    codecs = CodecSet(hp.get("codecs"))
    tokdir = tokens or (hp.get("codecs") or {}).get("tokens") or hp["config"]["data"]["tokens"]
    dataset = TokenDataset(tokdir, split)
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of {tokdir} holds no examples")
    base = {k: v for k, v in (hp["config"].get("eval") or {}).items()}
    base.update({"max_examples": len(dataset), "loss_examples": len(dataset)})
    base.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    cfg = EvalConfig(**{k: v for k, v in base.items() if k in fields})
    trained = list(hp.get("tasks") or [])
    chosen = parse_tasks(tasks) if tasks else parse_tasks(trained)
    evaluator = Evaluator(model, codecs, cfg, trained, device=device)
    evaluator.keep_predictions = True
    started = time.perf_counter()
    metrics, _ = evaluator.evaluate(dataset, chosen)
    seconds = time.perf_counter() - started
    out_dir = Path(out) if out else default_out(Path(ckpt), split)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(ckpt), "tokens": str(tokdir), "split": split, "examples": len(dataset),
              "tasks": [t.name for t in chosen], "decoding": describe_decoding(cfg, chosen),
              "decode_budget": {m: evaluator.budget(m) for m in dict.fromkeys(t.target for t in chosen)},
              "shuffled_baseline": cfg.shuffled_baseline, "seconds": round(seconds, 2),
              "metrics": {k: (None if v != v else v) for k, v in metrics.items()}}
    for name, text in (("metrics.json", json.dumps(record, indent=2)),
                       ("metrics.md", f"# {split} metrics of {ckpt}\n\n{format_table(metrics)}\n")):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)
    for task, rows in evaluator.predictions.items():  # per-example OMR output, worst first
        rows = sorted(rows, key=lambda r: (-r["errors"], str(r["key"])))
        path = out_dir / f"predictions_{task}.jsonl"
        tmp = out_dir / f".{path.name}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    record["out"] = str(out_dir)
    record["table"] = format_table(metrics)
    return record


def describe_decoding(cfg, tasks) -> str:
    """``greedy``, or ``greedy (omr: rescore)`` when some evaluated task decodes otherwise."""
    other = {t.name: cfg.decoding_of(t.name) for t in tasks if cfg.decoding_of(t.name) != cfg.decoding}
    return cfg.decoding + (f" ({', '.join(f'{k}: {v}' for k, v in other.items())})" if other else "")


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.tokens import TokenDataError
    from musicmoe.training.checkpoint import CheckpointError

    try:
        record = evaluate_checkpoint(
            args.ckpt, args.split, args.tasks, args.tokens, args.out, args.device, decoding=args.decoding,
            task_decoding={} if args.decoding else None,  # an explicit --decoding applies to every task
            ctc_weight=args.ctc_weight,
            beam_size=args.beam_size, top_p=args.top_p, batch_size=args.batch_size,
            max_examples=args.max_examples or None, max_new_tokens=args.max_new_tokens, spread_folds=args.spread_folds,
            shuffled_baseline=args.shuffled_baseline)
    except (CheckpointError, TokenDataError, ValueError) as err:
        if getattr(args, "verbose", False):
            raise
        raise UserError(str(err)) from None
    print(record["table"])
    print(f"\nwrote {record['out']}/metrics.json and metrics.md ({record['seconds']} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint per task (SER, note F1, audio/image metrics)",
                       description="Teacher-forced loss and generation metrics of every task on a token split; "
                                   "writes metrics.json and metrics.md (default: <run>/eval/<split>/), and "
                                   "for LMX targets predictions_<task>.jsonl (each example's errors, output and "
                                   "reference, worst first).")
    p.add_argument("--ckpt", required=True, type=Path, help="last.ckpt (file or DeepSpeed folder), run folder, "
                                                           "or exported model.pt")
    p.add_argument("--split", default="test", help="token split to evaluate (default: test)")
    p.add_argument("--tasks", help="comma-separated tasks (default: the tasks the model was trained on)")
    p.add_argument("--tokens", help="token folder (default: the one the model was trained on)")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--max-examples", type=int, default=0, help="examples generated per task (default: all)")
    p.add_argument("--decoding", choices=("greedy", "beam", "top_p", "ctc", "rescore"),
                   help="for every task (default: the checkpoint's eval.decoding and eval.task_decoding); ctc and "
                        "rescore need a model trained with an auxiliary CTC loss")
    p.add_argument("--ctc-weight", type=float, help="weight of the CTC log-likelihood in rescore (default: the "
                                                    "checkpoint's eval.ctc_weight, 0.5)")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int, help="generation budget of every target modality (default: the "
                                                     "checkpoint's eval.decode_budget per modality)")
    p.add_argument("--shuffled-baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="also score every task with other examples' sources: <metric>_shuffled and source_gap "
                        "(default: the checkpoint's eval.shuffled_baseline, true unless set off)")
    p.add_argument("--spread-folds", type=int, help="score each main metric also on N disjoint folds of pieces "
                   "(median [min, max] column; default: the checkpoint's eval.spread_folds, 5; 0 or 1: off)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.set_defaults(func=run)
