"""The paper's published numbers (benchmarks/paper.toml) and the layout of its RoBERTa-large
table (Table 18): the tasks and methods in the paper's order.

load_paper validates the file: every result has an id (unique across tasks), a task of
PAPER_TASKS, a method, a metric of PAPER_METRICS, a mean and a source; k, std and steps are
optional numbers, and variant (one name or a list) names variants of the registry
(harness/protocol/variants.toml) and is given only where this suite has a variant for the
method. A HarnessError names the result's id and the field.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import check_keys, read_toml
from harness.protocol.variants import VARIANTS

# Table 18's columns, in the paper's order: task name (harness/tasks/spec.py TASKS) -> the paper's label
PAPER_TASKS = {"sst2": "SST-2", "sst5": "SST-5", "snli": "SNLI", "mnli": "MNLI", "rte": "RTE", "trec": "TREC"}
ZERO_SHOT = "zero-shot"
# Table 18's rows under each k, in the paper's order
TABLE18_METHODS = ("LP", "MeZO", "MeZO (LoRA)", "MeZO (prefix)", "FT", "FT (LoRA)")
TABLE18_ROWS = ((ZERO_SHOT, None), *((m, 16) for m in TABLE18_METHODS), *((m, 512) for m in TABLE18_METHODS))
ACCURACY_OBJECTIVE = "MeZO (accuracy objective)"   # paper Table 3, k=512
PAPER_METRICS = ("test_accuracy", "zero_shot_accuracy", "memory_excess_mb_inference", "memory_excess_mb_mezo",
                 "memory_excess_mb_first_order")
TOP_KEYS = ("citation", "model", "result")
PAPER_KEYS = ("id", "task", "method", "variant", "k", "metric", "mean", "std", "source", "steps")
REQUIRED_KEYS = ("id", "task", "method", "metric", "mean", "source")


def entry_variants(entry: dict) -> list[str]:
    """The variants a paper result is measured by ([] where this suite has none)."""
    variant = entry.get("variant")
    if variant is None:
        return []
    return variant if isinstance(variant, list) else [variant]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_entry(entry: dict, where: str) -> None:
    check_keys(entry, PAPER_KEYS, where)
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise HarnessError(f"{where}: missing field {key!r}")
    for key in ("id", "method", "source"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise HarnessError(f"{where}: field {key!r} must be a non-empty string, got {entry[key]!r}")
    if entry["task"] not in PAPER_TASKS:
        raise HarnessError(f"{where}: field 'task' must be one of {', '.join(PAPER_TASKS)}, "
                           f"got {entry['task']!r} (unknown task)")
    if entry["metric"] not in PAPER_METRICS:
        raise HarnessError(f"{where}: field 'metric' must be one of {', '.join(PAPER_METRICS)}, got {entry['metric']!r}")
    if not _number(entry["mean"]):
        raise HarnessError(f"{where}: field 'mean' must be a number, got {entry['mean']!r}")
    if "std" in entry and not (_number(entry["std"]) and entry["std"] >= 0):
        raise HarnessError(f"{where}: field 'std' must be a number >= 0, got {entry['std']!r}")
    for key in ("k", "steps"):
        if key in entry and not (isinstance(entry[key], int) and not isinstance(entry[key], bool) and entry[key] >= 1):
            raise HarnessError(f"{where}: field {key!r} must be an integer >= 1, got {entry[key]!r}")
    if "variant" in entry:
        names = entry["variant"] if isinstance(entry["variant"], list) else [entry["variant"]]
        if not names or not all(isinstance(name, str) for name in names):
            raise HarnessError(f"{where}: field 'variant' must be a variant name or a non-empty list of them, "
                               f"got {entry['variant']!r}")
        unknown = [name for name in names if name not in VARIANTS]
        if unknown:
            raise HarnessError(f"{where}: field 'variant' names unknown variant(s) {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(sorted(VARIANTS))}")


def load_paper(path: str | Path) -> dict[str, dict]:
    """Published results by id, in the file's order; each also carries the file's `citation` and
    `model` (the paper's model)."""
    path = Path(path)
    raw = read_toml(path, "paper results file")
    check_keys(raw, TOP_KEYS, str(path))
    for key in ("citation", "model"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise HarnessError(f"{path}: missing field {key!r} (a non-empty string)")
    results: dict[str, dict] = {}
    where_is: dict[tuple, str] = {}
    if not isinstance(raw.get("result", []), list):
        raise HarnessError(f"{path}: 'result' must be an array of tables ([[result]])")
    for index, entry in enumerate(raw.get("result", []), start=1):
        if not isinstance(entry, dict):
            raise HarnessError(f"{path} result #{index}: must be a table ([[result]]), got {entry!r}")
        where = f"{path} result {entry['id']!r}" if isinstance(entry.get("id"), str) else f"{path} result #{index}"
        _check_entry(entry, where)
        if entry["id"] in results:
            raise HarnessError(f"{where}: duplicate id (field 'id'): ids must be unique across tasks")
        # one number per (task, method, k, metric, steps): what the report and the claims look up
        point = (entry["task"], entry["method"], entry.get("k"), entry["metric"], entry.get("steps"))
        if point in where_is:
            raise HarnessError(f"{where}: the same task, method, k, metric and steps as result {where_is[point]!r} "
                               f"(field 'method'): one published number each")
        where_is[point] = entry["id"]
        results[entry["id"]] = {**entry, "citation": raw["citation"], "model": raw["model"]}
    if not results:
        raise HarnessError(f"{path}: no [[result]] entries")
    return results


def paper_result(paper: dict[str, dict], task: str, method: str, k: int | None, metric: str) -> dict | None:
    """The paper's number for one cell of its tables (task, method, k, metric; never a
    fewer-steps ablation), or None where the paper gives none."""
    for entry in paper.values():
        if (entry["task"], entry["method"], entry.get("k"), entry["metric"]) == (task, method, k, metric) \
                and "steps" not in entry:
            return entry
    return None
