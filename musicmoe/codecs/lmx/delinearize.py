"""LMX tokens -> MusicXML (score-partwise) text, tolerant of malformed model output.

Tokens that do not fit the grammar where they stand (unknown tokens, a modifier without a note, a note
without its type, ...) are skipped and reported in ``DelinearizeResult.errors``; the output is always
well-formed score-partwise MusicXML (music21 and verovio loading it is checked on real and fuzzed
sequences). What the linearizer drops is rebuilt from context: durations from types, dots and time
modifications (``divisions`` is the least common denominator of the part); ``<alter>`` from the key
signature, accidentals earlier in the measure and ties; beam ``continue`` elements and beam numbers;
measure-rest length from the time signature. When the tokens state no time signature (a system after
the first, as the specification prints it), an invisible ``<time print-object="no">`` with the part's
most common measure length is written; the linearizer skips invisible time signatures.

A sequence containing ``part`` tokens is split into parts there (``linearize_score``'s convention);
otherwise it is one part.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from .tokens import (
    ACCIDENTAL_ALTER,
    ACCIDENTALS,
    BEAMS,
    EXTENDED,
    MEASURE,
    MEASURE_REST,
    NOTE_TYPES,
    PART,
    RE_BEAT_TYPE,
    RE_BEATS,
    RE_CLEF,
    RE_KEY,
    RE_PITCH,
    RE_STAFF,
    RE_TIME_MOD,
    RE_VOICE,
    STEMS,
    TIEDS,
    TUPLETS,
    note_quarters,
)

_NOTE_TYPE_SET = frozenset(NOTE_TYPES)
_ACCIDENTAL_SET = frozenset(ACCIDENTALS)
_PREFIXES = ("print-object:no", "grace", "grace:slash", "chord")
_SHARP_ORDER, _FLAT_ORDER = "FCGDAEB", "BEADGCF"
_BEAM_VALUES = {"beam:begin": "begin", "beam:end": "end", "beam:forward-hook": "forward hook",
                "beam:backward-hook": "backward hook"}
_ARTICULATIONS = ("staccato", "accent", "strong-accent", "tenuto")
_DOCTYPE = ('<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" '
            '"http://www.musicxml.org/dtds/partwise.dtd">')
_MAX_MOD = 1024  # largest actual/normal number accepted in a time modification


@dataclass
class DelinearizeResult:
    """MusicXML text plus one message per token or structure that had to be skipped or repaired."""

    xml: str
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# parsing: tokens -> parts -> measures -> events
# ---------------------------------------------------------------------------------------------
@dataclass
class _Attr:
    kind: str  # "key" | "time" | "clef"
    values: tuple


@dataclass
class _Note:
    root: str  # "rest" | "pitch" | "forward" | "backup"
    pos: int  # token index, for messages
    step: str = ""
    octave: int = 0
    print_no: bool = False
    grace: bool = False
    slash: bool = False
    chord: bool = False
    voice: str | None = None
    type: str | None = None
    measure_rest: bool = False
    mod: tuple[int, int] | None = None
    dots: int = 0
    accidental: str | None = None
    stem: str | None = None
    staff: int | None = None
    beams: list[str] = field(default_factory=list)
    tieds: list[str] = field(default_factory=list)
    tuplets: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.type is not None or self.measure_rest

    def quarters(self) -> Fraction:
        actual, normal = self.mod or (1, 1)
        return note_quarters(self.type, self.dots, actual, normal) if self.type else Fraction(0)


class _Parser:
    """Turns one part's tokens into measures of ``_Attr``/``_Note`` events, skipping what does not fit."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        self.measures: list[list[_Attr | _Note]] = []
        self.note: _Note | None = None
        self.prefix: list[str] = []
        self.prefix_pos = 0

    def err(self, pos: int, tok: str, why: str) -> None:
        self.errors.append(f"token {pos} {tok!r}: {why}")

    def _events(self, pos: int, tok: str) -> list[_Attr | _Note]:
        if not self.measures:
            self.err(pos, tok, "content before the first 'measure'; a measure was opened")
            self.measures.append([])
        return self.measures[-1]

    def _close_note(self) -> None:
        n = self.note
        if n is not None and not n.complete:
            self.err(n.pos, n.root if n.root != "pitch" else f"{n.step}{n.octave}", "note without a type dropped")
        elif n is not None:
            self._events(n.pos, n.root).append(n)
        self.note = None

    def _drop_prefix(self) -> None:
        if self.prefix:
            self.err(self.prefix_pos, " ".join(self.prefix), "note prefix without a note dropped")
        self.prefix = []

    def feed(self, tokens: list[str], offset: int) -> list[list[_Attr | _Note]]:
        i, n = 0, len(tokens)
        while i < n:
            tok, pos = tokens[i], offset + i
            i += 1
            note = self.note
            # ---- structure and attributes: they end any open note ----
            if tok == MEASURE:
                self._close_note()
                self._drop_prefix()
                self.measures.append([])
                continue
            m_key, m_clef = RE_KEY.match(tok), RE_CLEF.match(tok)
            if m_key or m_clef or tok == "time":
                self._close_note()
                self._drop_prefix()
                if m_key:
                    fifths = int(m_key.group(1))
                    if -7 <= fifths <= 7:
                        self._events(pos, tok).append(_Attr("key", (fifths,)))
                    else:
                        self.err(pos, tok, "key signature outside -7..7 skipped")
                elif m_clef:
                    sign = m_clef.group(1) or m_clef.group(3)
                    line = int(m_clef.group(2)) if m_clef.group(2) else None
                    if line is not None and not 1 <= line <= 5:
                        self.err(pos, tok, "clef line outside 1..5 skipped")
                        continue
                    number = None
                    if i < n and RE_STAFF.match(tokens[i]):
                        number = int(RE_STAFF.match(tokens[i]).group(1))
                        i += 1
                        if not 1 <= number <= 16:
                            self.err(pos + 1, tokens[i - 1], "clef staff number outside 1..16 ignored")
                            number = None
                    self._events(pos, tok).append(_Attr("clef", (sign, line, number)))
                else:
                    mb = RE_BEATS.match(tokens[i]) if i < n else None
                    mt = RE_BEAT_TYPE.match(tokens[i + 1]) if i + 1 < n else None
                    if mb and mt and 1 <= int(mb.group(1)) <= 99 and 1 <= int(mt.group(1)) <= 128:
                        self._events(pos, tok).append(_Attr("time", (int(mb.group(1)), int(mt.group(1)))))
                        i += 2
                    else:
                        self.err(pos, tok, "'time' not followed by valid beats:N beat-type:M skipped")
                continue
            # ---- note prefixes ----
            if tok in _PREFIXES:
                self._close_note()
                if not self.prefix:
                    self.prefix_pos = pos
                if tok in self.prefix or (tok == "grace:slash" and "grace" not in self.prefix):
                    self.err(pos, tok, "misplaced note prefix skipped")
                else:
                    self.prefix.append(tok)
                continue
            # ---- note roots ----
            m_pitch = RE_PITCH.match(tok)
            if m_pitch or tok in ("rest", "forward", "backup"):
                self._close_note()
                new = _Note(root="pitch" if m_pitch else tok, pos=pos)
                if m_pitch:
                    new.step, new.octave = m_pitch.group(1), int(m_pitch.group(2))
                if new.root in ("forward", "backup"):
                    if self.prefix:
                        self.err(self.prefix_pos, " ".join(self.prefix), f"prefix not allowed before {tok!r} dropped")
                else:
                    new.print_no = "print-object:no" in self.prefix
                    new.grace = "grace" in self.prefix
                    new.slash = "grace:slash" in self.prefix
                    new.chord = "chord" in self.prefix
                    if new.chord and new.root == "rest":
                        self.err(self.prefix_pos, "chord", "a rest cannot be a chord note; 'chord' dropped")
                        new.chord = False
                self.prefix = []
                self.note = new
                continue
            if self.prefix and note is None:
                self._drop_prefix()
            # ---- note body ----
            if note is None:
                why = "unknown token skipped" if not _known_body(tok) else "token outside a note skipped"
                self.err(pos, tok, why)
                continue
            if not self._attach(note, tok):
                self.err(pos, tok, "unknown token skipped" if not _known_body(tok) else "misplaced token skipped")
        self._close_note()
        self._drop_prefix()
        return self.measures

    @staticmethod
    def _attach(note: _Note, tok: str) -> bool:
        """Attach a body token to the current note; False when it does not fit there."""
        move = note.root in ("forward", "backup")
        m_voice = RE_VOICE.match(tok)
        if m_voice:
            if move or note.voice is not None:
                return False
            note.voice = m_voice.group(1)
            return True
        if not note.complete:
            if tok in _NOTE_TYPE_SET:
                note.type = tok
                return True
            if tok == MEASURE_REST and note.root == "rest" and not note.grace:
                note.measure_rest = True
                return True
            return False
        m_mod = RE_TIME_MOD.match(tok)
        if m_mod:
            a, nn = int(m_mod.group(1)), int(m_mod.group(2))
            if note.mod is None and not note.measure_rest and 1 <= a <= _MAX_MOD and 1 <= nn <= _MAX_MOD:
                note.mod = (a, nn)
                return True
            return False
        if tok == "dot":
            if note.measure_rest or note.dots >= 4:
                return False
            note.dots += 1
            return True
        if move:
            return False
        if tok in _ACCIDENTAL_SET:
            if note.accidental is not None or note.root != "pitch":
                return False
            note.accidental = tok
            return True
        if tok in STEMS:
            if note.stem is not None:
                return False
            note.stem = tok.split(":")[1]
            return True
        m_staff = RE_STAFF.match(tok)
        if m_staff:
            s = int(m_staff.group(1))
            if note.staff is not None or not 1 <= s <= 16:
                return False
            note.staff = s
            return True
        if tok in _BEAM_VALUES:
            if len(note.beams) >= 8:
                return False
            note.beams.append(tok)
            return True
        if tok in TIEDS:
            if tok in note.tieds or note.root != "pitch":
                return False
            note.tieds.append(tok)
            return True
        if tok in TUPLETS:  # nested tuplets repeat the token
            if len(note.tuplets) >= 6:
                return False
            note.tuplets.append(tok)
            return True
        if tok in EXTENDED:
            slur = tok.startswith("slur:")  # several slurs may start/stop on one note
            if (tok in note.extended and not slur) or (slur and note.extended.count(tok) >= 8):
                return False
            if tok in ("tremolo:start", "tremolo:stop") and note.type in ("maxima", "long"):
                return False  # verovio 6.4 crashes on double tremolos of such notes
            note.extended.append(tok)
            return True
        return False


_BODY_KNOWN = frozenset(
    list(NOTE_TYPES) + [MEASURE_REST, "dot"] + list(ACCIDENTALS) + list(STEMS) + list(BEAMS) + list(TIEDS)
    + list(TUPLETS) + list(EXTENDED)
)


def _known_body(tok: str) -> bool:
    return (tok in _BODY_KNOWN or bool(RE_VOICE.match(tok) or RE_STAFF.match(tok) or RE_TIME_MOD.match(tok)
            or RE_BEATS.match(tok) or RE_BEAT_TYPE.match(tok)))


# ---------------------------------------------------------------------------------------------
# building: events -> MusicXML elements
# ---------------------------------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.replace("_", "-"): v for k, v in attrib.items()})
    if text is not None:
        el.text = text
    return el


def _content_length(events: list[_Attr | _Note]) -> Fraction:
    """Longest position reached in a measure, measure rests left out."""
    cursor, longest = Fraction(0), Fraction(0)
    for e in events:
        if isinstance(e, _Note) and not e.grace and not e.chord and not e.measure_rest:
            cursor += -e.quarters() if e.root == "backup" else e.quarters()
            longest = max(longest, cursor)
    return longest


def _time_signature(q: Fraction) -> tuple[int, int]:
    """A time signature lasting ``q`` quarters (``4/4`` when no plain one does)."""
    for beat_type in (4, 8, 16, 32, 2):
        beats = q * beat_type / 4
        if beats.denominator == 1 and 1 <= beats <= 99:
            return int(beats), beat_type
    return 4, 4


def _key_alters(fifths: int) -> dict[str, int]:
    if fifths >= 0:
        return {s: 1 for s in _SHARP_ORDER[:fifths]}
    return {s: -1 for s in _FLAT_ORDER[: -fifths]}


class _PartBuilder:
    """Writes one part's measures as MusicXML, tracking what the tokens leave implicit."""

    def __init__(self, part_el: ET.Element, errors: list[str], label: str):
        self.part = part_el
        self.errors = errors
        self.label = label
        self.durations: list[tuple[ET.Element, Fraction]] = []  # <duration> elements to fill in
        self.first_attrs: ET.Element | None = None
        self.key: dict[str, int] = {}
        self.time_q: Fraction | None = None
        self.last_measure_q: Fraction | None = None
        self.tie_alter: dict[tuple[str, int], float] = {}
        self.slurs: list[int] = []
        self.max_staff = 1
        self.clef_staff = False  # some clef carried a staff:N (the linearizer writes it when <staves> is stated)

    def err(self, m: int, why: str) -> None:
        self.errors.append(f"{self.label} measure {m + 1}: {why}")

    def build(self, measures: list[list[_Attr | _Note]]) -> None:
        lengths = [_content_length(ev) for ev in measures]
        counts = Counter(q for q in lengths if q > 0)
        typical = max(counts, key=lambda q: (counts[q], q)) if counts else Fraction(4)
        first_time = next((e for e in measures[0] if isinstance(e, _Attr) and e.kind == "time"), None)
        hidden_time = None if first_time is not None else _time_signature(typical)
        if hidden_time is not None:
            self.time_q = Fraction(4 * hidden_time[0], hidden_time[1])
        for mi, events in enumerate(measures):
            self.measure(mi, events, lengths[mi])
        divisions = 1
        for _, q in self.durations:
            divisions = math.lcm(divisions, q.denominator)
        for el, q in self.durations:
            el.text = str(int(q * divisions))
        attrs = self.first_attrs
        if attrs is None:  # first measure has no leading attributes: add one for divisions
            m0 = self.part.find("measure")
            attrs = ET.Element("attributes")
            m0.insert(0, attrs)
        attrs.insert(0, ET.Element("divisions"))
        attrs[0].text = str(divisions)
        if hidden_time is not None:
            # no time signature in the tokens: an invisible one (no LMX token) with the typical measure
            # length, so that music21 and verovio do not assume 4/4
            t = ET.Element("time", {"print-object": "no"})
            _sub(t, "beats", str(hidden_time[0]))
            _sub(t, "beat-type", str(hidden_time[1]))
            attrs.insert(1 + sum(1 for c in attrs if c.tag == "key"), t)
        if self.max_staff > 1 or self.clef_staff:
            staves = ET.Element("staves")
            staves.text = str(self.max_staff)
            # after divisions, key(s), time(s); before clefs
            idx = 1 + sum(1 for c in attrs if c.tag in ("key", "time"))
            attrs.insert(idx, staves)

    def _measure_rest_length(self, content: Fraction) -> Fraction:
        if self.time_q is not None:
            return self.time_q
        if content > 0:
            return content
        return self.last_measure_q or Fraction(4)

    def measure(self, mi: int, events: list[_Attr | _Note], content: Fraction) -> None:
        m_el = _sub(self.part, "measure", number=str(mi + 1))
        attrs: ET.Element | None = None
        attr_stage = 0  # 0 key, 1 time, 2 clef: MusicXML order inside one <attributes>
        voice = staff = stem = None
        cursor = longest = Fraction(0)
        prev_onset: Fraction | None = None
        measure_acc: dict[tuple[str, int], float] = {}
        beam_open: dict[tuple[str | None, bool], int] = {}
        mrest_q: Fraction | None = None
        self._pair_tremolos(mi, events)
        for e in events:
            if isinstance(e, _Attr):
                stage = {"key": 0, "time": 1, "clef": 2}[e.kind]
                if attrs is None or stage < attr_stage:
                    attrs = _sub(m_el, "attributes")
                    if mi == 0 and self.first_attrs is None and len(m_el) == 1:
                        self.first_attrs = attrs
                attr_stage = stage
                self._attribute(attrs, e)
                continue
            attrs = None
            if e.root in ("backup", "forward"):
                q = e.quarters()
                if e.root == "backup":
                    if q > cursor:
                        self.err(mi, f"backup of {q} quarters beyond the measure start clamped to {cursor}")
                        q = cursor
                    if q <= 0:
                        continue
                    cursor -= q
                    voice = staff = stem = None
                else:
                    cursor += q
                    longest = max(longest, cursor)
                prev_onset = None  # a chord cannot continue across a backup/forward
                el = _sub(m_el, e.root)
                self.durations.append((_sub(el, "duration"), q))
                continue
            if e.voice is not None:
                voice = e.voice
            if e.staff is not None:
                staff = e.staff
            if e.stem is not None:
                stem = e.stem
            if e.chord and prev_onset is None:
                self.err(mi, f"'chord' note at token {e.pos} has no preceding note; 'chord' dropped")
                e.chord = False
            if e.measure_rest:
                if mrest_q is None:
                    mrest_q = self._measure_rest_length(content)
                q = mrest_q
            else:
                q = Fraction(0) if e.grace else e.quarters()
            self._note(m_el, e, q, voice, staff, stem, measure_acc, beam_open)
            if not e.chord:  # chord tones and grace notes do not move the position
                prev_onset = cursor
                cursor += q
                longest = max(longest, cursor)
        if longest > 0:
            self.last_measure_q = longest
        notes = [e for e in events if isinstance(e, _Note) and e.root in ("pitch", "rest")]
        if notes and all(e.grace for e in notes):
            # grace notes without a note to lean on break music21: add an invisible measure rest
            fill = self.time_q or self.last_measure_q or Fraction(4)
            self.err(mi, "measure with only grace notes: an invisible measure rest was added")
            el = _sub(m_el, "note", print_object="no")
            _sub(el, "rest", measure="yes")
            self.durations.append((_sub(el, "duration"), fill))
            _sub(el, "voice", "1")

    def _pair_tremolos(self, mi: int, events: list[_Attr | _Note]) -> None:
        """Keep a double tremolo only as a start/stop pair of consecutive pitched notes of one voice
        (verovio crashes on some unpaired ones)."""
        voice, last = None, {}  # voice -> previous main note of that voice
        for e in events:
            if not isinstance(e, _Note):
                continue
            if e.root == "backup":
                voice = None
            if e.root in ("backup", "forward") or e.chord or e.grace:
                continue
            voice = e.voice if e.voice is not None else voice
            prev = last.get(voice)
            prev_starts = prev is not None and "tremolo:start" in prev.extended
            if "tremolo:stop" in e.extended and not (prev_starts and e.root == "pitch"):
                e.extended.remove("tremolo:stop")
                self.err(mi, f"unpaired tremolo:stop at token {e.pos} dropped")
            if prev_starts and "tremolo:stop" not in e.extended:
                prev.extended.remove("tremolo:start")
                self.err(mi, f"unpaired tremolo:start at token {prev.pos} dropped")
            if "tremolo:start" in e.extended and e.root != "pitch":
                e.extended.remove("tremolo:start")
                self.err(mi, f"tremolo:start on a rest at token {e.pos} dropped")
            last[voice] = e
        for prev in last.values():
            if "tremolo:start" in prev.extended:
                prev.extended.remove("tremolo:start")
                self.err(mi, f"unpaired tremolo:start at token {prev.pos} dropped")

    def _attribute(self, attrs: ET.Element, a: _Attr) -> None:
        if a.kind == "key":
            (fifths,) = a.values
            self.key = _key_alters(fifths)
            _sub(_sub(attrs, "key"), "fifths", str(fifths))
        elif a.kind == "time":
            beats, beat_type = a.values
            self.time_q = Fraction(4 * beats, beat_type)
            t = _sub(attrs, "time")
            _sub(t, "beats", str(beats))
            _sub(t, "beat-type", str(beat_type))
        else:
            sign, line, number = a.values
            c = _sub(attrs, "clef", **({"number": str(number)} if number is not None else {}))
            _sub(c, "sign", sign)
            if line is not None:
                _sub(c, "line", str(line))
            if number is not None:
                self.max_staff = max(self.max_staff, number)
                self.clef_staff = True

    def _alter(self, n: _Note, measure_acc: dict) -> float:
        key = (n.step, n.octave)
        if n.accidental is not None:
            alter = ACCIDENTAL_ALTER.get(n.accidental, 0)
            measure_acc[key] = alter
        elif "tied:stop" in n.tieds and key in self.tie_alter:
            alter = self.tie_alter[key]
        elif key in measure_acc:
            alter = measure_acc[key]
        else:
            alter = self.key.get(n.step, 0)
        if "tied:start" in n.tieds:
            self.tie_alter[key] = alter
        return alter

    def _note(self, m_el, n: _Note, q: Fraction, voice, staff, stem, measure_acc, beam_open) -> None:
        el = _sub(m_el, "note", **({"print_object": "no"} if n.print_no else {}))
        if n.grace:
            _sub(el, "grace", **({"slash": "yes"} if n.slash else {}))
        if n.chord:
            _sub(el, "chord")
        if n.root == "rest":
            _sub(el, "rest", **({"measure": "yes"} if n.measure_rest else {}))
        else:
            p = _sub(el, "pitch")
            _sub(p, "step", n.step)
            alter = self._alter(n, measure_acc)
            if alter:
                _sub(p, "alter", str(int(alter)) if float(alter).is_integer() else str(alter))
            _sub(p, "octave", str(n.octave))
        if not n.grace:
            self.durations.append((_sub(el, "duration"), q))
        for t in n.tieds:
            _sub(el, "tie", type=t.split(":")[1])
        if voice is not None:
            _sub(el, "voice", voice)
        if n.type is not None:
            _sub(el, "type", n.type)
        for _ in range(n.dots):
            _sub(el, "dot")
        if n.accidental is not None:
            _sub(el, "accidental", n.accidental)
        if n.mod is not None:
            tm = _sub(el, "time-modification")
            _sub(tm, "actual-notes", str(n.mod[0]))
            _sub(tm, "normal-notes", str(n.mod[1]))
        stemmed = n.root == "pitch" and n.type is not None and n.type not in ("whole", "breve", "long", "maxima")
        if n.stem is not None or (stem is not None and stemmed):
            _sub(el, "stem", n.stem or stem)
        if staff is not None:
            _sub(el, "staff", str(staff))
            self.max_staff = max(self.max_staff, staff)
        self._beams(el, n, voice, beam_open)
        self._notations(el, n)

    @staticmethod
    def _beams(el: ET.Element, n: _Note, voice, beam_open: dict) -> None:
        bkey = (voice, n.grace)
        k = beam_open.get(bkey, 0)
        if n.chord:  # beams belong to the chord's first note
            for j, b in enumerate(n.beams):
                _sub(el, "beam", _BEAM_VALUES[b], number=str(j + 1))
            return
        if not n.beams:
            beamable = n.root == "pitch" and n.type in NOTE_TYPES[:7] + ("eighth",)
            if k and beamable:
                for j in range(k):
                    _sub(el, "beam", "continue", number=str(j + 1))
            return
        ends = min(sum(b == "beam:end" for b in n.beams), k)
        begins = sum(b == "beam:begin" for b in n.beams)
        keep = k - ends
        # more levels than the note type has beams: the open group was never ended, start afresh
        levels = 8 - NOTE_TYPES.index(n.type) if n.type in NOTE_TYPES[:8] else 0
        if keep + len(n.beams) > max(levels, len(n.beams)):
            keep = max(0, levels - len(n.beams))
        numbers = list(range(1, keep + 1))
        for j in numbers:
            _sub(el, "beam", "continue", number=str(j))
        for j, b in enumerate(n.beams):
            number = keep + j + 1
            if number > 8:
                break
            _sub(el, "beam", _BEAM_VALUES[b], number=str(number))
        beam_open[bkey] = max(0, min(8, keep + begins))

    def _notations(self, el: ET.Element, n: _Note) -> None:
        if not (n.tieds or n.tuplets or n.extended):
            return
        nt = _sub(el, "notations")
        for t in n.tieds:
            _sub(nt, "tied", type=t.split(":")[1])
        for x in n.extended:
            if x.startswith("slur:"):
                if x == "slur:start":
                    number = next(i for i in range(1, 18) if i not in self.slurs or i == 17)
                    self.slurs.append(number)
                else:
                    number = self.slurs.pop() if self.slurs else 1
                _sub(nt, "slur", type=x.split(":")[1], number=str(min(number, 16)))
        for t in n.tuplets:
            _sub(nt, "tuplet", type=t.split(":")[1])
        orn = [x for x in n.extended if x.startswith("tremolo:") or x == "trill-mark"]
        if orn:
            o = _sub(nt, "ornaments")
            for x in orn:
                if x == "trill-mark":
                    _sub(o, "trill-mark")
                else:
                    _sub(o, "tremolo", "3", type=x.split(":")[1])
        arts = [x for x in n.extended if x in _ARTICULATIONS]
        if arts:
            a = _sub(nt, "articulations")
            for x in arts:
                _sub(a, x, **({"type": "up"} if x == "strong-accent" else {}))
        if "fermata" in n.extended:
            _sub(nt, "fermata", type="upright")
        if "arpeggiate" in n.extended:
            _sub(nt, "arpeggiate")


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
def _split_parts(tokens: list[str]) -> list[tuple[int, list[str]]]:
    if PART not in tokens:
        return [(0, tokens)]
    chunks: list[tuple[int, list[str]]] = []
    start = 0
    for i, t in enumerate(tokens + [PART]):
        if t == PART:
            chunks.append((start, tokens[start:i]))
            start = i + 1
    if not chunks[0][1]:
        chunks = chunks[1:]  # the usual leading 'part'
    return chunks


def _check_tokens(tokens) -> list[str]:
    if isinstance(tokens, str):
        return tokens.split()
    try:
        toks = list(tokens)
    except TypeError as e:
        raise TypeError(f"delinearize needs a sequence of str tokens, got {type(tokens).__name__}") from e
    for t in toks:
        if not isinstance(t, str):
            raise TypeError(f"delinearize needs str tokens, got {type(t).__name__}: {t!r}")
    return toks


def delinearize_with_report(tokens: list[str]) -> DelinearizeResult:
    """MusicXML text of an LMX token sequence, with the list of skipped/repaired tokens and structures.

    Never raises on a junk sequence; raises ``TypeError`` only when ``tokens`` is not a sequence of str
    (a single str is split on white space).
    """
    toks = _check_tokens(tokens)
    errors: list[str] = []
    parsed: list[list[list[_Attr | _Note]]] = []
    for offset, chunk in _split_parts(toks):
        measures = _Parser(errors).feed(chunk, offset)
        if not measures:
            errors.append(f"token {offset}: part without measures dropped")
            continue
        parsed.append(measures)
    if not parsed:
        errors.append("no measures in the sequence; wrote one empty measure")
        parsed = [[[]]]
    n_measures = max(len(p) for p in parsed)
    for pi, p in enumerate(parsed):
        if len(p) < n_measures:
            errors.append(f"part {pi + 1} has {len(p)} measures, padded with empty ones to {n_measures}")
            p.extend([] for _ in range(n_measures - len(p)))

    score = ET.Element("score-partwise", version="4.0")
    ident = _sub(score, "identification")
    _sub(_sub(ident, "encoding"), "software", "musicmoe LMX delinearizer")
    plist = _sub(score, "part-list")
    for pi in range(len(parsed)):
        sp = _sub(plist, "score-part", id=f"P{pi + 1}")
        _sub(sp, "part-name", f"Part {pi + 1}")
    for pi, measures in enumerate(parsed):
        part_el = _sub(score, "part", id=f"P{pi + 1}")
        _PartBuilder(part_el, errors, f"part {pi + 1}").build(measures)
    ET.indent(score, space="  ")
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + _DOCTYPE + "\n" + ET.tostring(score, encoding="unicode")
    return DelinearizeResult(xml=xml + "\n", errors=errors)


def delinearize(tokens: list[str], errors: list[str] | None = None) -> str:
    """MusicXML (score-partwise) text of an LMX token sequence; problems are appended to ``errors``."""
    res = delinearize_with_report(tokens)
    if errors is not None:
        errors.extend(res.errors)
    return res.xml
