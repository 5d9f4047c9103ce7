"""``musicmoe export CKPT -o model.pt``: one self-contained fp32 model file for eval and translate."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.training.checkpoint import CheckpointError, export_model

    try:
        out = export_model(args.ckpt, args.output)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="convert a training checkpoint (Lightning file or DeepSpeed folder) into one model file",
        description="Gathers DeepSpeed ZeRO shards into fp32 weights (convert_zero_checkpoint_to_fp32_state_dict) "
                    "or strips a Lightning checkpoint down to the translator's weights, and stores them with the "
                    "run's config, vocabulary and codec record. The file is read by `musicmoe eval` and "
                    "`musicmoe translate` (it cannot resume training).")
    p.add_argument("ckpt", type=Path, help="last.ckpt (file or DeepSpeed folder), or a run folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write, e.g. model.pt")
    p.set_defaults(func=run)
