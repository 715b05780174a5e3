"""Reading values out of run records and selecting among them: what a run is (its protocol
hash and data), the grid it belongs to, the runs that count, and the best-dev run per seed
(the reference's rule)."""

from __future__ import annotations

import hashlib
import itertools
import json

from harness.core.errors import HarnessError
from harness.protocol.variants import ZEROTH_ORDER


def field_value(record: dict, path: tuple[str, ...]):
    """record[path[0]][path[1]]..., or None where any part is missing (older schemas)."""
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


RANDOM_INIT = "random-init:"   # model ids of offline stand-ins with random weights


def model_matches(model_id: str, wanted: str) -> bool:
    """A record's model id is the pretrained checkpoint `wanted` ("roberta-large" matches
    "roberta-large" and "FacebookAI/roberta-large"); a random-init stand-in never matches."""
    return not model_id.startswith(RANDOM_INIT) and (model_id == wanted or model_id.endswith("/" + wanted))


def machine_digest(machine: dict) -> str:
    """A machine identity's id (schema.Environment.machine_id): the first 16 hex digits of the sha256 of its
    canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(machine, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def machine_id(record: dict) -> str | None:
    """The record's machine identity id, or None for a record made before machines were recorded
    (its machine is unknown: never the same as any other's)."""
    machine = record.get("environment", {}).get("machine")
    return machine_digest(machine) if isinstance(machine, dict) else None


def machine_summary(record: dict) -> str:
    """The machine for messages: "AuthenticAMD AMD EPYC (family 26 model 2 stepping 1), AVX512, 2 threads,
    torch 2.13.0+cpu (...) [id]"; "unknown machine" for records without one."""
    machine = record.get("environment", {}).get("machine")
    if not isinstance(machine, dict):
        return "unknown machine (recorded before machine identities)"
    cpu = " ".join(str(machine.get(key)) for key in ("cpu_vendor", "cpu_model") if machine.get(key))
    if machine.get("cpu_signature"):
        cpu += f" ({machine['cpu_signature']})"
    parts = [cpu, str(machine.get("cpu_capability")), f"{machine.get('torch_threads')} threads", f"torch {machine.get('torch')}"]
    if machine.get("gpu"):
        parts[:0] = [f"{machine['gpu']} (sm {machine.get('gpu_capability')}, CUDA {machine.get('cuda')}, "
                     f"cuDNN {machine.get('cudnn')})"]
    if machine.get("float_env"):
        parts.append(" ".join(f"{k}={v}" for k, v in sorted(machine["float_env"].items())))
    return ", ".join(parts) + f" [{machine_id(record)}]"


def device_kind(record: dict) -> str:
    """"cpu" or "cuda": runs of one kind are compared by the gate (exactly on one machine, within measured
    tolerances across machines); across kinds the z stream itself differs."""
    return record["environment"]["device"]["type"]


def hardware_class(record: dict) -> str:
    return record["environment"]["device"].get("hardware_class", record["environment"]["device"]["type"])


def data_identity(record: dict, digits: int = 64) -> str:
    """The task data a run was made from: the sha256 of each source file, "test:<sha256>,train:<sha256>"
    (`digits` hex digits each; 8 for display). Runs of different data never group together. The
    split's sha256 is no identity: it differs per seed and k by design (see check_identities)."""
    sources = record["data"]["source_sha256"]
    return ",".join(f"{name}:{digest[:digits]}" for name, digest in sorted(sources.items()))


def record_name(record: dict) -> str:
    """Where a record came from, for messages: its file, or its run id for a record never stored."""
    return record.get("_path") or f"run {record.get('run_id')}"


def check_identities(records: list[dict]) -> None:
    """Refuse, with a HarnessError naming both records, records that would be grouped wrongly:
    - two protocol hashes under one protocol name, version, profile and variant (the protocol's
      settings changed without a version bump, so the name and version no longer say what ran);
    - two runs of one protocol hash, source data, k and seed made from different k-shot splits
      (`data.split_sha256`; the split is a function of the data, k and seed)."""
    by_name: dict[tuple, dict] = {}
    by_split: dict[tuple, dict] = {}
    for record in records:
        protocol = record["protocol"]
        name = (protocol["name"], protocol["version"], protocol["profile"], record["variant"]["name"])
        first = by_name.setdefault(name, record)
        if first["protocol"]["hash"] != protocol["hash"]:
            raise HarnessError(
                f"protocol {name[0]} v{name[1]} profile {name[2]} variant {name[3]} has two protocol hashes: "
                f"{first['protocol']['hash']} ({record_name(first)}) and {protocol['hash']} ({record_name(record)}); "
                f"a changed protocol needs a new version, so one of them is not what its name says")
        point = (protocol["hash"], data_identity(record), record["k"], record["seed"])
        first = by_split.setdefault(point, record)
        if first["data"]["split_sha256"] != record["data"]["split_sha256"]:
            raise HarnessError(
                f"two runs of protocol {protocol['hash'][:8]} k={record['k']} seed={record['seed']} on the same "
                f"source data have different splits (data.split_sha256): {record_name(first)} and "
                f"{record_name(record)}")


def selectable(records: list[dict]) -> list[dict]:
    """Runs that are points of their grid: completed, or diverged (stopped at a non-finite loss)."""
    return [r for r in records if r.get("status") in ("completed", "diverged")]


def grid_point(record: dict) -> tuple:
    """(seed, lr, batch size, eps, weight decay): the run's point in its profile's grid."""
    hp = record["hyperparameters"]
    return (record["seed"], hp["lr"], hp["batch_size"], hp.get("eps"), hp.get("weight_decay"))


def missing_grid_points(runs: list[dict]) -> list[tuple] | None:
    """The points of the runs' grid (the first run's `protocol.grid`; the runs are of one protocol
    hash and k) that no completed or diverged run of them covers; None where the records do not say
    their grid (older schema)."""
    grid = runs[0]["protocol"].get("grid")
    if grid is None:
        return None
    have = {grid_point(r) for r in selectable(runs)}
    return [point for point in grid_points(grid) if point not in have]


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
    (`finetune.sh`, and zero-shot/LP, which have one point per seed); the rest of result/$TASK-$MODEL-...-$TAG$GRID_TAG/$K-$SEED is the same."""
    hp = record["hyperparameters"]
    name = f"bs{hp['batch_size']}-lr{_shell_number(hp['lr'])}"
    if record["variant"]["optimizer"] in ZEROTH_ORDER:   # mezo.sh's tag (MeZO-Adam runs through mezo.sh too)
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
