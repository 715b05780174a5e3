"""`mezo-bench gate`: refuse a change that makes the results worse.

Runs are matched on what they are: protocol hash, source data (data.source_sha256), hardware
class, variant, k, and the grid point (seed, lr, batch size, eps, weight decay), the latest
record of each side winning; records whose protocol names and hashes disagree are refused
(harness.results.selection.check_identities). Each metric of benchmarks/gate.toml is compared
with its direction and tolerance.

The gate fails closed. Regressions are: a metric the baseline has and the candidate lacks
(unless the config marks it `optional` for that run); runs only in the baseline ("removed");
runs that completed in the baseline but not in the candidate ("newly failing"); records of
either side that cannot be read or lack required fields ("unreadable"); and a candidate with
nothing comparable to the baseline (e.g. a new protocol version): a gate that compares nothing
must not pass. A run of one side with no match on the other says why: which of protocol hash,
data and hardware class differ from the other side's runs of that variant, k and grid point, or
that the other side has none. Runs only in the candidate are listed as added. A metric's
`noise_floor` (in its unit) is a change that never counts (memory: 2 MiB, as the memory each
phase adds is gated, not the peak). `mezo-bench gate` exits 1 on any regression, 0 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_keys, read_toml
from harness.results.selection import (
    check_identities,
    data_identity,
    field_value,
    grid_point,
    hardware_class,
)

METRIC_KEYS = ("path", "direction", "kind", "tolerance", "noise_floor", "only", "optional")
CONDITION_KEYS = ("profile", "hardware")   # of `only` and `optional`: the run's profile, hardware kind (cpu, cuda)


@dataclass(frozen=True)
class GateMetric:
    name: str
    path: tuple[str, ...]
    direction: str
    kind: str
    tolerance: float
    only: dict
    noise_floor: float = 0.0   # a change smaller than this (the metric's unit) is never a regression
    optional: dict | None = None   # where the candidate may lack it: None never, {} always, else conditions


def load_gate_config(path: str | Path) -> list[GateMetric]:
    path = Path(path)
    raw = read_toml(path, "gate config")
    metrics = []
    for name, table in raw.get("metrics", {}).items():
        where = f"{path} [metrics.{name}]"
        check_keys(table, METRIC_KEYS, where)
        if table.get("direction") not in ("up", "down"):
            raise HarnessError(f"{where}: field 'direction' must be 'up' or 'down', got {table.get('direction')!r}")
        if table.get("kind") not in ("abs", "rel", "exact"):
            raise HarnessError(f"{where}: field 'kind' must be 'abs', 'rel' or 'exact', got {table.get('kind')!r}")
        tolerance = table.get("tolerance", 0.0)
        if table["kind"] != "exact" and (not isinstance(tolerance, (int, float)) or tolerance < 0 or "tolerance" not in table):
            raise HarnessError(f"{where}: field 'tolerance' must be a number >= 0, got {table.get('tolerance')!r}")
        if "path" not in table:
            raise HarnessError(f"{where}: missing key 'path'")
        noise_floor = table.get("noise_floor", 0.0)
        if not isinstance(noise_floor, (int, float)) or isinstance(noise_floor, bool) or noise_floor < 0:
            raise HarnessError(f"{where}: field 'noise_floor' must be a number >= 0, got {noise_floor!r}")
        only = _conditions(table.get("only", {}), f"{where} only")
        optional = table.get("optional", False)
        if isinstance(optional, bool):
            optional = {} if optional else None
        else:
            optional = _conditions(optional, f"{where} optional")
        metrics.append(GateMetric(name, tuple(table["path"].split(".")), table["direction"], table["kind"],
                                  float(tolerance), only, float(noise_floor), optional))
    if not metrics:
        raise HarnessError(f"{path}: no [metrics.*] tables")
    return metrics


def _conditions(table, where: str) -> dict:
    """`only` or `optional` as a table of conditions on the run, e.g. { profile = "smoke" }."""
    if not isinstance(table, dict):
        raise HarnessError(f"{where}: must be a table of conditions ({', '.join(CONDITION_KEYS)})"
                           f"{' or true/false' if where.endswith('optional') else ''}, got {table!r}")
    check_keys(table, CONDITION_KEYS, where)
    return dict(table)


def _holds(conditions: dict, record: dict) -> bool:
    """Whether the run meets every condition ({} always holds)."""
    checks = {"profile": record["protocol"]["profile"], "hardware": hardware_class(record).split(":")[0]}
    return all(checks[key] == value for key, value in conditions.items())


def run_key(record: dict) -> tuple:
    """(protocol hash, data, hardware class, variant, k, seed, lr, batch size, eps, weight decay)."""
    return (record["protocol"]["hash"], data_identity(record), hardware_class(record), record["variant"]["name"],
            record["k"], *grid_point(record))


def _label(record: dict) -> str:
    digest, _, hardware, variant, k, seed, lr, batch, eps, wd = run_key(record)
    return (f"{variant} k={k} seed={seed} lr={lr:g} batch={batch} eps={eps:g} wd={wd:g} "
            f"[{hardware}, protocol {digest[:8]}, data {data_identity(record, 8)}]")


# run_key's first three parts, by name, as messages show them
_IDENTITY = {"protocol hash": lambda r: r["protocol"]["hash"][:12], "data": lambda r: data_identity(r, 8),
             "hardware class": hardware_class}


def _why_unmatched(record: dict, other: dict[tuple, dict], side: str) -> str:
    """Why no run of the other side (`side`: its name) matches this one: for each of its runs of
    the same variant, k and grid point, which of protocol hash, data and hardware class differ,
    with both values; or that it has no run of that variant and point."""
    key = run_key(record)
    near = [run for other_key, run in other.items() if other_key[3:] == key[3:]]
    if not near:
        of_variant = any(other_key[3] == key[3] for other_key in other)
        return (f"the {side} has no run of {key[3]} k={key[4]} at this grid point"
                + ("" if of_variant else f" (no run of {key[3]} at all)"))
    reasons = set()
    for run in near:   # run_key's first three parts differ: say which, as _IDENTITY shows them
        differ = [what for what, mine, theirs in zip(_IDENTITY, key[:3], run_key(run)[:3]) if mine != theirs]
        reasons.add(", ".join(f"{what} {_IDENTITY[what](record)} here but {_IDENTITY[what](run)} in the {side}"
                              for what in differ))
    return "; ".join(sorted(reasons))


def _latest(records: list[dict]) -> dict[tuple, dict]:
    latest = {}
    for record in sorted(records, key=lambda r: r["created_utc"]):
        latest[run_key(record)] = record
    return latest


def compare_metric(metric: GateMetric, base, cand, optional: bool = False) -> tuple[str, str]:
    """(verdict, delta text): verdict is ok, improved, regressed, n/a (the baseline lacks the
    metric) or "missing (optional)". A metric the baseline has and the candidate lacks is a
    regression unless `optional` (the config's `optional` holds for the run)."""
    if base is None:
        return "n/a", "missing in baseline" + (" and candidate" if cand is None else "")
    if cand is None:
        return ("missing (optional)", "missing in candidate (optional)") if optional else (
            "regressed", "missing in candidate")
    if metric.kind == "exact":
        if base == cand:
            return "ok", "identical"
        return "regressed", _first_difference(base, cand)
    delta = cand - base
    if metric.kind == "abs":
        allowed = metric.tolerance
        delta_text = f"{delta:+.4g}"
    else:
        allowed = metric.tolerance * abs(base)
        delta_text = f"{delta:+.4g} ({delta / base:+.1%})" if base else f"{delta:+.4g}"
    allowed = max(allowed, metric.noise_floor)
    worse = -delta if metric.direction == "up" else delta
    if worse > allowed:
        return "regressed", delta_text
    if -worse > allowed:
        return "improved", delta_text
    return "ok", delta_text


def _first_difference(base, cand) -> str:
    if isinstance(base, dict) and isinstance(cand, dict):
        for series in sorted(base.keys() | cand.keys()):
            if base.get(series) != cand.get(series):
                a, b = base.get(series) or [], cand.get(series) or []
                for index, (x, y) in enumerate(zip(a, b)):
                    if x != y:
                        step = base.get("steps", [index])[index] if index < len(base.get("steps", [])) else index
                        return f"{series} differs first at step {step}: {x!r} -> {y!r}"
                return f"{series}: {len(a)} -> {len(b)} points"
    return "differs"


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{len(value.get('steps', []))} points"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def gate(baseline: list[dict], candidate: list[dict], metrics: list[GateMetric],
         baseline_problems: list[str] = (), candidate_problems: list[str] = ()) -> dict:
    """The comparison (see the module's docstring). *_problems: the records of each side that
    could not be read ("<path>: <why>", harness.results.store.read_records_checked), each a regression."""
    check_identities(baseline)
    check_identities(candidate)
    base, cand = _latest(baseline), _latest(candidate)
    rows, regressions, optional_missing = [], 0, set()
    removed = sorted(f"{_label(base[k])}: {_why_unmatched(base[k], cand, 'candidate')}" for k in base.keys() - cand.keys())
    added = sorted(f"{_label(cand[k])}: {_why_unmatched(cand[k], base, 'baseline')}" for k in cand.keys() - base.keys())
    unreadable = [f"baseline {p}" for p in baseline_problems] + [f"candidate {p}" for p in candidate_problems]
    newly_failing = []
    for key in sorted(base.keys() & cand.keys(), key=lambda k: tuple(str(part) for part in k)):
        b, c = base[key], cand[key]
        if b["status"] == "completed" and c["status"] != "completed":
            newly_failing.append(f"{_label(b)}: {c.get('error', c['status'])}")
            continue
        for metric in metrics:
            if not _holds(metric.only, b):
                continue
            bv, cv = field_value(b, metric.path), field_value(c, metric.path)
            optional = metric.optional is not None and _holds(metric.optional, b)
            verdict, delta = compare_metric(metric, bv, cv, optional)
            regressions += verdict == "regressed"
            if verdict == "missing (optional)":
                optional_missing.add(metric.name)
            rows.append({"run": _label(b), "metric": metric.name, "baseline": _show(bv), "candidate": _show(cv),
                         "delta": delta, "verdict": verdict})
    regressions += len(removed) + len(newly_failing) + len(unreadable)
    if not base.keys() & cand.keys():
        regressions += 1   # nothing comparable: a gate that compares nothing must not pass
    return {"passed": regressions == 0, "regressions": regressions, "compared_runs": len(base.keys() & cand.keys()),
            "rows": rows, "added": added, "removed": removed, "newly_failing": newly_failing,
            "unreadable": unreadable, "optional_missing": sorted(optional_missing)}


def to_markdown(result: dict) -> str:
    lines = [f"# Regression gate: {'PASSED' if result['passed'] else 'FAILED'}", "",
             f"{result['compared_runs']} run(s) compared, {result['regressions']} regression(s).", ""]
    if result["compared_runs"] == 0:
        lines += ["No run of the candidate matches a baseline run (same protocol hash, data, hardware class, "
                  "variant, k and grid point); each run below says what differs. If the protocol version "
                  "changed, record a new baseline.", ""]
    if result["optional_missing"]:
        lines += ["Missing in the candidate but optional for these runs in the gate config (not a regression): "
                  + ", ".join(result["optional_missing"]) + ".", ""]
    for title, items in (("Unreadable or incomplete records (regression)", result["unreadable"]),
                         ("Removed (regression)", result["removed"]), ("Newly failing (regression)", result["newly_failing"]),
                         ("Added", result["added"])):
        if items:
            lines += [f"## {title}", ""] + [f"- {item}" for item in items] + [""]
    lines += ["| run | metric | baseline | candidate | Δ | verdict |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        verdict = f"**{row['verdict']}**" if row["verdict"] == "regressed" else row["verdict"]
        lines.append(f"| {row['run']} | {row['metric']} | {row['baseline']} | {row['candidate']} | {row['delta']} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_gate_report(result: dict, out_dir: Path) -> list[Path]:
    """gate.md and gate.json in out_dir (each written atomically); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out_dir / "gate.md", to_markdown(result)),
            atomic_write_text(out_dir / "gate.json", json.dumps(result, indent=1) + "\n")]
