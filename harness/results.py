"""The result store: read run records of any schema version, upgraded to the current one.

    from harness.results import load_records
    frame = load_records("results")     # one row per run, nested fields flattened

Records are written by harness.record.write_record (atomic, append-only) under
results/<task>/<protocol>-v<version>/<profile>/<run id>.json.
"""

from __future__ import annotations

import itertools
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


def _upgrade_2_to_3(record: dict) -> dict:
    """Schema 3 (protocol v3) adds `protocol.grid` (the grid the run belongs to), `z_stream`, the
    "diverged" status and eps / weight_decay as grid values. Schema 2 records did not say their
    grid, so claims cannot tell whether their grids were complete."""
    record["protocol"].setdefault("grid", None)
    record.setdefault("z_stream", None)
    record["schema_version"] = 3
    return record


UPGRADES = {1: _upgrade_1_to_2, 2: _upgrade_2_to_3}


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


def selectable(records: list[dict]) -> list[dict]:
    """Runs that are points of their grid: completed, or diverged (stopped at a non-finite loss)."""
    return [r for r in records if r.get("status") in ("completed", "diverged")]


def grid_point(record: dict) -> tuple:
    """(seed, lr, batch size, eps, weight decay): the run's point in its profile's grid."""
    hp = record["hyperparameters"]
    return (record["seed"], hp["lr"], hp["batch_size"], hp.get("eps"), hp.get("weight_decay"))


def grid_points(grid: dict) -> list[tuple]:
    """Every point of a record's `protocol.grid`, in `grid_point`'s order."""
    return list(itertools.product(grid["seeds"], grid["lr"], grid["batch_size"], grid["eps"], grid["weight_decay"]))


def _shell_number(value: float) -> str:
    """A number as the reference's run scripts spell it on the command line: 1e-4, 1e-3, 0.1, 0, 64."""
    if value == 0 or abs(value) >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def reference_folder_name(record: dict) -> str:
    """The part of the reference's output_dir that differs between the grid points of one seed:
    `bs{BS}-lr{LR}-eps{EPS}-wd{WD}` (MeZO `medium_models/mezo.sh`, GR_TAG) or `bs{BS}-lr{LR}`
    (`finetune.sh`); the rest of result/$TASK-$MODEL-...-$TAG$GRID_TAG/$K-$SEED is the same."""
    hp = record["hyperparameters"]
    name = f"bs{hp['batch_size']}-lr{_shell_number(hp['lr'])}"
    if record["variant"]["optimizer"] == "mezo":
        name += f"-eps{_shell_number(hp['eps'])}-wd{_shell_number(hp['weight_decay'])}"
    return name


def best_dev_per_seed(records: list[dict]) -> list[dict]:
    """The reference's selection (MeZO `medium_models/tools/gather_result.py`): for each seed,
    the grid point with the best dev accuracy, `max(sorted(runs, key=output_dir), key=dev)`.
    Python's max keeps the first of equal values, so a tie goes to the run whose output folder
    sorts first as a string (e.g. lr 1e-5 before 1e-6, batch 16 before 8). A grid point run more
    than once counts with its latest run only (the reference keeps the last log line per folder),
    so re-running never inflates the maximum. Diverged runs take part with the dev accuracy they
    reached before diverging; one with no evaluation at all cannot be selected."""
    latest: dict[tuple, dict] = {}
    for record in sorted(selectable(records), key=lambda r: r["created_utc"]):
        latest[grid_point(record)] = record
    by_seed: dict[int, list[dict]] = {}
    for record in latest.values():
        if record["metrics"]["best_dev_accuracy"] is not None:
            by_seed.setdefault(record["seed"], []).append(record)
    return [max(sorted(by_seed[seed], key=reference_folder_name), key=lambda r: r["metrics"]["best_dev_accuracy"])
            for seed in sorted(by_seed)]
