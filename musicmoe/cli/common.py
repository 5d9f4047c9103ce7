"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path

from musicmoe.config import load_config


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config FILE`` plus trailing ``key.sub=value`` overrides."""
    parser.add_argument(
        "--config", "-c", default=default,
        help="YAML config (a path, or relative to configs/), e.g. experiment/demo.yaml",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. trainer.max_steps=100")


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None):
    """Compose the root config from ``--config`` and the overrides (``extra`` first, so the user's win)."""
    return load_config(args.config, list(extra or []) + list(args.overrides or []))


def existing_path(text: str) -> Path:
    """argparse type for an input path that must exist."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return path
