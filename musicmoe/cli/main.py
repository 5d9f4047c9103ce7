"""Entry point of the ``musicmoe`` command.

Each command group lives in its own module under ``musicmoe.cli`` and adds its sub-commands through
``register(subparsers)``; a command stores its handler with ``set_defaults(func=...)``, and the handler
returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from musicmoe import __version__
from musicmoe.config import ConfigError

# Command groups, in the order ``musicmoe --help`` lists them.
GROUPS = (
    "demo", "run", "data", "lmx", "codec", "train", "eval", "translate", "ser",
    "sweep", "compare", "export", "ytsv", "datasets",
)


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicmoe",
        description="Translate music between score images, LMX, MIDI and audio with one model.",
    )
    parser.add_argument("--version", action="version", version=f"musicmoe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"musicmoe.cli.{group}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError, FileNotFoundError) as err:
        print(f"musicmoe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
