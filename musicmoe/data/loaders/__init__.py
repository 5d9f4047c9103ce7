"""Importers of published datasets into the common corpus format (``musicmoe import DATASET SRC --out DIR``).

Each turns the dataset's on-disk layout into :class:`~musicmoe.data.example.Example` s written with
``ShardWriter`` (one shard per source item, so an interrupted import resumes where it stopped); once
tokenized, the corpora mix in training by config (``data.sources``, :mod:`musicmoe.data.mix`):

- ``olimpic``: system images + LMX (synthetic and scanned variants);
- ``grandstaff``: system images + LMX (from .lmx, .musicxml or **kern);
- ``maestro``: piano audio + MIDI, cut into segments;
- ``musicnet``: ensemble audio + MIDI from the note labels, cut into segments.

``run_import(get_loader(name), ImportConfig(source=..., out=...))`` does the work.
"""

from musicmoe.data.loaders.common import DatasetLayoutError, ImportConfig, ItemError, run_import

LOADERS = ("olimpic", "grandstaff", "maestro", "musicnet")


def get_loader(name: str):
    """The importer of dataset ``name`` (one of :data:`LOADERS`)."""
    if name == "olimpic":
        from musicmoe.data.loaders.olimpic import OlimpicLoader

        return OlimpicLoader()
    if name == "grandstaff":
        from musicmoe.data.loaders.grandstaff import GrandStaffLoader

        return GrandStaffLoader()
    if name == "maestro":
        from musicmoe.data.loaders.maestro import MaestroLoader

        return MaestroLoader()
    if name == "musicnet":
        from musicmoe.data.loaders.musicnet import MusicNetLoader

        return MusicNetLoader()
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)}")


__all__ = ["LOADERS", "DatasetLayoutError", "ImportConfig", "ItemError", "get_loader", "run_import"]
