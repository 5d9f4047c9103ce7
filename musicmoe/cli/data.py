"""``musicmoe data build|stats|show`` (and sub-commands other modules add to the ``data`` group).

Other modules add sub-commands either by defining ``register_cli(group)`` in a module listed in
``EXTENSIONS`` (called when ``register`` builds the group), or by calling :func:`data_subparsers` after
``register`` ran, which returns the group's ``argparse`` sub-parsers object.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from musicmoe.cli.common import add_config_arguments, existing_path
from musicmoe.config import CONFIG_ROOT, ConfigError, compose, load_config
from musicmoe.data.builder.config import CorpusConfig

log = logging.getLogger(__name__)

# modules whose ``register_cli(group)`` adds ``data`` sub-commands
EXTENSIONS = ("musicmoe.data.tokenize", "musicmoe.data.features")
_GROUP: list[Any] = []


def data_subparsers():
    """The ``data`` group's sub-parsers (``add_parser`` it), once :func:`register` has run."""
    if not _GROUP:
        raise RuntimeError("musicmoe.cli.data.register() has not run yet")
    return _GROUP[-1]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="build, inspect and tokenize corpora",
        description="Build aligned corpora (score image, LMX, MIDI, audio per system) and look at them.",
    )
    group = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    _GROUP.append(group)
    _add_build(group)
    _add_stats(group)
    _add_show(group)
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as err:  # a broken extension must not take `data build` down with it
            log.warning("cannot load %s (its data sub-commands are missing): %s", name, err)
            continue
        if hasattr(module, "register_cli"):
            module.register_cli(group)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)


# --------------------------------------------------------------------------------------------- build
def _add_build(group) -> None:
    p = group.add_parser(
        "build", help="build a corpus from music21's corpus or a folder of scores",
        description="Engrave every score, cut it into systems and write aligned image/LMX/MIDI/audio shards. "
                    "Re-running resumes: files whose shard exists are skipped. Flags override --config and "
                    "KEY=VALUE overrides (corpus keys, e.g. corpus.max_height_px=300 or max_height_px=300).",
    )
    p.add_argument("--source", help="'music21' (its bundled corpus) or a folder of MusicXML/.mxl (and other) files")
    p.add_argument("--composers",
                   help="comma-separated music21 corpus folders (or top-level sub-folders), e.g. bach,mozart")
    p.add_argument("--include", help="comma-separated glob patterns on paths relative to the source, e.g. 'bach/bwv1*'")
    p.add_argument("--limit", type=int, help="build at most N source files (in sorted order)")
    p.add_argument("--out", help="corpus folder to write (default: corpus.out)")
    p.add_argument("--workers", type=int, help="parallel files (default: all cores)")
    p.add_argument("--timeout", type=float, dest="piece_timeout_s", help="seconds per score before it is killed")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_config_arguments(p)
    p.set_defaults(func=_build)


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _is_corpus_file(config: str) -> bool:
    """True if ``config`` is a corpus group file (its keys are CorpusConfig fields), not a root config."""
    from omegaconf import DictConfig, OmegaConf

    path = Path(config)
    if not path.is_file() and (CONFIG_ROOT / path).is_file():
        path = CONFIG_ROOT / path
    if not path.is_file():
        return False  # let load_config report the missing file
    try:
        node = OmegaConf.load(path)
    except Exception:
        return False
    names = {f.name for f in dataclasses.fields(CorpusConfig)}
    return isinstance(node, DictConfig) and "defaults" not in node and set(map(str, node.keys())) <= names


def corpus_config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """Compose the corpus settings: ``--config`` (a corpus file or a root config), overrides, then flags."""
    names = {f.name for f in dataclasses.fields(CorpusConfig)}
    overrides = list(args.overrides or [])
    if args.config and _is_corpus_file(args.config):
        overrides = [o[len("corpus."):] if o.startswith("corpus.") else o for o in overrides]
        path = args.config if Path(args.config).is_file() else str(CONFIG_ROOT / args.config)
        cfg = compose(CorpusConfig, path, overrides)
    else:
        overrides = [f"corpus.{o}" if o.split("=", 1)[0].strip().lstrip("+") in names else o for o in overrides]
        cfg = load_config(args.config, overrides).corpus
    flags = {
        "source": args.source, "composers": _split_list(args.composers), "include": _split_list(args.include),
        "limit": args.limit, "out": args.out, "workers": args.workers, "piece_timeout_s": args.piece_timeout_s,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    try:
        return dataclasses.replace(cfg, **flags)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def _build(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.builder.runner import BuildError, build_corpus

    cfg = corpus_config_from_args(args)
    try:
        report = build_corpus(cfg, progress=False if args.quiet else None)
    except BuildError as err:
        raise UserError(str(err)) from None
    run = report["run"]
    print(f"{cfg.out}: built {run['files_built']} files ({run['files_already_built']} already built, "
          f"{run['files_failed']} failed) in {run['seconds']:.1f} s; "
          f"{run.get('systems_written', 0)} systems written, {run.get('systems_too_tall', 0)} too tall, "
          f"{run.get('systems_lmx_failed', 0)} without LMX; corpus now {report['corpus']['examples']} examples")
    if report["failures"]:
        print(f"{len(report['failures'])} skipped (see {Path(cfg.out) / 'report.json'}):")
        for f in report["failures"]:
            piece = f" [{f['piece']}]" if f.get("piece") else ""
            print(f"  {f['file']}{piece}: {f['reason']}")
    if run["files_selected"] and not run["files_built"] and not run["files_already_built"]:
        return 1
    return 0


# --------------------------------------------------------------------------------------------- stats / show
def _add_stats(group) -> None:
    p = group.add_parser("stats", help="counts per split/composer, audio hours, tokens and image sizes")
    p.add_argument("dir", type=existing_path, help="corpus folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_stats)


def _stats(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.builder.stats import corpus_stats, format_stats
    from musicmoe.data.shards import CorpusError

    try:
        stats = corpus_stats(args.dir)
    except CorpusError as err:
        raise UserError(str(err)) from None
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _add_show(group) -> None:
    p = group.add_parser("show", help="write one example's PNG, MIDI, WAV and LMX and print its LMX")
    p.add_argument("dir", type=existing_path, help="corpus folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", "-i", type=int, default=0, help="example number in the manifest (default 0)")
    which.add_argument("--key", help="example key, e.g. bach_bwv1.6__s002")
    p.add_argument("-o", "--outdir", default=".", help="folder for the files (default: current folder)")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from musicmoe.cli.main import UserError
    from musicmoe.data.builder.stats import export_example
    from musicmoe.data.shards import CorpusError

    try:
        info = export_example(args.dir, args.index, args.outdir, key=args.key)
    except CorpusError as err:
        raise UserError(str(err)) from None
    meta = info["meta"]
    print(f"{info['key']}: piece {meta.get('piece')} ({meta.get('composer') or '?'}), system {meta.get('system')}, "
          f"measures {meta.get('measures')}, {info['duration']:.2f} s, split {meta.get('split')}", file=sys.stderr)
    for kind, path in info["paths"].items():
        print(f"  {kind:<6}{path}", file=sys.stderr)
    if info["lmx"] is not None:
        print(" ".join(info["lmx"]))
    return 0
