"""``musicmoe run --config experiment/NAME.yaml --out DIR [KEY=VALUE ...]``: one experiment end to end.

Stages, each printing a start line and an end line with its wall time:

1. corpus: build the ``corpus`` section into DIR/corpus (``musicmoe data build``; resumes per source file);
2. image codec and 3. audio codec: train the codecs the tasks need into DIR/image_codec, DIR/audio_codec
   (``musicmoe codec train``), or use the one the config names (``image_codec.checkpoint``;
   ``audio_codec.checkpoint`` or ``.weights``).  The image codec is needed when a task (``data.tasks`` weight > 0)
   has image as its target, or as its source while ``model.image_input`` is "codes"; the audio codec likewise
   with ``model.audio_input``.  Without one, tokenization skips that stream;
4. tokens: tokenize the corpus into DIR/tokens (``musicmoe data tokenize``);
5. model: train the translator in DIR/<run.name> (``musicmoe train``: resumes from the run's last checkpoint);
6. eval: the trained tasks (or those of ``eval.tasks`` that are trained) on all of the held-out split (default:
   test) with the ``eval`` section's settings (decoding, budgets, baselines; ``musicmoe eval``;
   DIR/<run.name>/eval/<split>/metrics.json).

Then the metrics table is printed (a metric's shuffled-source baseline ``<task>/<metric>_shuffled`` beside it,
when the evaluator reports one) and written with the stage timings to DIR/results.json, and the ``run.checks``
are applied, e.g. ``"omr/ser < 0.5 * omr/ser_shuffled"``; a failed check, or one naming a metric the results do
not hold, exits with status 1.

DIR/run_state.json records each finished stage with the settings it ran with: a rerun skips a finished stage
whose settings are unchanged (and says so), and otherwise hands it to its own resuming code (a longer
``trainer.max_steps`` continues training; a changed ``eval`` section re-evaluates).  A killed run continues
where it stopped.  Overrides are applied after the paths under DIR, so they may move a path elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

STAGES = ("corpus", "image codec", "audio codec", "tokens", "model", "eval")
STATE_FILE = "run_state.json"
RESULTS_FILE = "results.json"
SHUFFLED = "_shuffled"
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
# the part of a stage's settings each stage depends on (flattened config keys, by prefix)
CORPUS_IGNORED = ("corpus.workers", "corpus.piece_timeout_s")
MODEL_KEYS = ("data.", "model.", "optim.", "trainer.", "run.seed", "run.name", "run.out_dir")
# eval keys of the evaluation during training only: the final one reads all of --split (and tasks separately)
EVAL_CADENCE = ("every_n_steps", "split", "max_examples", "loss_examples", "tasks")
MODEL_IGNORED = ("trainer.progress", "trainer.progress_every", "trainer.log_every_n_steps",
                 "trainer.checkpoint_every_n_steps", "data.num_workers")


class RunError(RuntimeError):
    """A stage cannot go on (a changed codec under DIR, a missing given codec, ...); says what to do."""


# ------------------------------------------------------------------------------------------------ config
def active_tasks(cfg: Any) -> list[Any]:
    """The tasks the run trains: ``data.tasks`` entries with a weight above 0."""
    from musicmoe.data.tasks import get_task

    return [get_task(name) for name, weight in cfg.data.tasks.items() if weight > 0]


def needed_codecs(cfg: Any) -> dict[str, str]:
    """``{"image"|"audio": why}`` for the codecs the run's tasks need (see the module docstring)."""
    tasks = active_tasks(cfg)
    out = {}
    for kind in ("image", "audio"):
        mode = getattr(cfg.model, f"{kind}_input", "codes")
        targets = [t.name for t in tasks if t.target == kind]
        sources = [t.name for t in tasks if t.source == kind] if mode == "codes" else []
        why = [f"target of {', '.join(targets)}"] if targets else []
        why += [f"{kind}_input=codes source of {', '.join(sources)}"] if sources else []
        if why:
            out[kind] = "; ".join(why)
    return out


def given_codec(cfg: Any, kind: str) -> str:
    """The codec the config itself names (a checkpoint, or for audio the published weights), else ""."""
    section = getattr(cfg, f"{kind}_codec")
    return section.checkpoint or (getattr(section, "weights", "") if kind == "audio" else "")


def codec_dir(out: Path, kind: str) -> Path:
    return Path(out) / f"{kind}_codec"


def experiment_config(config: str | Path, out: str | Path, overrides: list[str] = ()) -> Any:
    """The experiment's config with every path under ``out`` (the user's ``overrides`` applied last)."""
    from musicmoe.config import load_config

    out = Path(out)
    given = load_config(config, list(overrides))  # which tasks and codecs the user's config asks for
    # the folder the tokens stage writes is the one the model trains on: a user's data.tokens or tokenize.out
    # (the last given) moves both
    tokens = next((o.split("=", 1)[1] for o in reversed(list(overrides))
                   if o.split("=", 1)[0].strip() in ("data.tokens", "tokenize.out") and "=" in o), str(out / "tokens"))
    placed = [f"run.out_dir={out}", f"corpus.out={out / 'corpus'}", f"tokenize.out={tokens}", f"data.tokens={tokens}"]
    for kind in needed_codecs(given):
        if not given_codec(given, kind):
            placed.append(f"{kind}_codec.checkpoint={codec_dir(out, kind) / f'{kind}_codec.pt'}")
    return load_config(config, placed + list(overrides))


def _settings(cfg: Any, keep: Callable[[str], bool]) -> dict[str, Any]:
    from musicmoe.config import flat_items

    return {k: v for k, v in sorted(flat_items(cfg).items()) if keep(k)}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


# ------------------------------------------------------------------------------------------------- state
class RunState:
    """DIR/run_state.json: per finished stage, the settings it ran with, its seconds and a small result."""

    def __init__(self, out: Path):
        self.path = Path(out) / STATE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.stages = dict(json.loads(self.path.read_text()).get("stages") or {})
            except (json.JSONDecodeError, AttributeError):
                log.warning("%s is unreadable: every stage is checked again", self.path)

    def finished(self, stage: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        rec = self.stages.get(stage)
        return rec if rec is not None and not self.changed(stage, settings) else None

    def changed(self, stage: str, settings: dict[str, Any]) -> list[str]:
        """``key: old -> new`` for the settings that differ from the stage's finished run (keys the config schema
        gained or lost since then are not differences: the run had the default)."""
        rec = self.stages.get(stage)
        return [] if rec is None else _differences(rec.get("settings") or {}, _jsonable(settings))

    def record(self, stage: str, settings: dict[str, Any], seconds: float, result: dict[str, Any]) -> None:
        self.stages[stage] = {"settings": _jsonable(settings), "seconds": round(seconds, 1),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "result": _jsonable(result)}
        _write_json(self.path, {"stages": self.stages})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ stages
class Runner:
    """Runs the stages in order; each returns a small result dict (kept in the state for a later skip)."""

    def __init__(self, cfg: Any, out: Path, split: str = "test", device: str = "auto"):
        self.cfg, self.out, self.split, self.device = cfg, Path(out), split, device
        self.state = RunState(self.out)
        self.timings: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}
        # codecs the config names itself (not the ones placed under DIR by experiment_config)
        self._given = {k: given_codec(cfg, k) for k in ("image", "audio")
                       if given_codec(cfg, k) and not _under(given_codec(cfg, k), codec_dir(self.out, k))}

    def stage(self, name: str, settings: dict[str, Any], done: Callable[[dict[str, Any]], bool],
              fn: Callable[[], dict[str, Any]], skip_reason: str = "") -> dict[str, Any]:
        """Run ``fn`` unless the stage finished earlier with the same ``settings`` and ``done(result)`` holds."""
        label = f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}"
        if skip_reason:
            print(f"{label}: skipped ({skip_reason})", flush=True)
            self.timings[name], self.status[name] = 0.0, "not needed"
            self.results[name] = {}
            return {}
        rec = self.state.finished(name, settings)
        if rec is not None and done(rec["result"]):
            print(f"{label}: skipped (finished earlier in {rec['seconds']} s, same settings)", flush=True)
            self.timings[name], self.status[name] = 0.0, "skipped"
            self.results[name] = rec["result"]
            return rec["result"]
        changed = self.state.changed(name, settings)
        note = f" (settings changed since it last finished: {'; '.join(changed[:4])})" if changed else ""
        print(f"{label}: started at {time.strftime('%H:%M:%S')}{note}", flush=True)
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        self.state.record(name, settings, seconds, result)
        print(f"{label}: done in {seconds:.1f} s", flush=True)
        self.timings[name], self.status[name] = round(seconds, 1), "ran"
        self.results[name] = _jsonable(result)
        return self.results[name]

    # -- 1. corpus
    def corpus(self) -> None:
        from musicmoe.data.shards import MANIFEST

        cfg = self.cfg

        def build() -> dict[str, Any]:
            from musicmoe.data.builder.runner import build_corpus

            report = build_corpus(cfg.corpus, progress=None)
            failed = report["run"].get("files_failed", 0)
            print(f"{cfg.corpus.out}: {report['corpus']['examples']} examples"
                  + (f" ({failed} source files failed: {cfg.corpus.out}/report.json)" if failed else ""))
            return {"out": cfg.corpus.out, "examples": report["corpus"]["examples"], "files_failed": failed}

        settings = _settings(cfg, lambda k: k.startswith("corpus.") and k not in CORPUS_IGNORED)
        self.stage("corpus", settings, lambda r: (Path(cfg.corpus.out) / MANIFEST).is_file(), build)

    # -- 2./3. codecs
    def codec(self, kind: str) -> None:
        name = f"{kind} codec"
        needed = needed_codecs(self.cfg)
        if kind not in needed:
            self.stage(name, {}, lambda r: True, dict, skip_reason="not needed: no task reads or writes its codes")
            return
        given = self._given.get(kind, "")
        section = f"{kind}_codec"
        settings = _settings(self.cfg, lambda k: k.startswith(f"{section}.") and k != f"{section}.checkpoint")
        if given:
            settings = {f"{section}.checkpoint": getattr(self.cfg, section).checkpoint, **settings}
            self.stage(name, settings, lambda r: True, lambda: self._use_given(kind, needed[kind]))
            return
        run_dir = codec_dir(self.out, kind)
        path = run_dir / f"{kind}_codec.pt"
        changed = self.state.changed(name, settings)
        if path.is_file() and changed:
            raise RunError(f"{path} was trained with other settings ({'; '.join(changed[:4])}): remove {run_dir} "
                           f"(and {self.out / 'tokens'}, made with it) to train it again, or choose another --out")
        self.stage(name, settings, lambda r: path.is_file(), lambda: self._train_codec(kind, run_dir, needed[kind]))

    def _use_given(self, kind: str, why: str) -> dict[str, Any]:
        section = getattr(self.cfg, f"{kind}_codec")
        if section.checkpoint and not Path(section.checkpoint).is_file():
            raise RunError(f"{kind} codec checkpoint not found: {section.checkpoint} ({kind}_codec.checkpoint)")
        source = section.checkpoint or f"published EnCodec weights {section.weights}"
        print(f"using the configured {kind} codec {source} (needed: {why}); not trained")
        return {"codec": section.checkpoint, "weights": getattr(section, "weights", ""), "source": "given"}

    def _train_codec(self, kind: str, run_dir: Path, why: str) -> dict[str, Any]:
        path = run_dir / f"{kind}_codec.pt"
        if path.is_file():  # trained by an earlier run (or demo) with no recorded settings: adopted
            print(f"{path} exists: skipped")
            return {"codec": str(path), "source": "trained"}
        print(f"training the {kind} codec into {run_dir} (needed: {why})")
        cfg = self.cfg
        resume = (run_dir / "checkpoints" / "last.ckpt").exists()
        if kind == "image":
            from musicmoe.codecs.image.train import train_image_codec as train
        else:
            from musicmoe.codecs.audio.train import train_audio_codec as train  # type: ignore[assignment]
        section = f"{kind}_codec"
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), checkpoint="")})
        report = train(cfg, resume=resume, run_dir=run_dir)
        return {"codec": str(path), "source": "trained", "global_step": report.get("global_step")}

    def _codec_for_tokenize(self, kind: str) -> Any:
        if kind not in needed_codecs(self.cfg):
            return None
        section = getattr(self.cfg, f"{kind}_codec")
        if section.checkpoint:
            return section.checkpoint
        if kind == "audio" and section.weights:
            from musicmoe.codecs.audio.codec import AudioCodec

            return AudioCodec.from_published(section.weights, section)
        return None

    # -- 4. tokens
    def tokens(self) -> None:
        from musicmoe.data.features import FeatureSpec
        from musicmoe.data.tokens import META_FILE

        cfg = self.cfg
        spec = FeatureSpec.from_model(cfg.model)
        mel = spec.audio and any(t.source == "audio" for t in active_tasks(cfg))  # log-mel frames to precompute

        def run() -> dict[str, Any]:
            from musicmoe.data.features import precompute
            from musicmoe.data.tokenize import format_report, tokenize

            report = tokenize(cfg.corpus.out, cfg.tokenize.out, cfg,
                              image_codec=self._codec_for_tokenize("image"),
                              audio_codec=self._codec_for_tokenize("audio"))
            print(format_report(report))
            result = {"out": cfg.tokenize.out, "examples": report["examples"], "streams": report["streams"]}
            if mel:
                # the log-mel frames the model reads, computed once by parallel processes (a disk cache)
                feats = precompute(cfg.corpus.out, spec, workers=max(1, os.cpu_count() or 1), progress=False)
                print(f"log-mel features: {feats['computed']} computed, {feats['cached']} cached, "
                      f"{len(feats['failed'])} failed")
                result["mel_features"] = {k: v if k != "failed" else len(v) for k, v in feats.items()}
            return result

        settings = _settings(cfg, lambda k: k.startswith(("tokenize.", "midi_codec.")) and k != "tokenize.workers")
        settings["codecs"] = {k: self.results.get(f"{k} codec", {}).get("codec", "") for k in ("image", "audio")}
        if mel:  # a new log-mel setting precomputes its own cache
            settings["mel_features"] = spec.key("audio")
        self.stage("tokens", settings, lambda r: (Path(cfg.tokenize.out) / META_FILE).is_file(), run)

    # -- 5. model
    def model(self) -> None:
        from musicmoe.training.run import run_paths

        cfg = self.cfg
        paths = run_paths(cfg)

        def train() -> dict[str, Any]:
            from musicmoe.training.run import train

            summary = train(cfg)  # run.checks may change on resume (training.run.RESUME_MAY_CHANGE)
            if summary.get("interrupted"):
                raise RunError(f"training of {paths.root} was interrupted at step {summary['global_step']}: "
                               f"run the same command again to continue")
            if not summary.get("trained", True):
                print(f"{paths.root} is already trained to step {summary['global_step']}")
            return summary

        settings = _settings(cfg, lambda k: k.startswith(MODEL_KEYS) and k not in MODEL_IGNORED)
        settings["tokens"] = self.results.get("tokens", {}).get("out", "")
        self.stage("model", settings, lambda r: paths.last.exists(), train)

    # -- 6. eval
    def eval(self) -> None:
        from musicmoe.training.run import run_paths

        cfg = self.cfg
        paths = run_paths(cfg)
        out = paths.root / "eval" / self.split

        def evaluate() -> dict[str, Any]:
            from musicmoe.cli.eval import evaluate_checkpoint
            from musicmoe.data.tasks import get_task

            settings = {k: v for k, v in dataclasses.asdict(cfg.eval).items() if k not in EVAL_CADENCE}
            trained = {t.name for t in active_tasks(cfg)}  # eval.tasks the run does not train are left out
            chosen = [t for t in cfg.eval.tasks if get_task(t).name in trained]
            record = evaluate_checkpoint(paths.root, self.split, ",".join(chosen) or None, out=out,
                                         device=self._device(), **settings)
            return {"out": record["out"], "examples": record["examples"], "decoding": record["decoding"],
                    "seconds": record["seconds"]}

        settings = _settings(cfg, lambda k: k.startswith("eval.") and k.split(".")[1] not in EVAL_CADENCE)
        settings.update(split=self.split, global_step=self.results.get("model", {}).get("global_step"))
        self.stage("eval", settings, lambda r: (out / "metrics.json").is_file(), evaluate)

    def _device(self) -> str:
        if self.device != "auto":
            return self.device
        from musicmoe.training.strategies import use_cuda

        try:
            return "cuda" if use_cuda(self.cfg.trainer) else "cpu"
        except ValueError:
            return "cpu"

    def run(self) -> None:
        self.corpus()
        self.codec("image")
        self.codec("audio")
        self.tokens()
        self.model()
        self.eval()


def _under(path: str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------- results, checks
def task_table(metrics: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{task: {metric: {"value": v, "shuffled": baseline}}}``: a ``<metric>_shuffled`` key is folded into
    its metric as ``shuffled`` (listed on its own only when the metric itself is absent)."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for key, value in metrics.items():
        task, _, name = key.partition("/")
        if not name:
            continue
        base = name[: -len(SHUFFLED)] if name.endswith(SHUFFLED) else None
        if base and f"{task}/{base}" in metrics:
            out.setdefault(task, {}).setdefault(base, {})["shuffled"] = _number(value)
        else:
            out.setdefault(task, {}).setdefault(name, {})["value"] = _number(value)
    return out


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def format_task_table(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """Markdown: one row per task, one column per metric; ``value (shuffled: baseline)`` where one exists."""
    cols: list[str] = []
    for metrics in table.values():
        cols += [c for c in metrics if c not in cols]

    def cell(entry: dict[str, float | None] | None) -> str:
        if entry is None:
            return ""
        text = "-" if entry.get("value") is None else f"{entry['value']:.4g}"
        if "shuffled" in entry:
            text += f" (shuffled {'-' if entry['shuffled'] is None else format(entry['shuffled'], '.4g')})"
        return text

    lines = ["| task | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for task, metrics in table.items():
        lines.append(f"| {task} | " + " | ".join(cell(metrics.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def apply_checks(checks: list[str], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Each check with ``passed`` and a ``message`` giving the numbers (or the missing metric)."""
    from musicmoe.config.schema import parse_check

    out = []
    for i, text in enumerate(checks):
        check = parse_check(text, f"run.checks[{i}]")
        values: dict[str, float | None] = {}
        missing = []
        for m in check.metrics:
            if m not in metrics:
                missing.append(f"{m} is not in the results")
            elif _number(metrics[m]) is None:
                missing.append(f"{m} has no value (NaN)")
            values[m] = _number(metrics.get(m))
        if missing:
            task = check.metrics[0].split("/")[0]
            have = sorted(k for k in metrics if k.startswith(f"{task}/"))
            msg = f"{'; '.join(missing)} (results for {task}: {', '.join(have) or 'none'})"
            out.append({"check": check.text, "passed": False, "values": values, "message": msg})
            continue

        def side(s: Any) -> float:
            return s.factor * (values[s.metric] if s.metric is not None else 1.0)

        left, right = side(check.left), side(check.right)
        passed = OPS[check.op](left, right)

        def shown(s: Any, v: float) -> str:
            return f"{v:.4g}" if s.metric is None else (f"{s} = {v:.4g}" if s.factor == 1.0 else
                                                         f"{s} = {s.factor:g} * {values[s.metric]:.4g} = {v:.4g}")

        msg = f"{shown(check.left, left)} {'' if passed else 'not '}{check.op} {shown(check.right, right)}"
        out.append({"check": check.text, "passed": passed, "values": values, "left": left, "right": right,
                    "message": msg})
    return out


def loss_trends(tb_dir: Path) -> dict[str, tuple[float, float]]:
    """Per task: (mean of the first tenth, mean of the last tenth) of its logged training loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["scalars"]:
        if tag.startswith("train/loss_"):
            values = [e.value for e in sorted(ea.Scalars(tag), key=lambda e: e.step)]
            if len(values) >= 4:
                k = max(1, len(values) // 10)
                out[tag[len("train/loss_"):]] = (sum(values[:k]) / k, sum(values[-k:]) / k)
    return out


# ------------------------------------------------------------------------------------------------- entry
def run_experiment(config: str | Path, out: str | Path, overrides: list[str] = (), split: str = "test",
                   device: str = "auto") -> dict[str, Any]:
    """Run (or continue) every stage of ``config`` under ``out``; returns what DIR/results.json holds."""
    from musicmoe.training.run import run_paths

    out = Path(out)
    cfg = experiment_config(config, out, list(overrides))
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(cfg, out, split, device)
    runner.run()
    paths = run_paths(cfg)
    eval_dir = paths.root / "eval" / split
    record = json.loads((eval_dir / "metrics.json").read_text())
    metrics = record["metrics"]
    table = task_table(metrics)
    checks = apply_checks(cfg.run.checks, metrics)
    trends = loss_trends(paths.tb / "version_0") if (paths.tb / "version_0").is_dir() else {}

    print(f"\n## {split} metrics ({record['examples']} examples, {record['decoding']} decoding, "
          f"step {runner.results['model'].get('global_step')})\n")
    print(format_task_table(table))
    if trends:
        print("\n## training loss per task (first tenth -> last tenth of the logged steps)\n")
        for task, (first, last) in sorted(trends.items()):
            print(f"- {task}: {first:.3f} -> {last:.3f}")
    print("\n## time per stage (s)\n")
    print(" | ".join(f"{k} {v}" + ("" if runner.status[k] == "ran" else f" ({runner.status[k]})")
                     for k, v in runner.timings.items()) + f" | total {sum(runner.timings.values()):.1f}")
    print(f"\nTensorBoard: tensorboard --logdir {paths.tb}")
    print(f"metrics: {eval_dir}/metrics.json, {eval_dir}/metrics.md; results: {out / RESULTS_FILE}")
    if checks:
        print("\n## checks (run.checks)\n")
        for c in checks:
            print(f"- {'passed' if c['passed'] else 'FAILED'}: {c['check']}: {c['message']}")
    result = {
        "config": str(config), "out": str(out), "split": split, "run_dir": str(paths.root),
        "checkpoint": record.get("checkpoint"), "global_step": runner.results["model"].get("global_step"),
        "examples": record["examples"], "decoding": record["decoding"],
        "tasks": table, "metrics": metrics, "checks": checks, "ok": all(c["passed"] for c in checks),
        "timings": runner.timings,
        "stages": {s: {"status": runner.status[s], "seconds": runner.timings[s],
                       "seconds_when_run": (runner.state.stages.get(s) or {}).get("seconds")} for s in STAGES},
        "train": runner.results["model"], "loss_trends": trends,
    }
    _write_json(out / RESULTS_FILE, result)
    return result


def report_checks(result: dict[str, Any]) -> int:
    """Print the checks' outcome; the exit status (1 when a check failed)."""
    checks = result["checks"]
    if not checks:
        print("\nno checks configured (run.checks)")
        return 0
    failed = [c for c in checks if not c["passed"]]
    if failed:
        print(f"\ncheck FAILED: {'; '.join(c['check'] for c in failed)}")
        return 1
    print(f"\nall {len(checks)} check(s) passed")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the stages raise for bad inputs or settings (``ValueError`` covers codec and checkpoint errors)."""
    from musicmoe.codecs.audio.train import AudioCodecTrainError
    from musicmoe.codecs.image.train import ImageCodecTrainError
    from musicmoe.data.builder.runner import BuildError
    from musicmoe.data.shards import CorpusError
    from musicmoe.data.tokenize import TokenizeError
    from musicmoe.data.tokens import TokenDataError

    return (RunError, BuildError, CorpusError, TokenizeError, TokenDataError, ImageCodecTrainError,
            AudioCodecTrainError, ValueError)


def handle_errors(fn: Callable[[], int], verbose: bool) -> int:
    """A stage's error about its inputs or settings becomes one message (``-v`` shows the traceback)."""
    from musicmoe.cli.main import UserError
    from musicmoe.config import ConfigError

    try:
        return fn()
    except ConfigError:
        raise
    except Exception as err:
        if verbose or not isinstance(err, _user_errors()):
            raise
        raise UserError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    def go() -> int:
        return report_checks(run_experiment(args.config, Path(args.out), list(args.overrides or []), args.split,
                                            args.device))

    return handle_errors(go, getattr(args, "verbose", False))


def add_run_arguments(p: argparse.ArgumentParser, out_default: str | None) -> None:
    if out_default is None:
        p.add_argument("--out", required=True, help="folder of the run: corpus, codecs, tokens, model, results")
    else:
        p.add_argument("--out", default=out_default, help=f"folder of the run (default: {out_default})")
    p.add_argument("--split", default="test", help="split evaluated at the end (default: test)")
    p.add_argument("--device", default="auto", help="device of the final evaluation: auto (cuda when the trainer "
                                                     "uses it), cpu or cuda[:N]")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="an experiment end to end: corpus, codecs, tokens, training, eval, checks "
                                   "(resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True,
                   help="experiment config (a path, or relative to configs/), e.g. experiment/demo.yaml")
    add_run_arguments(p, None)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. trainer.max_steps=100 'run.checks=[\"omr/ser < 0.5\"]'")
    p.set_defaults(func=run)
