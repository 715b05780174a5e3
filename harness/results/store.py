"""The result store: run records written atomically and append-only under
results/<task>/<protocol>-v<version>/<profile>/<run id>.json, and read back from any schema
version, upgraded to the current one: the shape of harness.results.schema (the tests check
every committed record against it after upgrading).

    from harness.results.store import load_records
    frame = load_records("results")     # one row per run, nested fields flattened

`read_records` refuses the first record it cannot read; `read_records_checked` (report, claims,
gate) also refuses a record that lacks a field the schema requires of its status, and returns
what it refused beside what it read instead of stopping.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.results import schema
from harness.results.schema import SCHEMA_VERSION


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id(variant: str, point, started: dt.datetime) -> str:
    """A readable, unique name: variant, grid point (a harness.protocol.settings.GridPoint), start time."""
    return (f"{variant}_k{point.k}_seed{point.seed}_lr{point.lr:g}_bs{point.batch_size}_eps{point.eps:g}"
            f"_wd{point.weight_decay:g}_{started:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:6]}")


def write_record(record: schema.RunRecord, path: Path) -> Path:
    """Write atomically and append-only: a crash never leaves a partial record, and an
    existing record is never rewritten (the hard link fails if the name is taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n",
                                 exclusive=True)
    except FileExistsError:
        raise HarnessError(f"record {path} already exists; records are append-only") from None


def records_folder(out_dir: Path, task: str, protocol_name: str, version: int, profile: str) -> Path:
    """Where the records of one protocol version's profile live under a results root."""
    return Path(out_dir) / task / f"{protocol_name}-v{version}" / profile


def record_path(out_dir: Path, task: str, protocol_name: str, version: int, profile: str, run_id: str) -> Path:
    return records_folder(out_dir, task, protocol_name, version, profile) / f"{run_id}.json"


def _upgrade_1_to_2(record: dict) -> dict:
    """Schema 1 (protocol v1, variant hf-mlm only) had no liveness, sparsity, memory or
    throughput, and its variant lacked head/loss. Missing measurements stay missing."""
    variant = record["variant"]
    record["variant"] = schema.Variant(name=variant["name"], backend=variant["backend"], head="mlm", loss="ce",
                                       parameters=variant["parameters"], optimizer=variant["optimizer"])
    record["liveness"] = None
    record["sparsity"] = None
    record["memory"] = schema.MeasurementError(error="not recorded (schema 1)")
    timing = record.get("timing", {})
    record["throughput"] = (schema.Throughput(steps_per_second=timing["steps_per_second"],
                                              train_seconds=timing["train_seconds"],
                                              eval_seconds=timing["eval_seconds"])
                            if "steps_per_second" in timing else None)
    record["timing"] = schema.Timing(wall_seconds=timing.get("wall_seconds", record.get("wall_seconds")))
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


def upgrade(record: dict, source: str = "record") -> schema.RunRecord:
    """The record in the current schema's shape (harness.results.schema), upgraded in place."""
    version = record.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise HarnessError(f"{source}: unknown schema_version {version!r} (this code reads 1..{SCHEMA_VERSION})")
    while record["schema_version"] < SCHEMA_VERSION:
        try:
            record = UPGRADES[record["schema_version"]](record)
        except (KeyError, TypeError, AttributeError) as error:
            raise HarnessError(f"{source}: cannot upgrade from schema_version {record['schema_version']}: "
                               f"a field is missing or of the wrong type ({type(error).__name__}: {error})") from None
    return record


def read_record(path: Path) -> dict:
    """The record at `path`, upgraded, with `_path` added; a HarnessError naming the file if it
    is not a JSON object of a known schema_version."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HarnessError(f"{path}: not a readable run record ({error})") from None
    if not isinstance(record, dict):
        raise HarnessError(f"{path}: not a run record (a JSON {type(record).__name__}, not an object)")
    record = upgrade(record, str(path))
    record["_path"] = str(path)
    return record


def check_complete(record: dict) -> dict:
    """The record, if it has every field the schema requires of its status (harness.results.schema:
    a failed run its header, error and wall time; a completed or diverged one also its metrics,
    measurements, loss curve and timing); else a HarnessError naming the file and the fields."""
    missing = schema.missing_fields(record)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise HarnessError(f"{record.get('_path', 'record')}: lacks required field(s) {shown} "
                           f"(status {record.get('status')!r}, schema_version {record.get('schema_version')})")
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


def read_records_checked(root: str | Path) -> tuple[list[dict], list[str]]:
    """(records, problems): every complete record under `root` (check_complete), and one line
    "<path>: <why>" for each file that is not (unreadable, not JSON, unknown schema_version,
    lacking required fields), instead of stopping at the first. A missing `root` is still an error."""
    records, problems = [], []
    for path in record_paths(root):
        try:
            records.append(check_complete(read_record(path)))
        except HarnessError as error:
            problems.append(str(error))
    return records, problems


def load_records(root: str | Path = "results"):
    """All records under `root` as a pandas DataFrame, one row per run."""
    import pandas as pd

    records = read_records(root)
    return pd.json_normalize(records, sep=".") if records else pd.DataFrame()
