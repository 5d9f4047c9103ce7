"""``musicmoe lmx``: MusicXML <-> LMX tokens.

``lmx linearize FILE`` prints the tokens, space separated, one line per system (one line when the file
has no system breaks, or for ``--measures FIRST-LAST``). ``lmx delinearize FILE.lmx -o OUT.musicxml``
writes MusicXML; FILE.lmx may carry the fixtures' header (``---``) and ``#`` comments, or be plain token
lines (all lines are read as one sequence). Skipped tokens are reported on stderr.
"""

from __future__ import annotations

import argparse
import sys


def _window(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST (0-based measure indices), got {text!r}") from None
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError(f"need 0 <= FIRST <= LAST, got {text!r}")
    return a, b


def _linearize(args: argparse.Namespace) -> int:
    from musicmoe.codecs.lmx import LmxError, linearize_score, load_musicxml, system_breaks

    try:
        root = load_musicxml(args.file)
        kw = {"flavor": args.flavor, "restate_time": args.restate_time}
        windows = [args.measures] if args.measures else system_breaks(root)
        for w in windows:
            print(" ".join(linearize_score(root, w, **kw)))
    except (LmxError, ValueError) as e:
        print(f"musicmoe lmx linearize: error: {e}", file=sys.stderr)
        return 1
    return 0


def _delinearize(args: argparse.Namespace) -> int:
    from musicmoe.codecs.lmx import LmxError, delinearize_with_report, read_lmx
    from musicmoe.codecs.lmx.io import write_text_atomic

    try:
        tokens = read_lmx(args.file)
        res = delinearize_with_report(tokens)
        write_text_atomic(args.output, res.xml)
    except (LmxError, OSError) as e:
        print(f"musicmoe lmx delinearize: error: {e}", file=sys.stderr)
        return 1
    if res.errors:
        print(f"{args.file}: {len(res.errors)} token(s)/structure(s) skipped or repaired:", file=sys.stderr)
        for msg in res.errors[:20]:
            print(f"  {msg}", file=sys.stderr)
        if len(res.errors) > 20:
            print(f"  ... and {len(res.errors) - 20} more", file=sys.stderr)
    print(f"wrote {args.output} ({len(tokens)} tokens)", file=sys.stderr)
    return 1 if (args.strict and res.errors) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lmx linearize`` and ``lmx delinearize``."""
    p = subparsers.add_parser("lmx", help="MusicXML <-> LMX (Linearized MusicXML) tokens",
                              description="Linearize MusicXML to LMX tokens (one line per system) or "
                                          "write MusicXML from LMX tokens.")
    sub = p.add_subparsers(dest="lmx_command", metavar="ACTION", required=True)

    lin = sub.add_parser("linearize", help="print LMX tokens of a .musicxml/.xml/.mxl file, one line per system")
    lin.add_argument("file", help="MusicXML file (score-partwise; .musicxml, .xml or compressed .mxl)")
    lin.add_argument("--measures", type=_window, default=None, metavar="FIRST-LAST",
                     help="one window of 0-based measure indices (inclusive) instead of the system breaks")
    lin.add_argument("--flavor", choices=("core", "extended"), default="core",
                     help="core (default) or extended (slurs, articulations, ornaments)")
    lin.add_argument("--restate-time", action="store_true",
                     help="also restate the time signature at each system start")
    lin.set_defaults(func=_linearize)

    de = sub.add_parser("delinearize", help="write MusicXML from an .lmx token file")
    de.add_argument("file", help="LMX file (header + '---' + tokens, or plain tokens)")
    de.add_argument("-o", "--output", required=True, help="output .musicxml (written atomically)")
    de.add_argument("--strict", action="store_true", help="exit 1 when any token had to be skipped")
    de.set_defaults(func=_delinearize)


def main(argv: list[str] | None = None) -> int:
    """Run the ``lmx`` group on its own (``python -m musicmoe.cli.lmx linearize FILE``)."""
    parser = argparse.ArgumentParser(prog="musicmoe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lmx", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
