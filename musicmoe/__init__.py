"""musicmoe: one mixture-of-experts Transformer that translates music between its four forms.

Packages: ``codecs`` (tokenizers per modality), ``data`` (corpora, shards, loaders), ``models`` (the
translator), ``training`` (Lightning), ``metrics``, ``sweeps`` (SLURM experiments) and ``cli``.
"""

__version__ = "0.1.0"

MODALITIES = ("image", "lmx", "midi", "audio")
