"""``musicmoe demo --out runs/demo``: the whole pipeline on 633 folk tunes of music21's corpus, on a CPU.

Exactly ``musicmoe run --config experiment/demo.yaml --out DIR`` (see ``musicmoe run --help``): build the
corpus, train the small image codec (no demo task writes audio, which is read as log-mel frames), tokenize,
train the small multi-task translator, evaluate the reading tasks (``eval.tasks``) on the test split, print the
table and write DIR/results.json.  Each stage is skipped or resumed when its
output exists, so a rerun continues where it stopped.

The demo then applies the learning check of ``run.checks`` in configs/experiment/demo.yaml: the held-out OMR
SER must be below half of the SER with shuffled sources (the model reads its input, rather than only writing
plausible LMX); a failed check exits with status 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEMO_CONFIG = "experiment/demo.yaml"


def demo_config(out: Path, overrides: list[str] = ()):
    """The demo's config with every path under ``out``."""
    from musicmoe.cli.run import experiment_config

    return experiment_config(DEMO_CONFIG, Path(out), list(overrides))


def run_demo(out: Path, overrides: list[str] = (), split: str = "test", device: str = "auto") -> dict[str, Any]:
    """``musicmoe run`` on configs/experiment/demo.yaml; returns what DIR/results.json holds."""
    from musicmoe.cli.run import run_experiment

    return run_experiment(DEMO_CONFIG, Path(out), list(overrides), split, device)


def run(args: argparse.Namespace) -> int:
    from musicmoe.cli.run import handle_errors, report_checks

    def go() -> int:
        return report_checks(run_demo(Path(args.out), list(args.overrides or []), args.split, args.device))

    return handle_errors(go, getattr(args, "verbose", False))


def register(sub: argparse._SubParsersAction) -> None:
    from musicmoe.cli.run import add_run_arguments

    p = sub.add_parser("demo", help="build, tokenize, train and evaluate a small model on folk tunes (CPU)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, "runs/demo")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on top of configs/experiment/demo.yaml, e.g. trainer.max_steps=100")
    p.set_defaults(func=run)
