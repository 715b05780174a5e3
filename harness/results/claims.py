"""The claims ledgers: published and claimed numbers, and verdicts computed from records.

Each task has its ledger, benchmarks/<task>/claims.toml; claim ids are unique across ledgers
(load_ledgers). A claim names its task, a metric, the variant (and k) it is about, an expected
value with a tolerance, and conditions a record must meet to count (protocol version or hash,
model, hardware, profile, steps, seeds). Only records of the claim's task count, and a protocol
version is one of `protocol_name` (default: the task's shipped protocol, `<task>-mezo`). Only complete grids count: every grid
point of every seed (the record's `protocol.grid`) has a completed or diverged run. Verdicts
are computed, never typed: reproduced, refuted, or not measured with what is missing; one
reached on a random-init model says so. A test-accuracy claim selects over a grid (best dev per
seed), so the records that count must resolve to one grid (one protocol hash): such a claim
names a profile.
Grids are grouped by protocol hash, source data (data.source_sha256) and k, never by name and
version; no verdict rests on runs of more than one source data, and records whose protocol names
and hashes disagree are refused (harness.results.selection.check_identities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_keys, read_toml
from harness.core.stats import mean
from harness.protocol.settings import standin_scope
from harness.results.comparisons import Comparison, ComparisonVerdict, check_ledger_entry, load_comparisons
from harness.results.comparisons import to_markdown as comparisons_markdown
from harness.results.paper import shipped_protocol_name
from harness.results.selection import (
    RANDOM_INIT,
    best_dev_per_seed,
    check_identities,
    data_identity,
    field_value,
    grid_points,
    hardware_class,
    missing_grid_points,
    model_matches,
    selectable,
)


def _field(records: list[dict], *path: str) -> list[float]:
    """The field from every record that has it (older schemas may lack a measurement)."""
    return [value for value in (field_value(record, path) for record in records) if value is not None]


def _test_accuracy(records):
    selected = best_dev_per_seed(records)
    if not selected:
        return None, "no run of the grid reached a dev evaluation"
    return (100 * mean([r["metrics"]["test_accuracy"] for r in selected]),
            f"best dev of each of {len(selected)} seed(s) (the reference's gather_result.py rule)")


def _per_run(path: tuple[str, ...], scale: float = 1.0, offset: float = 0.0):
    def metric(records):
        values = _field(records, *path)
        if not values:
            return None, f"no matching record has {'.'.join(path)}"
        return offset + scale * mean(values), f"mean of {len(values)} run(s) with {'.'.join(path)}"
    return metric


def _radix_memory_saved(records):
    """Memory saved by SGLang's prefix cache: needs a MeZO step that ran with it on."""
    value, detail = _per_run(("radix", "memory_saved_fraction"), 100.0)(records)
    if value is None:
        failures = sorted({f"{on['error']} at {on['raised_at']}" for on in
                           (field_value(r, ("radix", "prefix_cache", "on")) for r in records) if on and "error" in on})
        if failures:
            detail = f"with SGLang's prefix cache on, the MeZO step fails ({'; '.join(failures)}): nothing to compare"
    return value, detail


# metric name -> function(records) -> (value or None, detail)
METRICS = {
    "test_accuracy": _test_accuracy,
    "zero_shot_test_accuracy": _per_run(("metrics", "zero_shot_test_accuracy"), 100.0),
    "zero_gradient_percent": _per_run(("sparsity", "zero_fraction"), 100.0),
    "nonzero_gradient_percent": _per_run(("sparsity", "zero_fraction"), -100.0, 100.0),
    "memory_excess_ratio_mezo_over_inference": _per_run(("memory", "ratios", "excess_mezo_over_inference")),
    "memory_peak_ratio_mezo_over_inference": _per_run(("memory", "ratios", "mezo_over_inference")),
    "steps_per_second": _per_run(("throughput", "steps_per_second")),
    "radix_prefix_hit_percent": _per_run(("radix", "prefix_hit_rate"), 100.0),
    "radix_token_reuse_percent": _per_run(("radix", "token_reuse_rate"), 100.0),
    "radix_memory_saved_percent": _radix_memory_saved,
}
SELECTION_METRICS = ("test_accuracy",)   # computed by selecting over a grid: one grid only
CONDITION_KEYS = ("protocol_version", "protocol_name", "protocol_hash", "model", "hardware", "profile", "steps",
                  "min_seeds")
CLAIM_KEYS = ("id", "source", "statement", "task", "metric", "variant", "k", "expected", "paper", "tolerance",
              "conditions")


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    task: str                   # only records of this task count (harness/tasks/spec.py TASKS)
    metric: str
    variant: str
    expected: float
    tolerance: float
    k: int | None = None
    conditions: dict = field(default_factory=dict)
    ledger: str = ""            # the claims file it came from


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    outcome: str                # "reproduced" | "refuted" | "not measured"
    measured: float | None
    detail: str                 # evidence used, or what is missing
    scope: str = ""             # "" (pretrained checkpoints) or the random-init models it rests on

    @property
    def verdict(self) -> str:
        """The outcome, saying so when it was reached on a random-init model."""
        return f"{self.outcome} {self.scope}" if self.scope else self.outcome

    def as_dict(self) -> dict:
        c = self.claim
        return {"id": c.id, "task": c.task, "source": c.source, "statement": c.statement, "metric": c.metric,
                "variant": c.variant, "k": c.k, "expected": c.expected, "tolerance": c.tolerance, "conditions": c.conditions,
                "measured": self.measured, "verdict": self.verdict, "outcome": self.outcome, "scope": self.scope,
                "detail": self.detail, "ledger": c.ledger}


def load_claims(path: str | Path, paper: dict[str, dict]) -> list[Claim]:
    """One ledger's claims; `paper`: load_paper's results (a claim's `paper = "<id>"` must name
    one of its own task)."""
    path = Path(path)
    claims, seen = [], set()
    for index, entry in enumerate(read_toml(path, "claims file").get("claim", []), start=1):
        where = check_ledger_entry(entry, f"{path} claim", index, CLAIM_KEYS,
                                   ("id", "source", "statement", "task", "metric", "variant", "tolerance"), seen)
        if entry["metric"] not in METRICS:
            raise HarnessError(f"{where}: field 'metric' must be one of {sorted(METRICS)}, got {entry['metric']!r}")
        if ("expected" in entry) == ("paper" in entry):
            raise HarnessError(f"{where}: give exactly one of 'expected' or 'paper'")
        if "paper" in entry:
            if entry["paper"] not in paper:
                raise HarnessError(f"{where}: field 'paper' names no result in the paper file: {entry['paper']!r}")
            if paper[entry["paper"]]["task"] != entry["task"]:
                raise HarnessError(f"{where}: field 'paper' names a result of task {paper[entry['paper']]['task']!r}, "
                                   f"not of the claim's task {entry['task']!r}")
            expected = paper[entry["paper"]]["mean"]
        else:
            expected = entry["expected"]
        if not isinstance(entry["tolerance"], (int, float)) or entry["tolerance"] < 0:
            raise HarnessError(f"{where}: field 'tolerance' must be a number >= 0, got {entry['tolerance']!r}")
        conditions = entry.get("conditions", {})
        check_keys(conditions, CONDITION_KEYS, f"{where} conditions")
        if ("protocol_version" in conditions) == ("protocol_hash" in conditions):
            raise HarnessError(f"{where}: conditions need exactly one of 'protocol_version' or 'protocol_hash' "
                               f"(a verdict counts only the records of the protocol it names)")
        if conditions.get("hardware", "any") not in ("any", "cpu", "cuda"):
            raise HarnessError(f"{where}: condition 'hardware' must be any, cpu or cuda")
        claims.append(Claim(id=entry["id"], source=entry["source"], statement=entry["statement"], task=entry["task"],
                            metric=entry["metric"], variant=entry["variant"], expected=float(expected),
                            tolerance=float(entry["tolerance"]), k=entry.get("k"), conditions=dict(conditions),
                            ledger=str(path)))
    return claims


def load_ledgers(paths: list[str | Path], paper: dict[str, dict]) -> list[Claim]:
    """The claims of every ledger, in the order given; a claim id in two ledgers (or a ledger
    given twice) is an error naming both files."""
    return load_all_ledgers(paths, paper)[0]


def load_all_ledgers(paths: list[str | Path], paper: dict[str, dict]) -> tuple[list[Claim], list[Comparison]]:
    """The claims and the seed-paired comparisons (harness.results.comparisons) of every ledger, in the
    order given; an id (claim or comparison) in two places is an error naming both."""
    if not paths:
        raise HarnessError("no claims ledger to read")
    claims: list[Claim] = []
    comparisons: list[Comparison] = []
    first: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        for entry in load_claims(path, paper) + load_comparisons(path):
            if entry.id in first:
                raise HarnessError(f"claim id {entry.id!r} is in both {first[entry.id]} and {path}; "
                                   f"claim and comparison ids must be unique across ledgers")
            first[entry.id] = path
            (claims if isinstance(entry, Claim) else comparisons).append(entry)
    return claims, comparisons


def _model_ok(record: dict, wanted: str) -> bool:
    return wanted == "any" or model_matches(record["model"]["id"], wanted)


def _hardware_ok(record: dict, wanted: str) -> bool:
    return wanted == "any" or hardware_class(record).split(":")[0] == wanted


def protocol_name_of(claim: Claim) -> str:
    """The protocol a `protocol_version` condition is a version of: `protocol_name`, by default the
    task's shipped one (`<task>-mezo`), so renamed copies (other identities) never count."""
    return claim.conditions.get("protocol_name", shipped_protocol_name(claim.task))


def _protocol_ok(record: dict, claim: Claim) -> bool:
    protocol, conditions = record["protocol"], claim.conditions
    if "protocol_hash" in conditions:
        return protocol["hash"] == conditions["protocol_hash"]
    return protocol["version"] == conditions["protocol_version"] and protocol["name"] == protocol_name_of(claim)


def _describe(records: list[dict]) -> str:
    kinds = sorted({f"{r['model']['id']} / profile {r['protocol']['profile']} / v{r['protocol']['version']} / "
                    f"{hardware_class(r)}" for r in records})
    return "; ".join(kinds)


def _complete_groups(records: list[dict]) -> tuple[list[list[dict]], list[str]]:
    """Records grouped by (protocol hash, source data, k); only groups in which every grid point
    of every seed has a completed or diverged run count. Returns (complete groups, what the others miss)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["protocol"]["hash"], data_identity(record), record["k"]), []).append(record)
    complete, missing = [], []
    for (digest, _, k), group in groups.items():
        where = (f"profile {group[0]['protocol']['profile']} k={k} (protocol {digest[:8]}, "
                 f"data {data_identity(group[0], 8)})")
        absent = missing_grid_points(group)
        if absent is None:
            missing.append(f"{where}: its records do not say their grid (older schema)")
        elif absent:
            seed, lr, batch, eps, wd = absent[0]
            missing.append(f"{where}: {len(absent)} of {len(grid_points(group[0]['protocol']['grid']))} grid points "
                           f"have no completed or diverged run (e.g. seed {seed} lr {lr:g} batch {batch} eps {eps:g} "
                           f"wd {wd:g})")
        else:
            complete.append(group)
    return complete, missing


def _scope(records: list[dict]) -> str:
    """'' for the paper's kind of checkpoints; else which random-init models and pretrained stand-ins
    (harness.backends.standins) the verdict rests on."""
    models = {r["model"]["id"] for r in records}
    random_init = sorted(m for m in models if m.startswith(RANDOM_INIT))
    standins = sorted(m for m in models if standin_scope(m))
    parts = ([f"on a random-init model ({', '.join(random_init)}), not a pretrained checkpoint"] if random_init else []) \
        + [f"{standin_scope(m)} ({m})" for m in standins]
    return "; ".join(parts)


def judge(claim: Claim, records: list[dict]) -> Verdict:
    conditions = claim.conditions
    any_task = [r for r in selectable(records)
                if r["variant"]["name"] == claim.variant and (claim.k is None or r["k"] == claim.k)]
    of_variant = [r for r in any_task if r["task"] == claim.task]   # only the claim's task counts
    target = f"task {claim.task} variant {claim.variant}" + (f" k={claim.k}" if claim.k is not None else "")
    if not of_variant:
        others = sorted({r["task"] for r in any_task})
        return Verdict(claim, "not measured", None, f"no completed records of {target}"
                       + (f" (only of other tasks: {', '.join(others)})" if others else ""))
    version = (f"protocol hash {conditions['protocol_hash'][:8]}" if "protocol_hash" in conditions
               else f"protocol {protocol_name_of(claim)} v{conditions['protocol_version']}")
    needs = [version]
    matching = [r for r in of_variant if _protocol_ok(r, claim)]
    if "model" in conditions:
        matching = [r for r in matching if _model_ok(r, conditions["model"])]
        needs.append(f"model {conditions['model']}" + ("" if conditions["model"] == "any" else " (pretrained)"))
    if "hardware" in conditions:
        matching = [r for r in matching if _hardware_ok(r, conditions["hardware"])]
        needs.append(f"hardware {conditions['hardware']}")
    if "profile" in conditions:
        matching = [r for r in matching if r["protocol"]["profile"] == conditions["profile"]]
        needs.append(f"profile {conditions['profile']}")
    if "steps" in conditions:
        matching = [r for r in matching if r["hyperparameters"]["steps"] == conditions["steps"]]
        needs.append(f"{conditions['steps']} steps")
    if not matching:
        return Verdict(claim, "not measured", None,
                       f"needs {', '.join(needs)}; records of {target} are only: {_describe(of_variant)}")
    groups, missing = _complete_groups(matching)
    if not groups:
        return Verdict(claim, "not measured", None, "no complete grid: " + "; ".join(missing))
    data = sorted({data_identity(g[0], 8) for g in groups})
    if len(data) > 1:
        return Verdict(claim, "not measured", None,
                       f"complete grids of several source data match (data.source_sha256: {'; '.join(data)}); "
                       f"a verdict rests on one data set: keep the records of one under --results")
    if claim.metric in SELECTION_METRICS and len({g[0]["protocol"]["hash"] for g in groups}) > 1:
        return Verdict(claim, "not measured", None,
                       f"complete grids of several protocol hashes match ({_describe([g[0] for g in groups])}); "
                       f"name a profile or protocol_hash so one grid is selected from")
    matching = [r for group in groups for r in group]
    seeds = {r["seed"] for r in matching}
    if len(seeds) < conditions.get("min_seeds", 1):
        return Verdict(claim, "not measured", None,
                       f"needs {conditions['min_seeds']} seeds, the complete grids have {len(seeds)}")
    value, detail = METRICS[claim.metric](matching)
    if value is None:
        return Verdict(claim, "not measured", None, detail)
    outcome = "reproduced" if abs(value - claim.expected) <= claim.tolerance else "refuted"
    return Verdict(claim, outcome, value, f"{detail}; {_describe(matching)}", scope=_scope(matching))


def judge_all(claims: list[Claim], records: list[dict]) -> list[Verdict]:
    """Every claim's verdict; records whose names and hashes disagree are refused first."""
    check_identities(records)
    return [judge(claim, records) for claim in claims]


def to_markdown(verdicts: list[Verdict], comparisons: list[ComparisonVerdict] = ()) -> str:
    """claims.md: one table row per claim, then the seed-paired comparisons' section."""
    ledgers = ", ".join(dict.fromkeys(v.claim.ledger for v in verdicts if v.claim.ledger)) or "the claims ledgers"
    lines = ["# Claims ledger", "", f"Verdicts computed by `mezo-bench claims` from the run records; see {ledgers}. "
             "Only records of a claim's task count.", "",
             "| claim | task | source | verdict | measured | expected ± tolerance | evidence or what is missing |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.claim.id}: {v.claim.statement} | {v.claim.task} | {v.claim.source} | {v.verdict} | "
                     f"{_measured(v)} | {v.claim.expected:g} ± {v.claim.tolerance:g} | {v.detail} |")
    text = "\n".join(lines) + "\n"
    return text + "\n" + comparisons_markdown(comparisons) if comparisons else text


def _measured(verdict: Verdict) -> str:
    return "-" if verdict.measured is None else f"{verdict.measured:.4g}"


def summary_line(verdict: Verdict) -> str:
    """One verdict on one line, for the terminal."""
    claim = verdict.claim
    return (f"{claim.id:<34} {verdict.verdict:<13} measured {_measured(verdict):>8}  expected {claim.expected:g} ± "
            f"{claim.tolerance:g}  ({verdict.detail})")


def write_claims(verdicts: list[Verdict], out_dir: Path, comparisons: list[ComparisonVerdict] = ()) -> list[Path]:
    """claims.md and claims.json (the claims' verdicts, then the comparisons') in out_dir (each written
    atomically); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [{"kind": "claim", **v.as_dict()} for v in verdicts] + [v.as_dict() for v in comparisons]
    return [atomic_write_text(out_dir / "claims.md", to_markdown(verdicts, comparisons)),
            atomic_write_text(out_dir / "claims.json", json.dumps(entries, indent=1) + "\n")]
