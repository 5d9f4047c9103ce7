"""``musicmoe compare RUN_DIR... [--metrics a,b] [--plot out.png]``: compare runs from their TensorBoard logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from musicmoe.cli.main import UserError
from musicmoe.sweeps import compare, events
from musicmoe.sweeps.manage import markdown


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="table and plot of runs' metrics and the config keys that differ between them",
        description="Read each run's TensorBoard events (<run>/tb, else <run>/metrics.jsonl) and config.yaml; "
                    "print a markdown table (best and last value of each metric with their steps, the last "
                    "step, wall time, and the config keys that differ) and optionally plot the curves. "
                    "Where runs logged shuffled-source baselines (<metric>_shuffled, <task>/source_gap), the "
                    "table adds their value at the last step ('shuffled') and the 'source gap' (how much the "
                    "true source improves the metric: > 0 means the model reads its input), and the plot draws "
                    "the baseline dashed. A folder of runs (e.g. a sweep's out_dir) stands for all runs in it.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--metrics", type=_csv,
                   help="comma-separated tags, e.g. eval/omr/ser,eval/amt/onset_f1 ('omr/ser' and 'val/omr/ser' "
                        "mean the same; default: every eval/ or val tag, else every *loss* tag, baselines "
                        "shown beside their metric rather than as rows)")
    p.add_argument("--maximize", type=_csv, default=[],
                   help="tags where higher is better (default guess: names with f1/acc/precision/recall/...)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the curves to this PNG")
    p.add_argument("--seeds", action="store_true",
                   help="also aggregate runs that differ only in run.seed (automatic when run.seed differs): mean "
                        "± std and n of each metric's last value per arm, the shuffled baseline beside it")
    p.add_argument("--csv", type=Path, metavar="CSV", help="write the per-arm seed table as CSV")
    p.add_argument("--bars", type=Path, metavar="PNG", help="bar plot of the per-arm means with error bars (std)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    runs = [compare.load_run(p) for p in compare.expand_run_dirs(args.runs)]
    available = sorted({t for r in runs for t in r.curves})
    if not available:
        raise UserError(f"no metrics in {', '.join(str(r.path) for r in runs)} (no TensorBoard events under tb/ "
                        f"and no metrics.jsonl)")
    metrics = args.metrics or compare.default_metrics(runs)
    unknown = [m for m in metrics if events.resolve_metric(m, available) is None]
    if unknown:
        raise UserError(f"metric(s) {unknown} not logged by any run; logged: {', '.join(available)}")
    metrics = [events.resolve_metric(m, available) for m in metrics]
    print(markdown(compare.summary(runs, metrics, args.maximize)))
    if args.plot:
        out = compare.plot(runs, metrics, args.plot)
        print(f"plot: {out}")
    if args.seeds or args.csv or args.bars or compare.SEED_KEY in compare.differing_keys(runs):
        stats = compare.aggregate_seeds(runs, metrics)
        print("\n## per arm over seeds (last value of each run; std with n - 1)\n")
        print(markdown(compare.seed_table(stats)))
        if args.csv:
            print(f"csv: {compare.write_seed_csv(stats, args.csv)}")
        if args.bars:
            print(f"bars: {compare.bar_plot(stats, args.bars)}")
    return 0
