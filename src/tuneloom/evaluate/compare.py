"""Model versions side by side: which settings differ, and which version is best on each metric.

Pure functions over what `tuneloom.model_version.open_version` reads (no model, no torch), so the
`tuneloom compare` command only renders. The rules are the web console's Compare page
(`src/tuneloom/web/static/pages/compare_data.js`), so both answer the same question the same way:

* settings are flattened to dotted keys (`trainer_config.learning_rate`), an empty object kept
  visible as `{}`, and a row differs when any version's value (or its absence) differs;
* a metric's best is marked only where at least two distinct finite numbers exist, and every version
  tied for best is marked; losses, perplexity and runtime are better lower, tokens/s higher, steps and
  epochs are facts rather than scores (never marked);
* the evaluation scores of `tuneloom.evaluate.metrics.score` are better higher, its eval loss and
  perplexity lower (the page has no evaluation; these follow the scores' own definitions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneloom.errors import ModelVersionError
from tuneloom.model_version import ModelVersion, open_version

LOWER = "lower"
HIGHER = "higher"

# The training metrics of metrics.json, in the order and with the direction of METRICS in compare_data.js.
TRAINING_METRICS: dict[str, str | None] = {
    "train_loss": LOWER,
    "eval_loss": LOWER,
    "perplexity": LOWER,
    "train_runtime_s": LOWER,
    "train_tokens_per_second": HIGHER,
    "steps": None,
    "epochs": None,
}
# What `metrics.score` and `runner.loss_metrics` name; `count` and `labels` describe the data, not the model.
EVALUATION_METRICS: dict[str, str | None] = {
    "exact_match": HIGHER,
    "accuracy": HIGHER,
    "macro_f1": HIGHER,
    "rouge_l": HIGHER,
    "chrf": HIGHER,
    "bleu": HIGHER,
    "eval_loss": LOWER,
    "perplexity": LOWER,
    "count": None,
    "labels": None,
}
BETTER: dict[str, str | None] = {**EVALUATION_METRICS, **TRAINING_METRICS}

_MISSING = object()  # a key one version has and another lacks: unlike a stored null


@dataclass(frozen=True)
class Run:
    """One model version as the user named it, with the files a comparison reads (each read once)."""

    name: str
    version: ModelVersion
    metrics: dict[str, Any]
    data_report: dict[str, Any]


@dataclass(frozen=True)
class DiffRow:
    """One setting (or fact) across the runs; `values` in run order, None where a run lacks the key."""

    key: str
    values: list[Any]
    differs: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricRow:
    """One metric across the runs; `best[i]` marks run i as best (see the module docstring for when)."""

    key: str
    better: str | None
    values: list[Any]
    best: list[bool]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_run(path: Path) -> Run:
    """Open (and verify) a model-version directory and read its metrics and data report."""
    version = open_version(path)
    return Run(str(path), version, _json_object(version, "metrics.json"), _json_object(version, "data_report.json"))


def _json_object(version: ModelVersion, name: str) -> dict[str, Any]:
    data = version.read_json(name)
    if not isinstance(data, dict):
        raise ModelVersionError(f"{version.path}: file {name} is damaged: not a JSON object", details={"file": name})
    return data


def first_duplicate(paths: Sequence[Path]) -> tuple[Path, Path] | None:
    """The first two of `paths` that name the same directory (`runs/a`, `./runs/a/`, a symlink to it)."""
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            return seen[key], path
        seen[key] = path
    return None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1, "c": [1, 2]}} → {"a.b": 1, "a.c": [1, 2]}; keys sorted, an empty object kept as {}."""
    if not isinstance(value, Mapping):
        return {prefix: value} if prefix else {}
    if not value and prefix:
        return {prefix: {}}
    out: dict[str, Any] = {}
    for key in sorted(value, key=str):
        out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff_rows(flat: Sequence[Mapping[str, Any]]) -> list[DiffRow]:
    """One row per key of any of `flat` (first-seen order), marking the rows whose values are not all equal."""
    keys = dict.fromkeys(key for row in flat for key in row)
    rows = []
    for key in keys:
        values = [row.get(key, _MISSING) for row in flat]
        differs = any(not _same(values[0], v) for v in values[1:])
        rows.append(DiffRow(key, [None if v is _MISSING else v for v in values], differs))
    return rows


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: 1 and 1.0 are the same number, but True is not 1 and a missing key is no null."""
    return a is b or (a is not _MISSING and b is not _MISSING and isinstance(a, bool) == isinstance(b, bool) and a == b)


def settings_rows(runs: Sequence[Run]) -> list[DiffRow]:
    """Every effective setting (the five objects, the tolerance, a multi-process run's strategy), flattened."""
    return diff_rows([flatten(run.version.settings) for run in runs])


def overview_rows(runs: Sequence[Run]) -> list[DiffRow]:
    """What each run is: its template and base model, and the data it was trained on (as recorded)."""
    return diff_rows([_overview(run) for run in runs])


def _overview(run: Run) -> dict[str, Any]:
    manifest = run.version.manifest
    data = manifest.get("data") or {}
    report = run.data_report
    row = {key: manifest.get(key) for key in ("template", "base_model", "weights", "created_at")}
    if manifest.get("started_from"):
        row["started_from"] = manifest["started_from"]
    row.update({f"data.{key}": data.get(key) for key in ("file", "format")})
    row.update({f"data.{key}": data[key] for key in ("sha256", "validation_sha256") if key in data})  # newer runs
    row.update({f"data.{key}": report.get(key) for key in ("total_rows", "valid_rows", "invalid_rows")})
    row.update({f"data.{key}": data.get(key) for key in ("train_examples", "held_out_examples")})
    return row


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, NaN or infinity): what can be best."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def best_marks(values: Sequence[Any], better: str | None) -> list[bool]:
    """Which values are best: none without a direction or with fewer than two distinct numbers; ties all."""
    numbers = [v for v in values if is_number(v)]
    if better is None or len(set(numbers)) < 2:
        return [False] * len(values)
    best = min(numbers) if better == LOWER else max(numbers)
    return [is_number(v) and v == best for v in values]


def metric_rows(per_run: Sequence[Mapping[str, Any]], order: Iterable[str] = ()) -> list[MetricRow]:
    """One row per numeric metric any run has: the keys of `order` first, then the others as first seen.

    Values that are not numbers (the loss curves) are no metric; a run without a metric shows None.
    """
    seen = dict.fromkeys(key for metrics in per_run for key in metrics)
    first = [key for key in order if key in seen]
    keys = first + [key for key in seen if key not in first]
    rows = []
    for key in keys:
        values = [metrics.get(key) for metrics in per_run]
        if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            continue
        rows.append(MetricRow(key, BETTER.get(key), values, best_marks(values, BETTER.get(key))))
    return rows


def training_metric_rows(runs: Sequence[Run]) -> list[MetricRow]:
    """The metrics each run's training recorded (metrics.json), in the web page's order."""
    return metric_rows([run.metrics for run in runs], TRAINING_METRICS)


def notes(runs: Sequence[Run], *, evaluated: bool) -> list[str]:
    """What a reader must know to trust the comparison: losses that are not measured on the same thing."""
    out = []
    held_out = {run.version.manifest.get("files", {}).get("held_out.json") for run in runs}
    if len(held_out) > 1 and any(run.metrics.get("eval_loss") is not None for run in runs):
        out.append(
            "each run's training eval_loss and perplexity are on its own held-out examples, which differ "
            "between these runs" + ("" if evaluated else "; --data scores every run on the same file")
        )
    bases = {run.name: run.version.manifest.get("base_model") for run in runs}
    if evaluated and len(set(bases.values())) > 1:
        listing = "; ".join(f"{name}: {base}" for name, base in bases.items())
        out.append(
            f"the runs have different base models ({listing}). All are scored on the same texts, so the text "
            "scores compare directly; eval_loss and perplexity are per token of each model's own tokenizer "
            "and compare fairly only where the tokenizers are the same"
        )
    return out
