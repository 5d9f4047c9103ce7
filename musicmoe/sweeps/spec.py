"""Sweep files: a base config plus a grid and/or a list of overrides, expanded into named runs.

A sweep file (``experiments/sweeps/*.yaml``)::

    name: ablation_moe               # default: the file's stem
    base: experiment/paper.yaml      # config file: relative to configs/, to the sweep file, or to the cwd
    cluster: gpu                     # configs/cluster/gpu.yaml (or a path); default: the base config's cluster
    cluster_overrides: {time: "48:00:00"}
    out_dir: runs/sweeps             # run dirs are <out_dir>/<run name>; relative to the cwd
    metric: eval/omr/ser              # key metric shown by --status
    overrides: {trainer.max_steps: 100000}   # every run (a mapping or a list of key=value)
    grid: {run.seed: [0, 1]}         # cartesian product
    runs:                            # explicit runs, each combined with every grid point
      - {label: dense, model.shared_across_modalities: true}
      - {label: moe}

Keys starting with ``_`` are ignored (a place for YAML anchors, e.g. a task-weight mapping reused by runs).

A run's identity is a hash of the base file's name and its *semantic* overrides, read back from the
resolved config (so ``1`` and ``1.0`` agree); the run's location (``run.out_dir``, ``run.name``) and the
cluster (``cluster.*``) are not semantic.  The run name is ``<label>-<hash>``: submitting the same sweep
again finds the same run dirs, and two different configs never share one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from musicmoe.config import CONFIG_ROOT, ConfigError, compose, load_config
from musicmoe.config.schema import Config
from musicmoe.sweeps.config import ClusterConfig

SWEEP_KEYS = ("name", "description", "base", "cluster", "cluster_overrides", "out_dir", "metric",
              "overrides", "grid", "runs")
# keys that say where a run lives or runs, not what it computes: left out of the run's hash
NON_SEMANTIC = ("run.out_dir", "run.name")
NON_SEMANTIC_PREFIXES = ("cluster.",)
HASH_LEN = 8
_SLUG = re.compile(r"[^A-Za-z0-9_.+-]+")
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./+-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "~", "y", "n"}


class SweepError(ConfigError):
    """A sweep file is invalid; the message names the file and the entry at fault."""


def format_value(value: Any) -> str:
    """Render a value so that ``OmegaConf.from_dotlist`` (used by ``load_config``) reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
            return value
        return json.dumps(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as an override")


def override_key(item: str) -> str:
    return item.split("=", 1)[0].strip().lstrip("+")


def is_semantic(key: str) -> bool:
    return key not in NON_SEMANTIC and not key.startswith(NON_SEMANTIC_PREFIXES)


def slug(text: str, limit: int = 48) -> str:
    return _SLUG.sub("-", text).strip("-.")[:limit].strip("-.")


def _value_slug(value: Any) -> str:
    if isinstance(value, dict):
        return "-".join(f"{k}{_value_slug(v)}" if v not in (1, 1.0, True) else str(k) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "-".join(_value_slug(v) for v in value)
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def grid_label(key: str, value: Any) -> str:
    """Short label of one grid point, e.g. ``run.seed=1`` -> ``seed1``."""
    return slug(f"{key.split('.')[-1]}{_value_slug(value)}", 32)


def run_digest(base_id: str, semantic: Mapping[str, Any]) -> str:
    payload = json.dumps({"base": base_id, "overrides": dict(semantic)}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class Run:
    """One run of a sweep: what to train, where, and on which cluster."""

    index: int
    label: str
    name: str
    digest: str
    base: str  # as passed to ``musicmoe train --config``
    overrides: list[str]  # the run's overrides, without run.out_dir/run.name and cluster.*
    semantic: dict[str, Any]  # the hashed part: override key -> value in the resolved config
    config: Config  # resolved, including run.out_dir and run.name
    cluster: ClusterConfig
    run_dir: Path

    @property
    def train_args(self) -> list[str]:
        """Arguments after ``musicmoe train --config BASE``."""
        return [*self.overrides, f"run.out_dir={format_value(str(self.run_dir.parent))}",
                f"run.name={format_value(self.name)}"]


@dataclass
class Sweep:
    name: str
    path: Path
    base: str
    out_dir: Path
    metric: str
    cluster_source: str
    description: str = ""
    runs: list[Run] = field(default_factory=list)


def _as_overrides(node: Any, where: str) -> list[str]:
    """A mapping ``{key: value}`` or a list of ``key=value`` strings -> ``key=value`` strings."""
    if node is None:
        return []
    if isinstance(node, Mapping):
        return [f"{k}={format_value(v)}" for k, v in node.items()]
    if isinstance(node, list):
        out = []
        for item in node:
            if not isinstance(item, str) or "=" not in item:
                raise SweepError(f"{where}: override {item!r} must be a 'key=value' string")
            out.append(item)
        return out
    raise SweepError(f"{where}: must be a mapping of key: value or a list of key=value strings")


def resolve_base(base: str, sweep_path: Path) -> tuple[str, str]:
    """(argument for ``--config``, identity used in the hash) of a sweep's base config."""
    candidates = [CONFIG_ROOT / base, sweep_path.parent / base, Path.cwd() / base] if not Path(base).is_absolute() \
        else [Path(base)]
    for cand in candidates:
        if cand.is_file():
            cand = cand.resolve()
            try:
                rel = cand.relative_to(CONFIG_ROOT.resolve()).as_posix()
                return rel, rel
            except ValueError:
                return str(cand), str(cand)
    tried = ", ".join(str(c) for c in candidates)
    raise SweepError(f"{sweep_path}: base config {base!r} not found (tried {tried})")


def resolve_cluster_file(name: str) -> Path:
    """``local`` -> configs/cluster/local.yaml; a path is used as it is."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    shipped = CONFIG_ROOT / "cluster" / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    options = sorted(p.stem for p in (CONFIG_ROOT / "cluster").glob("*.yaml"))
    raise ConfigError(f"cluster {name!r} not found: neither a file nor configs/cluster/{name}.yaml "
                      f"(shipped: {', '.join(options) or 'none'})")


def _select(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` of a config dataclass, as plain data (dicts, lists, scalars)."""
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else copy.deepcopy(node)


def _load_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"cannot parse sweep file {path}: {err}") from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep file {path} must hold a mapping")
    unknown = sorted(k for k in data if k not in SWEEP_KEYS and not str(k).startswith("_"))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; valid keys: {', '.join(SWEEP_KEYS)}")
    if not data.get("base"):
        raise SweepError(f"{path}: 'base' (the config file every run starts from) is required")
    return data


def _points(data: dict[str, Any], path: Path) -> list[tuple[list[str], list[str]]]:
    """(label parts, overrides) of every run: explicit runs x grid points."""
    explicit: list[tuple[list[str], list[str]]] = []
    for i, entry in enumerate(data.get("runs") or [], 1):
        if not isinstance(entry, dict):
            raise SweepError(f"{path}: runs[{i}] must be a mapping of overrides (and an optional 'label')")
        entry = dict(entry)
        label = entry.pop("label", None)
        overrides = _as_overrides(entry, f"{path}: runs[{i}]")
        if label is None:
            label = "_".join(grid_label(override_key(o), _parse_value(o.split("=", 1)[1])) for o in overrides)
        explicit.append(([slug(str(label))] if label else [], overrides))
    if not explicit:
        explicit = [([], [])]
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError(f"{path}: 'grid' must map config keys to lists of values")
    axes = []
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SweepError(f"{path}: grid key {key!r} has no values")
        axes.append([(grid_label(key, v), f"{key}={format_value(v)}") for v in values])
    points = []
    for labels, overrides in explicit:
        for combo in itertools.product(*axes):
            points.append((labels + [lab for lab, _ in combo], overrides + [o for _, o in combo]))
    return points


def _cluster_for(cluster_file: Path | None, base: str, cluster_overrides: list[str]) -> ClusterConfig:
    stripped = [o.split("=", 1)[0].strip().lstrip("+")[len("cluster."):] + "=" + o.split("=", 1)[1]
                for o in cluster_overrides]
    if cluster_file is not None:
        return compose(ClusterConfig, cluster_file, stripped)
    return load_config(base, cluster_overrides).cluster


def load_sweep(
    path: str | Path,
    cluster: str | None = None,
    extra_overrides: Iterable[str] = (),
    out_dir: str | Path | None = None,
) -> Sweep:
    """Read a sweep file and expand it into fully resolved, validated runs.

    ``cluster`` (a name under configs/cluster/ or a file) replaces the file's ``cluster``; ``extra_overrides``
    are added after every run's own; ``out_dir`` replaces the file's ``out_dir``.
    Raises ``SweepError``/``ConfigError`` naming the file, run and key at fault.
    """
    path = Path(path)
    data = _load_file(path)
    name = slug(str(data.get("name") or path.stem), 64)
    if not name:
        raise SweepError(f"{path}: 'name' must contain letters or digits")
    base_arg, base_id = resolve_base(str(data["base"]), path)
    cluster_name = cluster or data.get("cluster")
    cluster_file = resolve_cluster_file(str(cluster_name)) if cluster_name else None
    cluster_source = str(cluster_file) if cluster_file else f"cluster section of {base_arg}"
    root = Path(out_dir or data.get("out_dir") or "runs/sweeps").expanduser().resolve()
    common = _as_overrides(data.get("cluster_overrides"), f"{path}: cluster_overrides")
    common = [f"cluster.{o}" if not override_key(o).startswith("cluster.") else o for o in common]
    common += _as_overrides(data.get("overrides"), f"{path}: overrides")
    extra = list(extra_overrides)
    for item in extra:
        if "=" not in item:
            raise SweepError(f"override '{item}' must look like key.sub=value")

    sweep = Sweep(name=name, path=path, base=base_arg, out_dir=root, metric=str(data.get("metric") or ""),
                  cluster_source=cluster_source, description=str(data.get("description") or ""))
    seen: dict[str, int] = {}
    for index, (labels, point) in enumerate(_points(data, path)):
        everything = common + point + extra
        for item in everything:
            if override_key(item) in NON_SEMANTIC:
                raise SweepError(f"{path}: {override_key(item)} is set by the sweep (run dirs are "
                                 f"<out_dir>/<label>-<hash>); use 'out_dir' to choose where runs go")
        cluster_ovr = [o for o in everything if override_key(o).startswith("cluster.")]
        where = f"{path}: run {index} ({'_'.join(labels) or name})"
        try:
            cluster_cfg = _cluster_for(cluster_file, base_arg, cluster_ovr)
            overrides = list(cluster_cfg.train_overrides) + [o for o in everything if o not in cluster_ovr]
            config = load_config(base_arg, overrides + [f"run.out_dir={format_value(str(root))}"])
        except ConfigError as err:
            raise SweepError(f"{where}: {err}") from None
        semantic = {key: _select(config, key) for key in map(override_key, overrides) if is_semantic(key)}
        digest = run_digest(base_id, semantic)
        if digest in seen:
            raise SweepError(f"{path}: runs {seen[digest]} and {index} have the same config ({semantic})")
        seen[digest] = index
        label = "_".join(p for p in labels if p) or name
        run_name = f"{slug(label)}-{digest[:HASH_LEN]}"
        config.run.name = run_name
        run_dir = root / run_name
        sweep.runs.append(Run(index=index, label=label, name=run_name, digest=digest, base=base_arg,
                              overrides=overrides, semantic=semantic, config=config, cluster=cluster_cfg,
                              run_dir=run_dir))
    return sweep
