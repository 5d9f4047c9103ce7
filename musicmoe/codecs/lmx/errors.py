"""Errors of the LMX codec."""


class LmxError(ValueError):
    """Bad input for the LMX codec (unreadable file, not score-partwise MusicXML, ...); names the file."""
