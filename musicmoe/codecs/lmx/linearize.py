"""MusicXML ``<part>`` -> Linearized MusicXML (LMX) tokens, per the OLiMPiC specification.

Token order inside a note: ``print-object:no? grace grace:slash? chord? (rest|PITCH) voice:N?
(TYPE AinN? | rest:measure) dot* ACCIDENTAL? stem:X? staff:N? beam:* tied:* tuplet:*`` and, in the
extended flavour, ``slur:* fermata? arpeggiate? staccato? accent? strong-accent? tenuto? tremolo:X?
trill-mark?``. Voice, staff and stem are emitted only when they change; the tracking restarts at each
measure and after each ``<backup>``, and nothing else resets it: a clef change in mid-measure does not
make the next note restate its staff. Time modifications are written as stated (``6in4`` stays
``6in4``), as in the golden fixtures, right after the type for every note (``print-object:no`` ones too).

A clef is ``clef:XN`` followed by ``staff:N`` when the part has stated ``<staves>`` (``N`` from the clef's
``number``, 1 when absent), and by nothing otherwise, as the OLiMPiC linearizer does.

System windows: the first measure of a window starts with the key signature and clefs in effect (as a
printed system restates them; the specification does not restate the time signature, which is emitted
only where the MusicXML states it, unless ``restate_time=True``). A ``<time print-object="no">`` is in
effect but emits no token (LMX encodes what is printed). The attributes that open that measure
are folded into this header, in MusicXML order (key, time, clefs by staff).

Multi-part scores: every part's tokens are preceded by a ``part`` token (a single-part score has none).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction

from .io import load_musicxml, system_breaks
from .tokens import (
    ACCIDENTALS,
    CLEF_DEFAULT_LINE,
    CLEF_OTHER_SIGNS,
    CLEF_SIGNS_WITH_LINE,
    MEASURE_REST,
    NOTE_TYPES,
    PART,
    split_duration,
    type_from_quarters,
)

log = logging.getLogger(__name__)

FLAVORS = ("core", "extended")
_NOTE_TYPE_SET = frozenset(NOTE_TYPES)
_ACCIDENTAL_SET = frozenset(ACCIDENTALS)
_BEAM_TOKENS = {"begin": "beam:begin", "end": "beam:end", "forward hook": "beam:forward-hook",
                "backward hook": "beam:backward-hook"}
_ARTICULATIONS = ("staccato", "accent", "strong-accent", "tenuto")
_CONTENT_TAGS = ("note", "backup", "forward")


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _frac(text: str | None) -> Fraction | None:
    try:
        return Fraction(text) if text is not None else None
    except (ValueError, ZeroDivisionError):
        return None


@dataclass
class _PartState:
    """Attributes in effect inside a part (carried from measure to measure)."""

    divisions: Fraction = Fraction(1)
    fifths: int | None = None
    time: tuple[int, int] | None = None
    staves: int | None = None  # from <staves>; None while the part has not stated it
    clefs: dict[int, str] = field(default_factory=dict)  # staff number -> clef token

    def clef_tokens(self, staff: int) -> list[str]:
        """The clef of ``staff``, with ``staff:N`` after it when the part states ``<staves>``."""
        tok = self.clefs[staff]
        return [tok] if self.staves is None else [tok, f"staff:{staff}"]

    def measure_quarters(self) -> Fraction | None:
        if self.time is None:
            return None
        beats, beat_type = self.time
        return Fraction(4 * beats, beat_type)


def _time_of(el: ET.Element) -> tuple[int, int] | None:
    """``(beats, beat-type)`` of a ``<time>`` element; composite beats like ``3+2`` are summed."""
    if el.find("senza-misura") is not None:
        return None
    beats_t, bt_t = _text(el.find("beats")), _text(el.find("beat-type"))
    if beats_t is None or bt_t is None:
        return None
    try:
        beats = sum(int(x) for x in beats_t.split("+"))
        beat_type = int(bt_t)
    except ValueError:
        return None
    if beats <= 0 or beat_type <= 0:
        return None
    return beats, beat_type


def _clef(el: ET.Element) -> tuple[int, str] | None:
    """Staff number (``number``, 1 when absent) and token of a ``<clef>``."""
    sign = _text(el.find("sign"))
    if sign is None:
        return None
    if sign.upper() in CLEF_SIGNS_WITH_LINE:
        sign = sign.upper()
        line = _text(el.find("line")) or CLEF_DEFAULT_LINE[sign]
        tok = f"clef:{sign}{line}"
    elif sign in CLEF_OTHER_SIGNS:
        tok = f"clef:{sign}"
    else:
        return None
    return (_int(el.get("number")) or 1), tok


class _PartLinearizer:
    """Emits one part's tokens measure by measure; voice/staff/stem are the per-voice change trackers."""

    def __init__(self, flavor: str, restate_time: bool, warnings: list[str] | None, name: str):
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.extended = flavor == "extended"
        self.restate_time = restate_time
        self.warnings = warnings
        self.name = name
        self.state = _PartState()
        self.out: list[str] = []
        self.m_index = 0  # 0-based index of the measure being linearized (for warnings)
        self.voice: str | None = None
        self.staff: str | None = None
        self.stem: str | None = None

    def warn(self, msg: str) -> None:
        msg = f"{self.name} measure {self.m_index}: {msg}"
        log.debug(msg)
        if self.warnings is not None:
            self.warnings.append(msg)

    # -- attributes ---------------------------------------------------------------------------
    def attributes(self, attrs: ET.Element, emit: bool) -> bool:
        """Apply an ``<attributes>`` element to the state (emitting its tokens when ``emit``).

        Returns whether it held a visible time signature."""
        st, had_time = self.state, False
        staves = _int(_text(attrs.find("staves")))
        if staves is not None and staves > 0:
            st.staves = staves
        for el in attrs:
            if el.tag == "divisions":
                d = _frac(_text(el))
                if d is not None and d > 0:
                    st.divisions = d
            elif el.tag == "key":
                f = _int(_text(el.find("fifths")))
                if f is not None:
                    st.fifths = f
                    if emit:
                        self.out.append(f"key:fifths:{f}")
            elif el.tag == "time":
                t = _time_of(el)
                if t is not None:
                    st.time = t
                    if el.get("print-object") == "no":  # invisible: in effect, but not a token
                        continue
                    had_time = True
                    if emit:
                        self.out += ["time", f"beats:{t[0]}", f"beat-type:{t[1]}"]
            elif el.tag == "clef":
                c = _clef(el)
                if c is not None:
                    st.clefs[c[0]] = c[1]
                    if emit:
                        self.out += st.clef_tokens(c[0])
        return had_time

    def header(self, leading: list[ET.Element]) -> None:
        """Key, (time), clefs in effect at a window's first measure, merged with its opening attributes."""
        had_time = False
        for a in leading:
            had_time |= self.attributes(a, emit=False)
        st = self.state
        if st.fifths is not None:
            self.out.append(f"key:fifths:{st.fifths}")
        if st.time is not None and (had_time or self.restate_time):
            self.out += ["time", f"beats:{st.time[0]}", f"beat-type:{st.time[1]}"]
        for staff in sorted(st.clefs):
            self.out += st.clef_tokens(staff)

    # -- measure content ----------------------------------------------------------------------
    def measure(self, measure: ET.Element, is_first: bool) -> None:
        self.out.append("measure")
        self.voice = self.staff = self.stem = None
        children = list(measure)
        skip: set[int] = set()
        if is_first:
            leading = []
            for c in children:
                if c.tag in _CONTENT_TAGS:
                    break
                if c.tag == "attributes":
                    leading.append(c)
                    skip.add(id(c))
            self.header(leading)
        for c in children:
            if c.tag == "note":
                self.note(c)
            elif c.tag == "attributes":
                if id(c) not in skip:
                    self.attributes(c, emit=True)
            elif c.tag in ("backup", "forward"):
                self.move(c)

    def move(self, el: ET.Element) -> None:
        dur = _frac(_text(el.find("duration")))
        if dur is None or dur <= 0:
            self.warn(f"<{el.tag}> without a positive duration skipped")
            return
        steps, rest = split_duration(dur / self.state.divisions)
        if rest:
            self.warn(f"<{el.tag}> of {dur} divisions is not a sum of note types ({rest} quarters dropped)")
        for t, mod in steps:
            self.out += [el.tag, t] + ([mod] if mod else [])
        if el.tag == "backup":
            self.voice = self.staff = self.stem = None

    def _root_type(self, note: ET.Element, is_rest: bool, actual: int, normal: int) -> tuple[str, int] | None:
        """Type token and dot count of a note: from <type>, else ``rest:measure`` for a measure rest, else
        ``eighth`` for a grace note, else inferred from <duration>."""
        t = _text(note.find("type"))
        if t in _NOTE_TYPE_SET:
            return t, len(note.findall("dot"))
        rest_el = note.find("rest")
        if is_rest and rest_el is not None and rest_el.get("measure") == "yes":
            return MEASURE_REST, 0
        if note.find("grace") is not None:
            return "eighth", len(note.findall("dot"))  # a grace note drawn without a stated type
        dur = _frac(_text(note.find("duration")))
        if dur is None or dur <= 0:
            return None
        q = dur / self.state.divisions
        if is_rest and q == self.state.measure_quarters():
            return MEASURE_REST, 0
        return type_from_quarters(q * Fraction(actual, normal))

    def note(self, note: ET.Element) -> None:
        toks: list[str] = []
        if note.get("print-object") == "no":
            toks.append("print-object:no")
        grace = note.find("grace")
        if grace is not None:
            toks.append("grace")
            if grace.get("slash") == "yes":
                toks.append("grace:slash")
        if note.find("chord") is not None:
            toks.append("chord")
        is_rest = note.find("rest") is not None
        if is_rest:
            toks.append("rest")
        else:
            p = note.find("pitch")
            if p is not None:
                step, octave = _text(p.find("step")), _text(p.find("octave"))
            else:  # unpitched (percussion): its display position
                u = note.find("unpitched")
                step = _text(u.find("display-step")) if u is not None else None
                octave = _text(u.find("display-octave")) if u is not None else None
            if step is None or octave is None:
                self.warn("note without pitch or rest skipped")
                return
            toks.append(f"{step.upper()}{octave}")
        voice = _text(note.find("voice"))
        if voice is not None and voice != self.voice:
            toks.append(f"voice:{voice}")

        tremolo = note.find("notations/ornaments/tremolo")
        tremolo_type = None if tremolo is None else tremolo.get("type", "single")
        actual = _int(_text(note.find("time-modification/actual-notes"))) or 1
        normal = _int(_text(note.find("time-modification/normal-notes"))) or 1
        root = self._root_type(note, is_rest, actual, normal)
        if root is None:
            self.warn(f"note without a usable <type>/<duration> skipped: {ET.tostring(note)[:80]!r}")
            return
        note_type, dots = root
        toks.append(note_type)
        if actual != normal and tremolo_type not in ("start", "stop") and note_type != MEASURE_REST:
            toks.append(f"{actual}in{normal}")
        toks += ["dot"] * dots

        acc = _text(note.find("accidental"))
        if acc is not None:
            if acc in _ACCIDENTAL_SET:
                toks.append(acc)
            else:
                self.warn(f"accidental {acc!r} ignored")
        stem = _text(note.find("stem"))
        new_stem = self.stem
        if stem in ("up", "down", "none") and stem != self.stem:
            toks.append(f"stem:{stem}")
            new_stem = stem
        staff = _text(note.find("staff"))
        if staff is not None and staff != self.staff:
            toks.append(f"staff:{staff}")
        for b in note.findall("beam"):
            tok = _BEAM_TOKENS.get((b.text or "").strip())
            if tok:
                toks.append(tok)
        for tied in note.findall("notations/tied"):
            if tied.get("type") in ("start", "stop"):
                toks.append(f"tied:{tied.get('type')}")
        for tup in note.findall("notations/tuplet"):
            if tup.get("type") in ("start", "stop"):
                toks.append(f"tuplet:{tup.get('type')}")
        if self.extended:
            toks += self._extended(note, tremolo_type)

        self.out += toks
        if voice is not None:
            self.voice = voice
        if staff is not None:
            self.staff = staff
        self.stem = new_stem

    @staticmethod
    def _extended(note: ET.Element, tremolo_type: str | None) -> list[str]:
        toks: list[str] = []
        for s in note.findall("notations/slur"):
            if s.get("type") in ("start", "stop"):
                toks.append(f"slur:{s.get('type')}")
        if note.find("notations/fermata") is not None:
            toks.append("fermata")
        if note.find("notations/arpeggiate") is not None:
            toks.append("arpeggiate")
        for a in _ARTICULATIONS:
            if note.find(f"notations/articulations/{a}") is not None:
                toks.append(a)
        if tremolo_type in ("single", "start", "stop", "unmeasured"):
            toks.append(f"tremolo:{tremolo_type}")
        if note.find("notations/ornaments/trill-mark") is not None:
            toks.append("trill-mark")
        return toks


def linearize_part(
    part: ET.Element,
    measures: tuple[int, int] | None = None,
    *,
    flavor: str = "core",
    restate_time: bool = False,
    warnings: list[str] | None = None,
) -> list[str]:
    """LMX tokens of one ``<part>`` for measures ``[first, last]`` (0-based ``<measure>`` indices, inclusive).

    ``measures=None`` means the whole part. The window's first measure restates key and clefs (and the
    time signature with ``restate_time=True``). Problems that lose information (an unsplittable
    ``<backup>``, a note without type or duration) are appended to ``warnings`` when given.
    """
    ms = part.findall("measure")
    if measures is None:
        if not ms:
            return []
        first, last = 0, len(ms) - 1
    else:
        first, last = int(measures[0]), int(measures[1])
        if first < 0 or last < first:
            raise ValueError(f"bad measure window {measures!r}: need 0 <= first <= last")
        if first >= len(ms):
            return []
        last = min(last, len(ms) - 1)
    lin = _PartLinearizer(flavor, restate_time, warnings, f"part {part.get('id', '?')}")
    for m in ms[:first]:
        for a in m.findall("attributes"):
            lin.attributes(a, emit=False)
    for i in range(first, last + 1):
        lin.m_index = i
        lin.measure(ms[i], is_first=i == first)
    return lin.out


def linearize_score(root: ET.Element, measures: tuple[int, int] | None = None, **kwargs) -> list[str]:
    """LMX tokens of all parts: a single part exactly as ``linearize_part``; several parts each
    preceded by a ``part`` token. ``kwargs`` go to ``linearize_part``."""
    parts = root.findall("part")
    if len(parts) == 1:
        return linearize_part(parts[0], measures, **kwargs)
    out: list[str] = []
    for p in parts:
        out.append(PART)
        out += linearize_part(p, measures, **kwargs)
    return out


def linearize_file(path: str | os.PathLike, **kwargs) -> list[list[str]]:
    """One LMX token list per system (``system_breaks``) of a MusicXML file (.musicxml/.xml/.mxl)."""
    root = load_musicxml(path)
    return [linearize_score(root, w, **kwargs) for w in system_breaks(root)]
