"""The result store: read run records of any schema version, upgraded to the current one.

    from harness.results import load_records
    frame = load_records("results")     # one row per run, nested fields flattened

Records are written by harness.record.write_record (atomic, append-only) under
results/<task>/<protocol>-v<version>/<profile>/<run id>.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.record import SCHEMA_VERSION


def _upgrade_1_to_2(record: dict) -> dict:
    """Schema 1 (protocol v1, variant hf-mlm only) had no liveness, sparsity, memory or
    throughput, and its variant lacked head/loss. Missing measurements stay missing."""
    variant = record["variant"]
    record["variant"] = {"name": variant["name"], "backend": variant["backend"], "head": "mlm",
                         "loss": "ce", "parameters": variant["parameters"], "optimizer": variant["optimizer"]}
    record["liveness"] = None
    record["sparsity"] = None
    record["memory"] = {"error": "not recorded (schema 1)"}
    timing = record.get("timing", {})
    record["throughput"] = ({"steps_per_second": timing["steps_per_second"], "train_seconds": timing["train_seconds"],
                             "eval_seconds": timing["eval_seconds"]} if "steps_per_second" in timing else None)
    record["timing"] = {"wall_seconds": timing.get("wall_seconds", record.get("wall_seconds"))}
    record["model"].setdefault("updated_parameters", record["model"].get("trainable_parameters"))
    record["schema_version"] = 2
    return record


UPGRADES = {1: _upgrade_1_to_2}


def upgrade(record: dict, source: str = "record") -> dict:
    version = record.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise HarnessError(f"{source}: unknown schema_version {version!r} (this code reads 1..{SCHEMA_VERSION})")
    while record["schema_version"] < SCHEMA_VERSION:
        record = UPGRADES[record["schema_version"]](record)
    return record


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessError(f"{path}: not a readable run record ({error})") from None
    record = upgrade(record, str(path))
    record["_path"] = str(path)
    return record


def record_paths(root: str | Path) -> list[Path]:
    """Run records under `root`: JSON files in a <protocol>-v<version>/<profile>/ folder
    (so reports or gate outputs kept beside them are never mistaken for runs)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise HarnessError(f"results not found: {root}")
    return sorted(p for p in root.rglob("*.json")
                  if not p.name.startswith(".") and re.fullmatch(r".+-v\d+", p.parent.parent.name))


def read_records(root: str | Path) -> list[dict]:
    return [read_record(path) for path in record_paths(root)]


def field_value(record: dict, path: tuple[str, ...]):
    """record[path[0]][path[1]]..., or None where any part is missing (older schemas)."""
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def hardware_class(record: dict) -> str:
    return record["environment"]["device"].get("hardware_class", record["environment"]["device"]["type"])


def load_records(root: str | Path = "results"):
    """All records under `root` as a pandas DataFrame, one row per run."""
    import pandas as pd

    records = read_records(root)
    return pd.json_normalize(records, sep=".") if records else pd.DataFrame()


def completed(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("status") == "completed"]


def best_dev_per_seed(records: list[dict]) -> list[dict]:
    """The paper's selection: for each seed, the grid point (lr, batch size) with the best
    dev accuracy; ties go to the smaller lr, then batch. A grid point run more than once
    counts with its latest run only, so re-running never inflates the maximum."""
    latest: dict[tuple, dict] = {}
    for record in sorted(completed(records), key=lambda r: r["created_utc"]):
        hp = record["hyperparameters"]
        latest[(record["seed"], hp["lr"], hp["batch_size"])] = record
    best: dict[int, dict] = {}
    for (seed, lr, batch), record in sorted(latest.items()):
        if seed not in best or record["metrics"]["best_dev_accuracy"] > best[seed]["metrics"]["best_dev_accuracy"]:
            best[seed] = record
    return [best[seed] for seed in sorted(best)]
