"""Corpora: the example schema, shards on disk, builders, tokenization and the training data module."""

from musicmoe.data.example import Example
from musicmoe.data.shards import Corpus, CorpusError, ShardWriter, write_manifest
from musicmoe.data.split import split_for

__all__ = ["Corpus", "CorpusError", "Example", "ShardWriter", "split_for", "write_manifest"]
