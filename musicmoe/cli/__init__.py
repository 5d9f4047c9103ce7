"""The ``musicmoe`` command line: one module per command group, each exposing ``register(subparsers)``."""
