"""``musicmoe import``: convert a published dataset into corpus shards.

    musicmoe import olimpic    olimpic-1.0-synthetic/  --out runs/olimpic
    musicmoe import grandstaff grandstaff-lmx/         --out runs/grandstaff [--distorted]
    musicmoe import maestro    maestro-v3.0.0/ segment_seconds=10 --out runs/maestro
    musicmoe import musicnet   musicnet/               --out runs/musicnet

One shard per source item (score, piece folder, recording): a re-run skips finished items and retries the
failed ones; ``--shard-index/--num-shards`` (default: the SLURM array task) split the items over tasks.
Bad samples are skipped and counted in ``OUT/report.json``.  ``key=value`` overrides (right after SRC, or
anywhere as ``--set key=value``) set ImportConfig fields (e.g. ``hop_seconds=5 valid_fraction=0.1``).
"""

from __future__ import annotations

import argparse
import sys


def _run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.config import ConfigError, compose
    from musicmoe.config.compose import replace
    from musicmoe.data.loaders import DatasetLayoutError, ImportConfig, get_loader, run_import

    cfg = compose(ImportConfig, args.config, list(args.overrides or []) + list(args.set or []))
    changes = {"source": str(args.source), "out": args.out}
    for flag in ("workers", "limit", "name"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if args.distorted:
        changes["distorted"] = True
    try:
        cfg = replace(cfg, **changes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        report = run_import(get_loader(args.dataset), cfg, args.shard_index, args.num_shards)
    except (DatasetLayoutError, ValueError) as err:
        raise UserError(str(err)) from None
    c, total = report["counts"], report["corpus"]
    print(f"import {args.dataset} [{report['shard_index'] + 1}/{report['num_shards']}]: "
          f"{c.get('items_done', 0)} items converted, {c.get('items_already_done', 0)} already done, "
          f"{c.get('items_failed', 0)} failed; corpus {args.out}: {total['examples']} examples "
          f"from {total['items_written']}/{total['items']} items {total['splits']}")
    if total["skipped"]:
        print("  counts: " + ", ".join(f"{k}={v}" for k, v in sorted(total["skipped"].items())))
    for item, reason in list(report["failures"].items())[:20]:
        print(f"  failed {item}: {reason}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import {olimpic,grandstaff,maestro,musicnet} SRC --out DIR``."""
    from musicmoe.data.loaders import LOADERS

    p = subparsers.add_parser("import", help="convert OLiMPiC, GrandStaff, MAESTRO or MusicNet into corpus shards",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=LOADERS)
    p.add_argument("source", help="the dataset's folder, as published")
    p.add_argument("--out", required=True, help="corpus folder to write")
    p.add_argument("--config", "-c", default=None, help="ImportConfig YAML file")
    p.add_argument("--workers", type=int, default=None, help="parallel items (default 1)")
    p.add_argument("--limit", type=int, default=None, help="convert the first N items only")
    p.add_argument("--name", default=None, help="prefix of shard and example names (default: the dataset)")
    p.add_argument("--distorted", action="store_true", help="GrandStaff: use the _distorted.jpg images")
    p.add_argument("--shard-index", type=int, default=None, help="this task's share (default: SLURM array task)")
    p.add_argument("--num-shards", type=int, default=None, help="number of shares (default: SLURM array size)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="ImportConfig overrides right after SRC, e.g. segment_seconds=8")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an override that may come anywhere (repeatable)")
    p.set_defaults(func=_run)
