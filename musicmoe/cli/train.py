"""``musicmoe train --config FILE key=value ...``: train (or resume) a multi-task translator."""

from __future__ import annotations

import argparse
import json

from musicmoe.cli.common import add_config_arguments, config_from_args


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.shards import CorpusError
    from musicmoe.data.tokens import TokenDataError
    from musicmoe.training.run import train

    cfg = config_from_args(args)
    try:
        summary = train(cfg)
    except (ValueError, TokenDataError, CorpusError) as err:  # bad data or settings; -v shows the traceback
        if getattr(args, "verbose", False):
            raise
        raise UserError(str(err)) from None
    if summary.get("rank", 0) == 0:  # one summary per run, not one per process
        print(json.dumps(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a multi-task translator (resumes its run folder's last checkpoint)",
        description="Train on the token shards named by data.tokens, or on the corpora mixed by data.sources "
                    "(token folders with weights and curricula). The run folder run.out_dir/run.name gets "
                    "config.yaml, checkpoints/last.ckpt, tb/ (TensorBoard) and metrics.jsonl; starting again "
                    "resumes from its last checkpoint. SIGUSR1 saves, requeues (under SLURM) and stops.")
    add_config_arguments(p)
    p.set_defaults(func=run)
