"""`mezo-bench gate`: refuse a change that makes the results worse.

Runs are matched on what they are: protocol hash, source data (data.source_sha256), device kind
(cpu or cuda), variant, k, and the grid point (seed, lr, batch size, eps, weight decay); records
whose protocol names and hashes disagree are refused (harness.results.selection.check_identities).
The candidate's latest record of a point is compared with a baseline record of that point:

- **same machine**: the latest baseline record made on the candidate's machine identity
  (`environment.machine`, harness.recipes.provenance.machine_identity: CPU vendor, model and
  signature, the instruction set torch dispatches to, threads, the torch build, numpy's BLAS, the
  kernel-changing environment variables; on CUDA the GPU and CUDA/cuDNN versions). Each metric of
  benchmarks/gate.toml is compared with its own rule: loss trajectories exactly.
- **across machines**: where the baseline has no record of that identity, its latest record of the
  point, compared with the metric's `across_machines` rule: a tolerance measured across machines
  (gate.toml says where each number comes from; for a trajectory, a tight one over its first
  `steps` steps and a loose `late_tolerance` after, as float differences can grow chaotically), or
  `"skip"` (timings: never across machines). `[across_machines.<name>]` tables give kinds of runs
  (started from a linear probe; on CUDA) rules of their own across machines.
  A record made before machine identities were recorded is of an unknown machine: never the same.

The report says, per run, which baseline machine it used and whether the comparison was exact or
tolerant. The gate fails closed. Regressions are: a metric the baseline has and the candidate lacks
(unless the config marks it `optional` for that run); a value that is not a finite number (NaN,
infinity, a string) or a trajectory point that is not; runs only in the baseline ("removed");
runs that completed in the baseline but not in the candidate ("newly failing"); records of either
side that cannot be read or lack required fields ("unreadable"); and a candidate with nothing
comparable to the baseline (e.g. a new protocol version): a gate that compares nothing must not
pass. A run of one side with no match on the other says why: which of protocol hash, data and
device kind differ from the other side's runs of that variant, k and grid point, or that the other
side has none. Runs only in the candidate are listed as added. A metric's `noise_floor` (in its
unit) is a change that never counts (memory: 2 MiB, as the memory each phase adds is gated, not
the peak). `mezo-bench gate` exits 1 on any regression, 0 otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_keys, read_toml
from harness.results.selection import (
    check_identities,
    data_identity,
    device_kind,
    field_value,
    grid_point,
    hardware_class,
    machine_id,
    machine_summary,
)

METRIC_KEYS = ("path", "direction", "kind", "tolerance", "noise_floor", "only", "optional", "across_machines")
RULE_KEYS = ("kind", "tolerance", "noise_floor", "steps", "late_tolerance")   # of an `across_machines` table
# of `only` and `optional`: the run's profile, hardware kind (cpu, cuda), whether it starts from a linear probe
CONDITION_KEYS = ("profile", "hardware", "linear_probe")
KINDS = ("abs", "rel", "exact")
SKIP = "skip"
SAME_MACHINE, ACROSS_MACHINES = "exact (same machine)", "tolerant (across machines)"


@dataclass(frozen=True)
class Rule:
    """How a metric may move: kind "abs" (tolerance in the metric's unit; on a loss trajectory, on every
    point of every loss series), "rel" (fraction of the baseline) or "exact"; changes below noise_floor
    never count. steps (trajectories only): the tolerance applies to the points up to this step; later
    points must be finite and within late_tolerance (None: any finite value)."""
    kind: str
    tolerance: float = 0.0
    noise_floor: float = 0.0
    steps: int | None = None
    late_tolerance: float | None = None


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
    across_machines: Rule | str | None = None   # against another machine's baseline: a Rule, SKIP, or None (the same rule)

    @property
    def rule(self) -> Rule:
        return Rule(self.kind, self.tolerance, self.noise_floor)

    def rule_for(self, comparison: str) -> Rule | str:
        """The rule of a comparison (SAME_MACHINE or ACROSS_MACHINES), or SKIP."""
        if comparison == ACROSS_MACHINES and self.across_machines is not None:
            return self.across_machines
        return self.rule


@dataclass(frozen=True)
class Override:
    """`[across_machines.<name>]`: for runs meeting `when` (conditions as for `only`), against another
    machine's baseline, these metrics' rules instead of their own `across_machines` (a Rule or SKIP);
    `rules = "skip"` skips every metric (only completion and finite values are then checked)."""
    name: str
    when: dict
    rules: dict | str


@dataclass(frozen=True)
class GateConfig:
    """benchmarks/gate.toml: its metrics and the cross-machine overrides for kinds of runs."""
    metrics: list[GateMetric]
    overrides: tuple[Override, ...] = ()

    def __iter__(self):
        return iter(self.metrics)

    def rule(self, metric: GateMetric, record: dict, comparison: str) -> Rule | str:
        """The rule a metric is compared with for this (baseline) run and comparison."""
        if comparison == ACROSS_MACHINES:
            for override in self.overrides:
                if _holds(override.when, record):
                    if override.rules == SKIP:
                        return SKIP
                    if metric.name in override.rules:
                        return override.rules[metric.name]
        return metric.rule_for(comparison)


def _rule(table: dict, where: str) -> Rule:
    """A metric's own rule or its `across_machines` table, validated."""
    if table.get("kind") not in KINDS:
        raise HarnessError(f"{where}: field 'kind' must be 'abs', 'rel' or 'exact', got {table.get('kind')!r}")
    tolerance = table.get("tolerance", 0.0)
    if table["kind"] != "exact" and ("tolerance" not in table or not isinstance(tolerance, (int, float))
                                     or isinstance(tolerance, bool) or tolerance < 0):
        raise HarnessError(f"{where}: field 'tolerance' must be a number >= 0, got {table.get('tolerance')!r}")
    noise_floor = table.get("noise_floor", 0.0)
    if not isinstance(noise_floor, (int, float)) or isinstance(noise_floor, bool) or noise_floor < 0:
        raise HarnessError(f"{where}: field 'noise_floor' must be a number >= 0, got {noise_floor!r}")
    steps = table.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise HarnessError(f"{where}: field 'steps' must be an integer >= 1, got {steps!r}")
    late = table.get("late_tolerance")
    if late is not None and (not isinstance(late, (int, float)) or isinstance(late, bool) or late < 0 or steps is None):
        raise HarnessError(f"{where}: field 'late_tolerance' must be a number >= 0 and needs 'steps', got {late!r}")
    return Rule(table["kind"], float(tolerance), float(noise_floor), steps, None if late is None else float(late))


def load_gate_config(path: str | Path) -> GateConfig:
    path = Path(path)
    raw = read_toml(path, "gate config")
    check_keys(raw, ("metrics", "across_machines"), str(path))
    across_tables = raw.get("across_machines", {})
    if not isinstance(across_tables, dict):
        raise HarnessError(f"{path}: [across_machines] must hold tables, got {across_tables!r}")
    metrics = []
    for name, table in raw.get("metrics", {}).items():
        where = f"{path} [metrics.{name}]"
        check_keys(table, METRIC_KEYS, where)
        if table.get("direction") not in ("up", "down"):
            raise HarnessError(f"{where}: field 'direction' must be 'up' or 'down', got {table.get('direction')!r}")
        rule = _rule(table, where)
        if "path" not in table:
            raise HarnessError(f"{where}: missing key 'path'")
        only = _conditions(table.get("only", {}), f"{where} only")
        optional = table.get("optional", False)
        if isinstance(optional, bool):
            optional = {} if optional else None
        else:
            optional = _conditions(optional, f"{where} optional")
        across = table.get("across_machines")
        if isinstance(across, dict):
            check_keys(across, RULE_KEYS, f"{where} across_machines")
            across = _rule(across, f"{where} across_machines")
        elif across is not None and across != SKIP:
            raise HarnessError(f"{where}: field 'across_machines' must be a table (kind, tolerance, noise_floor) "
                               f"or \"{SKIP}\", got {across!r}")
        metrics.append(GateMetric(name, tuple(table["path"].split(".")), table["direction"], rule.kind,
                                  rule.tolerance, only, rule.noise_floor, optional, across))
    if not metrics:
        raise HarnessError(f"{path}: no [metrics.*] tables")
    return GateConfig(metrics, tuple(_override(name, table, f"{path} [across_machines.{name}]", metrics)
                                     for name, table in across_tables.items()))


def _override(name: str, table, where: str, metrics: list[GateMetric]) -> Override:
    if not isinstance(table, dict):
        raise HarnessError(f"{where}: must be a table (when, rules), got {table!r}")
    check_keys(table, ("when", "rules"), where)
    if "when" not in table or "rules" not in table:
        raise HarnessError(f"{where}: needs 'when' (conditions) and 'rules' (a table of metric rules, or \"{SKIP}\")")
    when = _conditions(table["when"], f"{where} when")
    rules = table["rules"]
    if rules == SKIP:
        return Override(name, when, SKIP)
    if not isinstance(rules, dict):
        raise HarnessError(f"{where}: field 'rules' must be a table of metric rules or \"{SKIP}\", got {rules!r}")
    known = {metric.name for metric in metrics}
    parsed: dict = {}
    for metric_name, rule in rules.items():
        if metric_name not in known:
            raise HarnessError(f"{where} rules: unknown metric {metric_name!r}; metrics: {', '.join(sorted(known))}")
        if rule == SKIP:
            parsed[metric_name] = SKIP
        elif isinstance(rule, dict):
            check_keys(rule, RULE_KEYS, f"{where} rules.{metric_name}")
            parsed[metric_name] = _rule(rule, f"{where} rules.{metric_name}")
        else:
            raise HarnessError(f"{where} rules.{metric_name}: must be a table (kind, tolerance, ...) or \"{SKIP}\", "
                               f"got {rule!r}")
    return Override(name, when, parsed)


def _conditions(table, where: str) -> dict:
    """`only` or `optional` as a table of conditions on the run, e.g. { profile = "smoke" } or
    { profile = ["smoke", "standin-gate"] } (any of the list)."""
    if not isinstance(table, dict):
        raise HarnessError(f"{where}: must be a table of conditions ({', '.join(CONDITION_KEYS)})"
                           f"{' or true/false' if where.endswith('optional') else ''}, got {table!r}")
    check_keys(table, CONDITION_KEYS, where)
    return dict(table)


def _holds(conditions: dict, record: dict) -> bool:
    """Whether the run meets every condition ({} always holds); a list is any of its values."""
    checks = {"profile": record["protocol"]["profile"], "hardware": hardware_class(record).split(":")[0],
              "linear_probe": bool(record["variant"].get("linear_probe", False))}
    return all(checks[key] in (value if isinstance(value, list) else [value]) for key, value in conditions.items())


def run_key(record: dict) -> tuple:
    """(protocol hash, data, device kind, variant, k, seed, lr, batch size, eps, weight decay)."""
    return (record["protocol"]["hash"], data_identity(record), device_kind(record), record["variant"]["name"],
            record["k"], *grid_point(record))


def _label(record: dict) -> str:
    digest, _, kind, variant, k, seed, lr, batch, eps, wd = run_key(record)
    return (f"{variant} k={k} seed={seed} lr={lr:g} batch={batch} eps={eps:g} wd={wd:g} "
            f"[{kind}, protocol {digest[:8]}, data {data_identity(record, 8)}]")


# run_key's first three parts, by name, as messages show them
_IDENTITY = {"protocol hash": lambda r: r["protocol"]["hash"][:12], "data": lambda r: data_identity(r, 8),
             "device kind": device_kind}


def _why_unmatched(record: dict, other: dict[tuple, list[dict]], side: str) -> str:
    """Why no run of the other side (`side`: its name) matches this one: for each of its runs of
    the same variant, k and grid point, which of protocol hash, data and device kind differ,
    with both values; or that it has no run of that variant and point."""
    key = run_key(record)
    near = [runs[-1] for other_key, runs in other.items() if other_key[3:] == key[3:]]
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


def _by_point(records: list[dict]) -> dict[tuple, list[dict]]:
    """Each point's records, oldest first."""
    points: dict[tuple, list[dict]] = {}
    for record in sorted(records, key=lambda r: r["created_utc"]):
        points.setdefault(run_key(record), []).append(record)
    return points


def pick_baseline(baselines: list[dict], candidate: dict) -> tuple[dict, str]:
    """The baseline record a candidate is compared with, and how (module docstring): the latest of the
    candidate's own machine identity (SAME_MACHINE), else the latest of the point (ACROSS_MACHINES).
    `baselines`: the point's baseline records, oldest first."""
    mine = machine_id(candidate)
    same = [record for record in baselines if mine is not None and machine_id(record) == mine]
    pool, comparison = (same, SAME_MACHINE) if same else (baselines, ACROSS_MACHINES)
    completed = [record for record in pool if record.get("status") == "completed"]
    return (completed or pool)[-1], comparison


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def compare_metric(metric: GateMetric, base, cand, optional: bool = False, comparison: str = SAME_MACHINE,
                   eps: float | None = None, rule: Rule | str | None = None) -> tuple[str, str]:
    """(verdict, delta text): verdict is ok, improved, regressed, n/a (the baseline lacks the
    metric), "missing (optional)" or "skipped" (the metric is not compared across machines). A metric
    the baseline has and the candidate lacks is a regression unless `optional` (the config's
    `optional` holds for the run); so is a value that is not a finite number. `eps`: the run's MeZO eps,
    for a trajectory's projected gradients across machines (see _compare_curves). `rule`: the rule to
    use (GateConfig.rule), default the metric's own for the comparison."""
    if base is None:
        return "n/a", "missing in baseline" + (" and candidate" if cand is None else "")
    if cand is None:
        return ("missing (optional)", "missing in candidate (optional)") if optional else (
            "regressed", "missing in candidate")
    rule = metric.rule_for(comparison) if rule is None else rule
    if rule == SKIP:
        return _skipped(cand, "not compared across machines")
    if isinstance(base, dict) or isinstance(cand, dict):
        return _compare_curves(rule, base, cand, eps)
    if not _finite(cand):
        return "regressed", f"candidate value {cand!r} is not a finite number"
    if not _finite(base):
        return "regressed", f"baseline value {base!r} is not a finite number: re-record the baseline"
    if rule.kind == "exact":
        return ("ok", "identical") if base == cand else ("regressed", f"{cand - base:+.4g} (must be identical)")
    delta = cand - base
    if rule.kind == "abs":
        allowed = rule.tolerance
        delta_text = f"{delta:+.4g}"
    else:
        allowed = rule.tolerance * abs(base)
        delta_text = f"{delta:+.4g} ({delta / base:+.1%})" if base else f"{delta:+.4g}"
    allowed = max(allowed, rule.noise_floor)
    worse = -delta if metric.direction == "up" else delta
    if worse > allowed:
        return "regressed", delta_text
    if -worse > allowed:
        return "improved", delta_text
    return "ok", delta_text


def _skipped(cand, why: str) -> tuple[str, str]:
    """A metric not compared: still a regression where the candidate has a value that is not a finite
    number (a scalar, or any point of a trajectory's series)."""
    if isinstance(cand, dict):
        values = [value for series, points in cand.items() if series not in ("steps", "stride")
                  for value in points or []]
    else:
        values = [cand]
    bad = [value for value in values if not _finite(value)]
    if bad:
        return "regressed", f"{why}, but the candidate has {bad[0]!r}, not a finite number"
    return "skipped", why


def _compare_curves(rule: Rule, base, cand, eps: float | None) -> tuple[str, str]:
    """A loss trajectory ({"steps": [...], "<series>": [...], "stride": n}). Exact: identical. Abs: the same
    steps and series, every point finite, each loss series within `tolerance` at every step up to
    `rule.steps` (all if None); the projected gradient (l+ - l-) / (2 eps) within tolerance / eps, what
    loss differences within tolerance allow."""
    if not isinstance(base, dict) or not isinstance(cand, dict):
        return "regressed", "not a trajectory on both sides"
    if rule.kind == "exact":
        return ("ok", "identical") if base == cand else ("regressed", _first_difference(base, cand))
    if rule.kind != "abs":
        raise HarnessError(f"a loss trajectory is compared exactly or with an 'abs' tolerance, not {rule.kind!r}")
    if base.keys() != cand.keys():
        return "regressed", f"series {sorted(base)} -> {sorted(cand)}"
    if base.get("steps") != cand.get("steps") or base.get("stride") != cand.get("stride"):
        return "regressed", f"steps differ: {len(base.get('steps') or [])} -> {len(cand.get('steps') or [])} points"
    worst: tuple[float, str, int] = (0.0, "", 0)
    for series in sorted(set(base) - {"steps", "stride"}):
        a, b = base[series] or [], cand[series] or []
        if len(a) != len(b):
            return "regressed", f"{series}: {len(a)} -> {len(b)} points"
        allowed = rule.tolerance
        if series == "projected_grad":
            if not eps:
                return "regressed", "projected_grad across machines needs the run's eps"
            allowed = rule.tolerance / eps
        for index, (x, y) in enumerate(zip(a, b)):
            step = base["steps"][index] if index < len(base.get("steps") or []) else index
            if not _finite(x) or not _finite(y):
                return "regressed", f"{series} at step {step}: {x!r} -> {y!r} (not a finite number)"
            difference = abs(y - x)
            if rule.steps is not None and step > rule.steps:
                late = rule.late_tolerance
                if late is not None and series != "projected_grad" and difference > late:
                    return "regressed", (f"{series} differs at step {step} by {difference:.3g} "
                                         f"(after step {rule.steps}: tolerance {late:.3g}): {x!r} -> {y!r}")
                continue
            if difference > max(allowed, rule.noise_floor):
                return "regressed", (f"{series} differs at step {step} by {difference:.3g} "
                                     f"(tolerance {allowed:.3g}): {x!r} -> {y!r}")
            if series != "projected_grad" and difference > worst[0]:
                worst = (difference, series, step)
    window = ("" if rule.steps is None else f"; steps > {rule.steps} only checked to be finite"
              + ("" if rule.late_tolerance is None else f" and within {rule.late_tolerance:.3g}"))
    if worst[0] == 0.0:
        if base == cand:
            return "ok", "identical"
        return "ok", (f"identical up to step {rule.steps}{window}" if rule.steps is not None
                      else "loss series identical; projected gradients within tolerance / eps")
    return "ok", f"max |Δ| {worst[0]:.3g} ({worst[1]}, step {worst[2]}; tolerance {rule.tolerance:.3g}{window})"


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


def gate(baseline: list[dict], candidate: list[dict], metrics: GateConfig | list[GateMetric],
         baseline_problems: list[str] = (), candidate_problems: list[str] = ()) -> dict:
    """The comparison (see the module's docstring). *_problems: the records of each side that
    could not be read ("<path>: <why>", harness.results.store.read_records_checked), each a regression."""
    config = metrics if isinstance(metrics, GateConfig) else GateConfig(list(metrics))
    check_identities(baseline)
    check_identities(candidate)
    base, cand = _by_point(baseline), _by_point(candidate)
    rows, runs, regressions, optional_missing, machines = [], [], 0, set(), {}
    removed = sorted(f"{_label(base[k][-1])}: {_why_unmatched(base[k][-1], cand, 'candidate')}"
                     for k in base.keys() - cand.keys())
    added = sorted(f"{_label(cand[k][-1])}: {_why_unmatched(cand[k][-1], base, 'baseline')}"
                   for k in cand.keys() - base.keys())
    unreadable = [f"baseline {p}" for p in baseline_problems] + [f"candidate {p}" for p in candidate_problems]
    newly_failing = []
    for key in sorted(base.keys() & cand.keys(), key=lambda k: tuple(str(part) for part in k)):
        c = cand[key][-1]
        b, comparison = pick_baseline(base[key], c)
        for record in (b, c):
            machines.setdefault(str(machine_id(record)), machine_summary(record))
        runs.append({"run": _label(b), "comparison": comparison, "baseline_machine": str(machine_id(b)),
                     "candidate_machine": str(machine_id(c))})
        if b["status"] == "completed" and c["status"] != "completed":
            newly_failing.append(f"{_label(b)}: {c.get('error', c['status'])}")
            continue
        eps = (b.get("hyperparameters") or {}).get("eps")
        for metric in config.metrics:
            if not _holds(metric.only, b):
                continue
            bv, cv = field_value(b, metric.path), field_value(c, metric.path)
            optional = metric.optional is not None and _holds(metric.optional, b)
            verdict, delta = compare_metric(metric, bv, cv, optional, comparison, eps, config.rule(metric, b, comparison))
            regressions += verdict == "regressed"
            if verdict == "missing (optional)":
                optional_missing.add(metric.name)
            rows.append({"run": _label(b), "metric": metric.name, "comparison": comparison, "baseline": _show(bv),
                         "candidate": _show(cv), "delta": delta, "verdict": verdict})
    regressions += len(removed) + len(newly_failing) + len(unreadable)
    if not base.keys() & cand.keys():
        regressions += 1   # nothing comparable: a gate that compares nothing must not pass
    return {"passed": regressions == 0, "regressions": regressions, "compared_runs": len(base.keys() & cand.keys()),
            "runs": runs, "machines": machines, "rows": rows, "added": added, "removed": removed,
            "newly_failing": newly_failing, "unreadable": unreadable, "optional_missing": sorted(optional_missing)}


def to_markdown(result: dict) -> str:
    lines = [f"# Regression gate: {'PASSED' if result['passed'] else 'FAILED'}", "",
             f"{result['compared_runs']} run(s) compared, {result['regressions']} regression(s).", ""]
    comparisons = [run["comparison"] for run in result.get("runs", [])]
    if comparisons:
        lines += [f"{comparisons.count(SAME_MACHINE)} compared exactly against a baseline of the same machine, "
                  f"{comparisons.count(ACROSS_MACHINES)} with the measured cross-machine tolerances against a "
                  "baseline of another machine (benchmarks/gate.toml; timings are not compared across machines).", ""]
    if result.get("machines"):
        lines += ["## Machines", ""] + [f"- `{mid}`: {summary}" for mid, summary in sorted(result["machines"].items())] + [""]
    if result["compared_runs"] == 0:
        lines += ["No run of the candidate matches a baseline run (same protocol hash, data, device kind, "
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
    if result.get("runs"):
        lines += ["## Baseline per run", "", "| run | baseline machine | candidate machine | comparison |", "|---|---|---|---|"]
        lines += [f"| {run['run']} | `{run['baseline_machine']}` | `{run['candidate_machine']}` | {run['comparison']} |"
                  for run in result["runs"]] + [""]
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
