"""``musicmoe ytsv``: build a corpus from the YouTube Score Video dataset (YTSV).

    musicmoe ytsv ingest ytsv_metadata.csv --work runs/ytsv --category "piano solo" --max-staves 2
    musicmoe ytsv download --work runs/ytsv            # needs: pip install 'musicmoe[download]'
    musicmoe ytsv segment  --work runs/ytsv --workers 8
    musicmoe ytsv detect   --work runs/ytsv
    musicmoe ytsv write    --work runs/ytsv --out runs/ytsv/corpus
    musicmoe ytsv run      --work runs/ytsv            # download, segment, detect, write
    musicmoe ytsv status   --work runs/ytsv

Every stage skips finished videos and retries failed ones (``--no-retry`` keeps them failed), and takes
every n-th video with ``--shard-index I --num-shards N`` (default: the SLURM array task).  Settings come
from ``--config FILE`` (a YtsvConfig YAML) and ``key=value`` overrides (e.g. ``blur_sigma=4``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _config(args: argparse.Namespace):
    from musicmoe.config import compose
    from musicmoe.config.compose import replace
    from musicmoe.data.ytsv.config import YtsvConfig

    cfg = compose(YtsvConfig, args.config, list(args.overrides or []) + list(getattr(args, "set", None) or []))
    changes: dict[str, Any] = {}
    for flag, key in (("work", "work"), ("out", "out"), ("videos", "videos"), ("workers", "workers"),
                      ("category", "categories"), ("instrumentation", "instrumentations"),
                      ("min_staves", "min_staves"), ("max_staves", "max_staves"), ("id", "ids"),
                      ("limit", "limit"), ("detector", "detector")):
        value = getattr(args, flag, None)
        if value is not None:
            changes[key] = value
    try:
        return replace(cfg, **changes) if changes else cfg
    except ValueError as err:
        from musicmoe.config import ConfigError

        raise ConfigError(str(err)) from None


def _print_report(report) -> int:
    data = report.to_json()
    counts = " ".join(f"{k}={v}" for k, v in sorted(data["counts"].items()))
    print(f"ytsv {data['stage']} [{data['shard_index'] + 1}/{data['num_shards']}]: {counts or 'nothing to do'}")
    for yt_id, reason in list(data["failures"].items())[:20]:
        print(f"  failed {yt_id}: {reason}", file=sys.stderr)
    if len(data["failures"]) > 20:
        print(f"  ... and {len(data['failures']) - 20} more (see status/ in the work folder)", file=sys.stderr)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.ytsv.metadata import MetadataError
    from musicmoe.data.ytsv.pipeline import ingest

    cfg = _config(args)
    try:
        report = ingest(args.metadata, cfg)
    except MetadataError as err:
        raise UserError(str(err)) from None
    print(f"ytsv ingest: {report['rows_read']} videos read, {report['rows_skipped']} rows skipped, "
          f"{report['selected']} selected ({report['selected_hours']} h) -> {cfg.work}/videos.jsonl")
    for p in report["problems"][:10]:
        print(f"  skipped: {p}", file=sys.stderr)
    return 0


def _stage(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.ytsv.pipeline import PipelineError, run_all, run_stage

    cfg = _config(args)
    try:
        if args.stage == "run":
            for report in run_all(cfg, args.shard_index, args.num_shards, not args.no_retry):
                _print_report(report)
        else:
            _print_report(run_stage(args.stage, cfg, args.shard_index, args.num_shards, not args.no_retry))
    except (PipelineError, ValueError) as err:
        raise UserError(str(err)) from None
    return 0


def _status(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.ytsv.pipeline import PipelineError, status_summary

    try:
        summary = status_summary(_config(args))
    except PipelineError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for stage, c in summary.items():
            print(f"{stage:9s} done {c['done']:6d}  failed {c['failed']:6d}  pending {c['pending']:6d}")
    return 0


def _common(p: argparse.ArgumentParser, sharded: bool = True) -> None:
    p.add_argument("--work", default=None, help="work folder (default: runs/ytsv)")
    p.add_argument("--config", "-c", default=None, help="YtsvConfig YAML file")
    if sharded:
        p.add_argument("--workers", type=int, default=None, help="parallel videos (default 1)")
        p.add_argument("--shard-index", type=int, default=None,
                       help="this task's share (default: $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN, else 0)")
        p.add_argument("--num-shards", type=int, default=None,
                       help="number of shares (default: $SLURM_ARRAY_TASK_COUNT, else 1)")
        p.add_argument("--no-retry", action="store_true", help="do not retry videos that failed before")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. blur_sigma=4")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an override that may come anywhere (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ytsv ingest|download|segment|detect|write|run|status``."""
    p = subparsers.add_parser("ytsv", help="build a corpus from YouTube score videos (YTSV)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="ytsv_command", metavar="STAGE", required=True)

    ing = sub.add_parser("ingest", help="read the metadata CSV and select videos")
    ing.add_argument("metadata", help="ytsv_metadata.csv (MALerLab/youtube-score-video-dataset)")
    ing.add_argument("--category", action="append", default=None, help="keep this Category (repeatable)")
    ing.add_argument("--instrumentation", action="append", default=None, help="keep this Instrumentation (repeatable)")
    ing.add_argument("--min-staves", type=int, default=None, help="smallest total Staff Count")
    ing.add_argument("--max-staves", type=int, default=None, help="largest total Staff Count")
    ing.add_argument("--id", action="append", default=None, help="keep this YT Id (repeatable)")
    ing.add_argument("--limit", type=int, default=None, help="keep the first N selected videos")
    _common(ing, sharded=False)
    ing.set_defaults(func=_ingest)

    helps = {"download": "download the selected videos with yt-dlp (skips videos already in the folder)",
             "segment": "find pages and their audio in each video",
             "detect": "detect the systems of each page",
             "write": "write image+audio examples into corpus shards",
             "run": "download, segment, detect and write"}
    for stage, text in helps.items():
        sp = sub.add_parser(stage, help=text)
        _common(sp)
        sp.add_argument("--videos", default=None, help="folder of <YT Id>.mp4 files (default: WORK/videos)")
        sp.add_argument("--out", default=None, help="corpus folder the write stage fills (default: runs/ytsv/corpus)")
        if stage in ("detect", "run"):
            sp.add_argument("--detector", default=None, help="system detector name (default: staff)")
        sp.set_defaults(func=_stage, stage=stage)

    st = sub.add_parser("status", help="per stage: videos done, failed and pending")
    _common(st, sharded=False)
    st.add_argument("--out", default=None, help="corpus folder the write stage fills (default: runs/ytsv/corpus)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)
