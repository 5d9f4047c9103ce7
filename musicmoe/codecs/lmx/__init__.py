"""LMX (Linearized MusicXML) codec: MusicXML <-> tokens per system and part, plus a fixed vocabulary.

Format: the OLiMPiC specification (ufal/olimpic-icdar24, docs/linearized-musicxml.md), core flavour by
default. Conventions beyond it: multi-part scores put a ``part`` token before each part; a window's first
measure restates key and clefs (see ``linearize``).
"""

from .delinearize import DelinearizeResult, delinearize, delinearize_with_report
from .errors import LmxError
from .io import (
    fixed_windows,
    format_lmx,
    load_musicxml,
    parse_lmx_text,
    parse_musicxml_bytes,
    read_lmx,
    system_breaks,
)
from .linearize import linearize_file, linearize_part, linearize_score
from .vocabulary import VOCABULARY_FILE, Vocabulary

__all__ = [
    "DelinearizeResult",
    "LmxError",
    "VOCABULARY_FILE",
    "Vocabulary",
    "delinearize",
    "delinearize_with_report",
    "fixed_windows",
    "format_lmx",
    "linearize_file",
    "linearize_part",
    "linearize_score",
    "load_musicxml",
    "parse_lmx_text",
    "parse_musicxml_bytes",
    "read_lmx",
    "system_breaks",
]
