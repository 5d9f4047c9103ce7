"""Corpus builder: scores -> engraved system crops + LMX + MIDI + audio, one shard per source file.

``build_corpus(cfg) -> report`` (also written to ``DIR/report.json``); ``corpus_stats(dir)``;
``export_example(dir, index, outdir)``.  The settings are :class:`CorpusConfig` (``corpus`` config section).
"""

from musicmoe.data.builder.config import CorpusConfig, content_keys

__all__ = ["BuildError", "CorpusConfig", "build_corpus", "content_keys", "corpus_stats", "export_example"]


def __getattr__(name: str):  # lazy: importing the config must not import verovio/music21
    if name in ("build_corpus", "BuildError"):
        from musicmoe.data.builder import runner

        return getattr(runner, name)
    if name in ("corpus_stats", "export_example"):
        from musicmoe.data.builder import stats

        return getattr(stats, name)
    raise AttributeError(name)
