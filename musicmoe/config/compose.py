"""Compose YAML files from ``configs/`` into one validated, typed config.

A config file may start with a ``defaults`` list naming files of config groups, e.g.::

    defaults:
      - model: tiny          # configs/model/tiny.yaml, merged under the key ``model``
      - trainer: cpu
      - /experiment/base     # a leading slash merges a whole file at the root

Later entries, then the file's own keys, then command-line overrides ``key.sub=value`` win.  Every step is
merged into the structured schema, so an unknown or misspelled key is an error naming the key and suggesting
the closest valid one, and a value of the wrong type is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key (and file) at fault."""


def _valid_keys(schema: DictConfig, dotted: str) -> list[str]:
    node: Any = schema
    for part in dotted.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return []
        node = node[part]
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _suggest(schema: DictConfig, dotted: str) -> str:
    keys = _valid_keys(schema, dotted)
    leaf = dotted.split(".")[-1]
    close = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.5)
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    if keys:
        return f"; valid keys here: {', '.join(sorted(keys))}"
    return ""


def _merge(schema: DictConfig, base: DictConfig, update: DictConfig | dict, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except ConfigKeyError as err:
        key = err.full_key or str(err.key)
        item = err.object_type
        if (item is not None and dataclasses.is_dataclass(item) and key == str(err.key)
                and item is not schema._metadata.object_type):
            # a key inside a list element (e.g. one entry of data.sources): OmegaConf reports no path
            fields = [f.name for f in dataclasses.fields(item)]
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{key}' in a list entry of type {item.__name__} in {source}"
                              f"{hint}") from None
        raise ConfigError(f"unknown config key '{key}' in {source}{_suggest(schema, key)}") from None
    except ValidationError as err:
        raise ConfigError(f"invalid value for config key '{err.full_key}' in {source}: {err.msg}") from None
    except (OmegaConfBaseException, TypeError, ValueError) as err:
        raise ConfigError(f"cannot apply {source}: {err}") from None


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml errors come in many types
        raise ConfigError(f"cannot parse config file {path}: {err}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping, not a {type(node).__name__}")
    return node


def _resolve_group_file(root: Path, group: str, name: str) -> Path:
    path = root / group / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (root / group).glob("*.yaml")) if (root / group).is_dir() else []
        hint = f" (available: {', '.join(options)})" if options else ""
        raise ConfigError(f"config group file {path} not found{hint}")
    return path


def _expand(path: Path, root: Path, seen: tuple[Path, ...] = ()) -> list[tuple[DictConfig, str]]:
    """Return (fragment, source-name) pairs in merge order for ``path`` and its defaults list."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"defaults cycle: {' -> '.join(map(str, seen + (path,)))}")
    node = _load_yaml(path)
    out: list[tuple[DictConfig, str]] = []
    defaults = node.pop("defaults", None) if "defaults" in node else None
    if defaults is not None:
        if not isinstance(defaults, ListConfig):
            raise ConfigError(f"'defaults' in {path} must be a list")
        for entry in defaults:
            if isinstance(entry, str):
                target = root / f"{entry.lstrip('/')}.yaml"
                out.extend(_expand(target, root, seen + (path,)))
            elif isinstance(entry, DictConfig) and len(entry) == 1:
                group, name = next(iter(entry.items()))
                group_path = _resolve_group_file(root, str(group).lstrip("/"), str(name))
                for frag, src in _expand(group_path, root, seen + (path,)):
                    nested: DictConfig = OmegaConf.create({})
                    OmegaConf.update(nested, str(group).lstrip("/").replace("/", "."), frag, merge=True)
                    out.append((nested, src))
            else:
                raise ConfigError(f"bad defaults entry {entry!r} in {path}: use 'group: name' or '/file'")
    out.append((node, str(path)))
    return out


def compose(
    schema_cls: type[T],
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    root: Path | None = None,
) -> T:
    """Build a ``schema_cls`` instance from a YAML file (with defaults) plus ``key=value`` overrides.

    Raises ``ConfigError`` naming the file/key on unknown keys, wrong types or malformed overrides.
    ``__post_init__`` validation of the dataclasses runs on the result.
    """
    root = (root or CONFIG_ROOT).resolve()
    schema = OmegaConf.structured(schema_cls)
    cfg = schema.copy()
    if config is not None:
        path = Path(config)
        if not path.is_file() and (root / path).is_file():
            path = root / path
        for frag, src in _expand(path, root):
            cfg = _merge(schema, cfg, frag, src)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            update = OmegaConf.from_dotlist([f"{key}={value}"])
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot parse override '{item}': {err}") from None
        cfg = _merge(schema, cfg, update, f"override '{item}'")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete or invalid config: {err}") from None
    except (ValueError, TypeError) as err:  # __post_init__ validation
        raise ConfigError(str(err)) from None
    return obj  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    """YAML text of a config dataclass (what ``save_config`` writes)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, directory: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to the outputs it produced (atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(target)
    return target


def load_saved(schema_cls: type[T], path: str | Path) -> T:
    """Read back a config saved by ``save_config`` (validated against the current schema)."""
    return compose(schema_cls, Path(path), root=Path(path).parent)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}`` (lists stay values)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def flat_items(cfg: Any) -> dict[str, Any]:
    """A config dataclass as flattened ``{"section.key": value}``."""
    return flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))


def config_differences(old: Any, new: Any, keep: Any = None) -> list[str]:
    """``key: old -> new`` for each flattened key (those ``keep(key)`` accepts, default all) whose value differs."""
    a, b = flat_items(old), flat_items(new)
    keys = sorted(k for k in set(a) | set(b) if keep is None or keep(k))
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys
            if a.get(k, "<unset>") != b.get(k, "<unset>")]
