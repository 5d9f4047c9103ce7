"""Token inventory of Linearized MusicXML (LMX) and the duration arithmetic both directions share.

The grammar follows the OLiMPiC specification (ufal/olimpic-icdar24, docs/linearized-musicxml.md).
Where the specification lists only the values seen in its corpus, the ranges here are a little wider
(voices 1-16, staves 1-4, beats 1-48, every ``AinN`` time modification with A, N <= 16) so that common
MusicXML outside that corpus still maps to known tokens.
"""

from __future__ import annotations

import re
from fractions import Fraction

UNK = "<unk>"
SPECIALS: tuple[str, ...] = (UNK,)

PART = "part"
MEASURE = "measure"

STEPS = "CDEFGAB"
PITCHES: tuple[str, ...] = tuple(f"{s}{o}" for o in range(10) for s in STEPS)

# Note types, shortest first, with their length in quarter notes.
NOTE_TYPES: tuple[str, ...] = (
    "1024th", "512th", "256th", "128th", "64th", "32nd", "16th",
    "eighth", "quarter", "half", "whole", "breve", "long", "maxima",
)
TYPE_QUARTERS: dict[str, Fraction] = {t: Fraction(2) ** (i - 8) for i, t in enumerate(NOTE_TYPES)}
MEASURE_REST = "rest:measure"

ACCIDENTALS: tuple[str, ...] = (
    # the seven of the specification first, then the rest of MusicXML 4.0's accidental-value list
    "sharp", "flat", "natural", "double-sharp", "flat-flat", "natural-sharp", "natural-flat",
    "sharp-sharp", "quarter-flat", "quarter-sharp", "three-quarters-flat", "three-quarters-sharp",
    "sharp-down", "sharp-up", "natural-down", "natural-up", "flat-down", "flat-up",
    "double-sharp-down", "double-sharp-up", "flat-flat-down", "flat-flat-up", "arrow-down", "arrow-up",
    "triple-sharp", "triple-flat", "slash-quarter-sharp", "slash-sharp", "slash-flat", "double-slash-flat",
    "sharp-1", "sharp-2", "sharp-3", "sharp-5", "flat-1", "flat-2", "flat-3", "flat-4", "sori", "koron",
)
# semitone offset used by the delinearizer to rebuild <alter>
ACCIDENTAL_ALTER: dict[str, float] = {
    "sharp": 1, "flat": -1, "natural": 0, "double-sharp": 2, "sharp-sharp": 2, "flat-flat": -2,
    "natural-sharp": 1, "natural-flat": -1, "quarter-flat": -0.5, "quarter-sharp": 0.5,
    "three-quarters-flat": -1.5, "three-quarters-sharp": 1.5, "sharp-down": 1, "sharp-up": 1,
    "natural-down": 0, "natural-up": 0, "flat-down": -1, "flat-up": -1, "double-sharp-down": 2,
    "double-sharp-up": 2, "flat-flat-down": -2, "flat-flat-up": -2, "triple-sharp": 3, "triple-flat": -3,
    "slash-quarter-sharp": 0.5, "slash-sharp": 1, "slash-flat": -1, "double-slash-flat": -2,
    "sharp-1": 1, "sharp-2": 1, "sharp-3": 1, "sharp-5": 1, "flat-1": -1, "flat-2": -1, "flat-3": -1,
    "flat-4": -1, "sori": 0.5, "koron": -0.5,
}

CLEF_SIGNS_WITH_LINE = ("G", "C", "F")
CLEF_DEFAULT_LINE = {"G": "2", "F": "4", "C": "3"}
# TAB and jianpu clefs are left out: outside the specification, and verovio 6.4 crashes on some TAB input
CLEF_OTHER_SIGNS = ("percussion", "none")
CLEFS: tuple[str, ...] = tuple(
    f"clef:{s}{line}" for s in CLEF_SIGNS_WITH_LINE for line in range(1, 6)
) + tuple(f"clef:{s}" for s in CLEF_OTHER_SIGNS)

NOTE_PREFIXES = ("print-object:no", "grace", "grace:slash", "chord")
STEMS = ("stem:up", "stem:down", "stem:none")
BEAMS = ("beam:begin", "beam:end", "beam:forward-hook", "beam:backward-hook")
TIEDS = ("tied:start", "tied:stop")
TUPLETS = ("tuplet:start", "tuplet:stop")
# extended flavour, in the order they are emitted on a note
EXTENDED = (
    "slur:start", "slur:stop", "fermata", "arpeggiate", "staccato", "accent",
    "strong-accent", "tenuto", "tremolo:single", "tremolo:start", "tremolo:stop",
    "tremolo:unmeasured", "trill-mark",
)

MAX_VOICE, MAX_STAFF, MAX_BEATS, MAX_TUPLET = 16, 4, 48, 16
# nested tuplets multiply out: products seen in real scores (OLiMPiC statistics; music21's corpus)
EXTRA_TIME_MODIFICATIONS = ("35in16", "125in8")
BEAT_TYPES = (1, 2, 4, 8, 16, 32, 64)
TIME_MODIFICATIONS: tuple[str, ...] = tuple(
    f"{a}in{n}" for a in range(1, MAX_TUPLET + 1) for n in range(1, MAX_TUPLET + 1) if a != n
) + EXTRA_TIME_MODIFICATIONS

RE_PITCH = re.compile(r"^([A-G])(\d)$")
RE_VOICE = re.compile(r"^voice:(\S+)$")
RE_STAFF = re.compile(r"^staff:(\d+)$")
RE_KEY = re.compile(r"^key:fifths:(-?\d+)$")
RE_BEATS = re.compile(r"^beats:(\d+)$")
RE_BEAT_TYPE = re.compile(r"^beat-type:(\d+)$")
RE_CLEF = re.compile(r"^clef:([GCF])(\d)$|^clef:(percussion|none)$")
RE_TIME_MOD = re.compile(r"^(\d+)in(\d+)$")


def all_tokens() -> list[str]:
    """Every token of the grammar, in the order of the shipped vocabulary file (specials first)."""
    toks: list[str] = list(SPECIALS)
    toks += [PART, MEASURE]
    toks += [f"key:fifths:{f}" for f in range(-7, 8)]
    toks += ["time"] + [f"beats:{b}" for b in range(1, MAX_BEATS + 1)] + [f"beat-type:{t}" for t in BEAT_TYPES]
    toks += list(CLEFS)
    toks += [f"staff:{s}" for s in range(1, MAX_STAFF + 1)]
    toks += list(NOTE_PREFIXES)
    toks += ["rest", "forward", "backup"] + list(PITCHES)
    toks += [f"voice:{v}" for v in range(1, MAX_VOICE + 1)]
    toks += list(NOTE_TYPES) + [MEASURE_REST]
    toks += list(TIME_MODIFICATIONS)
    toks += ["dot"] + list(ACCIDENTALS) + list(STEMS) + list(BEAMS) + list(TIEDS) + list(TUPLETS)
    toks += list(EXTENDED)
    assert len(toks) == len(set(toks)), "duplicate token in the LMX grammar"
    return toks


def note_quarters(note_type: str, dots: int = 0, actual: int = 1, normal: int = 1) -> Fraction:
    """Length in quarter notes of a note type with ``dots`` dots under an ``actual:normal`` tuplet."""
    base = TYPE_QUARTERS[note_type]
    total = base * (2 - Fraction(1, 2**dots))
    return total * Fraction(normal, actual)


def _is_dyadic(q: Fraction) -> bool:
    d = q.denominator
    return d & (d - 1) == 0


def _greedy_types(q: Fraction) -> list[str] | None:
    """Split a dyadic length into note types, largest first; None when it does not fit exactly."""
    out: list[str] = []
    rest = q
    for t in reversed(NOTE_TYPES):
        if rest <= 0:
            break
        if TYPE_QUARTERS[t] <= rest:
            out.append(t)
            rest -= TYPE_QUARTERS[t]
    return out if rest == 0 else None


def split_duration(q: Fraction) -> tuple[list[tuple[str, str | None]], Fraction]:
    """Split a forward/backup length (quarters) into ``(type, time-modification-or-None)`` steps.

    Plain note types are tried first, largest to smallest (as the specification does). A length that
    only a tuplet can express (e.g. 2/3 of a quarter) uses one time modification ``AinN`` for all
    steps, A being the odd part of the denominator. Returns the steps and the remainder that could
    not be expressed (0 when exact).
    """
    if q <= 0:
        return [], Fraction(0)
    if _is_dyadic(q):
        steps = _greedy_types(q)
        if steps is not None:
            return [(t, None) for t in steps], Fraction(0)
    else:
        odd = q.denominator
        while odd % 2 == 0:
            odd //= 2
        normal = 1
        while normal * 2 < odd:
            normal *= 2
        scaled = q * Fraction(odd, normal)  # length in un-modified notes
        steps = _greedy_types(scaled) if _is_dyadic(scaled) else None
        if steps is not None:
            mod = f"{odd}in{normal}"
            return [(t, mod) for t in steps], Fraction(0)
    # inexact: largest types that fit, report what is left
    out: list[tuple[str, str | None]] = []
    rest = q
    for t in reversed(NOTE_TYPES):
        if TYPE_QUARTERS[t] <= rest:
            out.append((t, None))
            rest -= TYPE_QUARTERS[t]
    return out, rest


def type_from_quarters(q: Fraction) -> tuple[str, int] | None:
    """The note type and dot count (0-3) whose plain length is ``q`` quarters, if any."""
    for t in NOTE_TYPES:
        for dots in range(4):
            if note_quarters(t, dots) == q:
                return t, dots
    return None
