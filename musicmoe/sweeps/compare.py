"""Compare finished or running runs: a markdown table of their metrics and config differences, and a plot.

Runs that differ only in ``run.seed`` are one *arm*: :func:`aggregate_seeds` gives each arm's mean, standard
deviation and count of each metric's last value (and of its shuffled baseline), written as a markdown table, a CSV
file and a bar plot with error bars.

Where a run logged a metric's shuffled baseline (``<tag>_shuffled``: the same metric with every example given
another example's source, see musicmoe/training/evaluate.py), the table shows it beside the metric's last value,
with the source gap (how much the true source improves the metric; ``<task>/source_gap`` for a loss), and the
plot draws it dashed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from musicmoe.config import flatten
from musicmoe.sweeps import events
from musicmoe.sweeps.rundir import CONFIG_FILE
from musicmoe.sweeps.spec import is_semantic

HIGHER_IS_BETTER = ("f1", "acc", "precision", "recall", "bleu", "psnr", "sdr", "ssim", "si_snr", "score",
                    "similarity", "source_gap")
SHUFFLED = "_shuffled"  # suffix of a metric's shuffled-source baseline


@dataclass
class RunData:
    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)  # flattened config.yaml ({} if none)
    curves: events.Curves = field(default_factory=dict)
    label: str | None = None  # the sweep's label of the run (sweep.json), if a sweep made it


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / "tb").is_dir() or (path / "metrics.jsonl").is_file()


def expand_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run dirs named directly, or the run dirs inside a folder of runs (e.g. a sweep's out_dir)."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"not a folder: {path}")
        if is_run_dir(path):
            out.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
        if not children:
            raise FileNotFoundError(f"{path} is not a run dir (no {CONFIG_FILE}, tb/ or metrics.jsonl) "
                                    f"and holds none")
        out.extend(children)
    return out


def load_run(path: Path) -> RunData:
    config: dict[str, Any] = {}
    if (path / CONFIG_FILE).is_file():
        node = OmegaConf.load(path / CONFIG_FILE)
        container = OmegaConf.to_container(node, resolve=False)
        if isinstance(container, dict):
            config = flatten(container)
    label = None
    try:
        label = json.loads((path / "sweep.json").read_text()).get("label")
    except (OSError, ValueError, AttributeError):
        pass
    return RunData(path=path, name=path.name, config=config, curves=events.read_curves(path),
                   label=label if isinstance(label, str) else None)


def differing_keys(runs: Sequence[RunData]) -> list[str]:
    """Semantic config keys whose values are not the same in every run (run name and location excluded)."""
    keys = sorted({k for r in runs for k in r.config if is_semantic(k)})
    missing = object()
    return [k for k in keys if len({repr(r.config.get(k, missing)) for r in runs}) > 1]


def higher_is_better(tag: str, maximize: Sequence[str] = ()) -> bool:
    return tag in maximize or any(word in tag.lower() for word in HIGHER_IS_BETTER)


def shuffled_tag(tag: str) -> str:
    return tag + SHUFFLED


def gap_tag(tag: str) -> str | None:
    """``<prefix>/source_gap`` for a ``<prefix>/loss`` tag (the gap the evaluator logs), else None."""
    head, _, name = tag.rpartition("/")
    return f"{head}/source_gap" if head and name == "loss" else None


def is_baseline(tag: str, tags: Sequence[str] | set[str]) -> bool:
    """A shuffled baseline or source gap of another tag in ``tags`` (shown beside it, not as a row)."""
    if tag.endswith(SHUFFLED) and tag[: -len(SHUFFLED)] in tags:
        return True
    head, _, name = tag.rpartition("/")
    return bool(head) and name == "source_gap" and f"{head}/loss" in tags


def default_metrics(runs: Sequence[RunData]) -> list[str]:
    tags = sorted({t for r in runs for t in r.curves})
    every = set(tags)
    tags = [t for t in tags if not is_baseline(t, every)]
    for choose in (lambda t: t.startswith(("eval/", "val")), lambda t: "loss" in t):
        picked = [t for t in tags if choose(t)]
        if picked:
            return picked
    return tags


def _num(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4g}"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _value(v: Any) -> str:
    return "-" if v is None else (str(v) if not isinstance(v, float) else f"{v:.4g}")


def wall_time(run: RunData) -> float:
    times = [p.wall_time for pts in run.curves.values() for p in pts if not math.isnan(p.wall_time)]
    return max(times) - min(times) if times else math.nan


def _at(run: RunData, tag: str | None, step: int) -> float | None:
    for p in run.curves.get(tag or "", ()):
        if p.step == step:
            return p.value
    return None


def baseline(run: RunData, tag: str, step: int, maximize: Sequence[str] = ()) -> tuple[float | None, float | None]:
    """(shuffled baseline, source gap) of ``tag`` at ``step``; None where the run did not log one.

    The gap is how much the true source improves the metric (> 0: the model reads its input): the logged
    ``source_gap`` for a loss, else shuffled - value (value - shuffled where higher is better)."""
    shuffled = _at(run, shuffled_tag(tag), step)
    gap = _at(run, gap_tag(tag), step)
    value = _at(run, tag, step)
    if gap is None and shuffled is not None and value is not None:
        gap = value - shuffled if higher_is_better(tag, maximize) else shuffled - value
    return shuffled, gap


def summary(runs: Sequence[RunData], metrics: Sequence[str], maximize: Sequence[str] = ()) -> list[list[str]]:
    """Rows (header first): run, differing overrides, metric, best (step), last (step), last step, wall time;
    where any run logged a shuffled baseline of a shown metric, also its value and the source gap at the last
    value's step (``shuffled``, ``source gap``)."""
    diff = differing_keys(runs)
    with_base = any(shuffled_tag(t) in r.curves for r in runs for t in metrics)
    extra = ["shuffled", "source gap"] if with_base else []
    rows = [["run", *diff, "metric", "best", "best step", "last", "last step", *extra, "steps", "wall time"]]
    for run in runs:
        cfg = [_value(run.config.get(k)) for k in diff]
        last_step = events.last_step(run.curves)
        common = [str(last_step) if last_step is not None else "-", _duration(wall_time(run))]
        for tag in metrics:
            pts = run.curves.get(tag)
            if not pts:
                rows.append([run.name, *cfg, tag, "-", "-", "-", "-", *["-"] * len(extra), *common])
                continue
            pick = max if higher_is_better(tag, maximize) else min
            best = pick(pts, key=lambda p: (p.value if not math.isnan(p.value) else
                                            (-math.inf if pick is max else math.inf)))
            base = [_num(v) if v is not None else "-" for v in baseline(run, tag, pts[-1].step, maximize)]
            rows.append([run.name, *cfg, tag, _num(best.value), str(best.step), _num(pts[-1].value),
                         str(pts[-1].step), *base[: len(extra)], *common])
    return rows


def plot(runs: Sequence[RunData], metrics: Sequence[str], out: Path) -> Path:
    """One panel per metric, one line per run (its shuffled baseline dashed, same colour); atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.8 * len(metrics)), squeeze=False, sharex=True)
    for ax, tag in zip(axes[:, 0], metrics):
        for run in runs:
            pts = run.curves.get(tag)
            if pts:
                (line,) = ax.plot([p.step for p in pts], [p.value for p in pts],
                                  marker="." if len(pts) < 30 else None, label=run.name)
                base = run.curves.get(shuffled_tag(tag))
                if base:
                    ax.plot([p.step for p in base], [p.value for p in base], linestyle="--", color=line.get_color(),
                            label=f"{run.name} (shuffled)")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].legend(fontsize="small", loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


# ------------------------------------------------------------------------------------------- seeds -> arms
SEED_KEY = "run.seed"


@dataclass
class ArmStats:
    """One metric of one arm over its seeds: the last value of each run, their mean and sample standard deviation
    (0 for one run), and the same of the shuffled-source baseline where the runs logged it."""

    arm: str
    metric: str
    values: list[float]
    shuffled: list[float]

    @staticmethod
    def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
        if not xs:
            return math.nan, math.nan
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        return mean, math.sqrt(var)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return self._mean_std(self.values)[0]

    @property
    def std(self) -> float:
        return self._mean_std(self.values)[1]

    @property
    def shuffled_mean(self) -> float:
        return self._mean_std(self.shuffled)[0]

    @property
    def shuffled_std(self) -> float:
        return self._mean_std(self.shuffled)[1]


def _arm_label(run: RunData) -> str | None:
    """The run's sweep label without its seed part (``all_codes_seed2`` -> ``all_codes``), if a sweep made it."""
    if not run.label:
        return None
    seed = run.config.get(SEED_KEY)
    parts = [p for p in run.label.split("_") if p != f"seed{seed}"]
    return "_".join(parts) or None


def arms(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs grouped by every differing config key but ``run.seed``. An arm is named by its runs' common sweep label
    (seed part dropped) when a sweep made them all, else by those keys' values."""
    keys = [k for k in differing_keys(runs) if k != SEED_KEY]
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        label = ", ".join(f"{k}={_value(run.config.get(k))}" for k in keys) or "all runs"
        groups.setdefault(label, []).append(run)
    named: dict[str, list[RunData]] = {}
    for label, members in groups.items():
        short = {_arm_label(r) for r in members}
        name = short.pop() if len(short) == 1 and None not in short else label
        named[name if name not in named else label] = members
    return named


def aggregate_seeds(runs: Sequence[RunData], metrics: Sequence[str]) -> list[ArmStats]:
    """Per arm (:func:`arms`) and metric: the runs' last values and their shuffled baselines at the same step."""
    out = []
    for label, members in arms(runs).items():
        for tag in metrics:
            values, shuffled = [], []
            for run in members:
                last = events.last_finite(run.curves.get(tag, []))
                if last is None:
                    continue
                values.append(last.value)
                base = _at(run, shuffled_tag(tag), last.step)
                if base is not None:
                    shuffled.append(base)
            out.append(ArmStats(label, tag, values, shuffled))
    return out


def _pm(mean: float, std: float, n: int) -> str:
    return "-" if n == 0 else f"{_num(mean)} ± {_num(std)}"


def seed_table(stats: Sequence[ArmStats]) -> list[list[str]]:
    """Rows (header first): arm, metric, n, mean ± std, the values, shuffled mean ± std."""
    rows = [["arm", "metric", "n", "mean ± std", "values", "shuffled mean ± std"]]
    for s in stats:
        rows.append([s.arm, s.metric, str(s.n), _pm(s.mean, s.std, s.n), " ".join(_num(v) for v in s.values) or "-",
                     _pm(s.shuffled_mean, s.shuffled_std, len(s.shuffled))])
    return rows


def write_seed_csv(stats: Sequence[ArmStats], out: Path) -> Path:
    """The seed table as CSV (numbers unrounded; empty cells where a run logged nothing); atomic."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", "metric", "n", "mean", "std", "values", "shuffled_n", "shuffled_mean", "shuffled_std"])
    for s in stats:
        def cell(v: float) -> str:
            return "" if math.isnan(v) else repr(v)

        w.writerow([s.arm, s.metric, s.n, cell(s.mean), cell(s.std), " ".join(repr(v) for v in s.values),
                    len(s.shuffled), cell(s.shuffled_mean), cell(s.shuffled_std)])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(out)
    return out


def bar_plot(stats: Sequence[ArmStats], out: Path) -> Path:
    """One panel per metric: a bar per arm (mean, error bar = std, each seed as a dot) and, where logged, the
    shuffled-source baseline as a hatched bar beside it; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(s.metric for s in stats))
    arm_names = list(dict.fromkeys(s.arm for s in stats))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 1.6 * len(arm_names) + 2), 3.2 * len(metrics)),
                             squeeze=False)
    for ax, tag in zip(axes[:, 0], metrics):
        rows = [s for s in stats if s.metric == tag]
        for i, s in enumerate(rows):
            if s.n:
                ax.bar(i - 0.2, s.mean, 0.4, yerr=s.std, capsize=4, color="C0", label="model" if i == 0 else None)
                ax.plot([i - 0.2] * s.n, s.values, "k.", ms=4)
            if s.shuffled:
                ax.bar(i + 0.2, s.shuffled_mean, 0.4, yerr=s.shuffled_std, capsize=4, color="0.8", hatch="//",
                       label="shuffled sources" if i == 0 else None)
        ax.set_xticks(range(len(rows)), [f"{s.arm}\n(n={s.n})" for s in rows], fontsize="small")
        ax.set_ylabel(tag)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out
