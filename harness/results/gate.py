"""`mezo-bench gate`: refuse a change that makes the results worse.

Runs are matched on (protocol hash, hardware class, variant, k, and the grid point: seed, lr,
batch size, eps, weight decay),
the latest record of each side winning. Each metric of benchmarks/gate.toml is compared
with its direction and tolerance. Runs only in the baseline ("removed") and runs that
completed in the baseline but failed in the candidate ("newly failing") are regressions
too; runs only in the candidate are listed as added. A candidate with nothing comparable to
the baseline (e.g. a new protocol version) is a regression: a gate that compares nothing must
not pass. A metric's `noise_floor` (in its unit) is a change that never counts (memory: 2 MiB,
as the memory each phase adds is gated, not the peak). `mezo-bench gate` exits 1 on any
regression, 0 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_keys, read_toml
from harness.results.selection import field_value, grid_point, hardware_class

METRIC_KEYS = ("path", "direction", "kind", "tolerance", "noise_floor", "only")


@dataclass(frozen=True)
class GateMetric:
    name: str
    path: tuple[str, ...]
    direction: str
    kind: str
    tolerance: float
    only: dict
    noise_floor: float = 0.0   # a change smaller than this (the metric's unit) is never a regression


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
        metrics.append(GateMetric(name, tuple(table["path"].split(".")), table["direction"], table["kind"],
                                  float(tolerance), dict(table.get("only", {})), float(noise_floor)))
    if not metrics:
        raise HarnessError(f"{path}: no [metrics.*] tables")
    return metrics


def run_key(record: dict) -> tuple:
    return (record["protocol"]["hash"], hardware_class(record), record["variant"]["name"], record["k"],
            *grid_point(record))


def _label(key: tuple) -> str:
    digest, hardware, variant, k, seed, lr, batch, eps, wd = key
    return (f"{variant} k={k} seed={seed} lr={lr:g} batch={batch} eps={eps:g} wd={wd:g} "
            f"[{hardware}, protocol {digest[:8]}]")


def _latest(records: list[dict]) -> dict[tuple, dict]:
    latest = {}
    for record in sorted(records, key=lambda r: r["created_utc"]):
        latest[run_key(record)] = record
    return latest


def _applies(metric: GateMetric, record: dict) -> bool:
    checks = {"profile": record["protocol"]["profile"], "hardware": hardware_class(record).split(":")[0]}
    return all(checks.get(key) == value for key, value in metric.only.items())


def compare_metric(metric: GateMetric, base, cand) -> tuple[str, str]:
    """(verdict, delta text): verdict is ok, improved, regressed or n/a."""
    if base is None or cand is None:
        return "n/a", "missing"
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


def gate(baseline: list[dict], candidate: list[dict], metrics: list[GateMetric]) -> dict:
    base, cand = _latest(baseline), _latest(candidate)
    rows, regressions = [], 0
    removed = sorted(_label(k) for k in base.keys() - cand.keys())
    added = sorted(_label(k) for k in cand.keys() - base.keys())
    newly_failing = []
    for key in sorted(base.keys() & cand.keys(), key=lambda k: tuple(str(part) for part in k)):
        b, c = base[key], cand[key]
        if b["status"] == "completed" and c["status"] != "completed":
            newly_failing.append(f"{_label(key)}: {c.get('error', c['status'])}")
            continue
        for metric in metrics:
            if not _applies(metric, b):
                continue
            bv, cv = field_value(b, metric.path), field_value(c, metric.path)
            verdict, delta = compare_metric(metric, bv, cv)
            regressions += verdict == "regressed"
            rows.append({"run": _label(key), "metric": metric.name, "baseline": _show(bv), "candidate": _show(cv),
                         "delta": delta, "verdict": verdict})
    regressions += len(removed) + len(newly_failing)
    if not base.keys() & cand.keys():
        regressions += 1   # nothing comparable: a gate that compares nothing must not pass
    return {"passed": regressions == 0, "regressions": regressions, "compared_runs": len(base.keys() & cand.keys()),
            "rows": rows, "added": added, "removed": removed, "newly_failing": newly_failing}


def to_markdown(result: dict) -> str:
    lines = [f"# Regression gate: {'PASSED' if result['passed'] else 'FAILED'}", "",
             f"{result['compared_runs']} run(s) compared, {result['regressions']} regression(s).", ""]
    if result["compared_runs"] == 0:
        lines += ["No run of the candidate matches a baseline run (same protocol hash, hardware class, variant, "
                  "k, seed, lr, batch size). If the protocol version changed, record a new baseline.", ""]
    for title, items in (("Removed (regression)", result["removed"]), ("Newly failing (regression)", result["newly_failing"]),
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
