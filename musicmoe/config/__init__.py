"""Typed, validated configuration composed from YAML files under ``configs/``."""

from musicmoe.config.compose import (
    CONFIG_ROOT,
    ConfigError,
    compose,
    config_differences,
    flat_items,
    flatten,
    load_saved,
    save_config,
    to_yaml,
)


def load_config(config=None, overrides=(), root=None):
    """Compose the root :class:`~musicmoe.config.schema.Config` from a file and ``key=value`` overrides."""
    from musicmoe.config.schema import Config

    return compose(Config, config, overrides, root)


__all__ = ["CONFIG_ROOT", "ConfigError", "compose", "config_differences", "flat_items", "flatten", "load_config",
           "load_saved", "save_config", "to_yaml"]
