"""Seed-paired comparisons: the paper's qualitative claims ("MeZO beats zero-shot", "FT is at least as
good as MeZO", "MeZO (LoRA) learns about as well as MeZO") decided on runs by statistics.

A ledger (benchmarks/<task>/claims.toml) lists them as `[[comparison]]` entries beside its `[[claim]]`s
(claim and comparison ids are unique across ledgers together):

    [[comparison]]
    id = "standin-sst2-mezo-over-zero-shot-k512"
    source = "MeZO paper, Table 18"
    statement = "MeZO beats zero-shot prompting at k=512"
    paper_direction = "MeZO above zero-shot: 93.3 vs 79.0 on RoBERTa-large"
    task = "sst2"
    a = { variant = "hf-mlm", k = 512, metric = "test_accuracy" }
    b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }   # or { value = 1.0 }
    direction = "up"               # A - B > 0; "down": < 0; "within": |A - B| < margin
    margin = 3.0                   # only with "within", in the metric's unit
    equal_forward_passes = false   # true: each pair must have run the same steps at the same batch size
    conditions = { protocol_version = 3, model = "pretrained:bert-tiny-splade", profile = ["standin"] }
                                   # + hardware (any, cpu, cuda); profile: optional, the profiles that count

A side is a variant (and k) and a metric of SIDE_METRICS, or a constant `value`. The records that
count are completed or diverged runs of the comparison's task and protocol version on the named model
(exactly that id), grouped by setting: protocol name, version and profile, model, hardware class and
source data. In each setting each side needs a complete grid (every point of every seed run); its run
for a seed is the seed's best-dev grid point (selection.best_dev_per_seed, the reference's rule), so a
side reads the same run a Table 18 cell reads. Pairs are the seeds both sides have: the same k-shot
split per seed wherever both sides have the same k. The verdict (harness.core.stats.paired_verdict) is
computed from the differences A - B with a 95% Student t interval (n - 1 degrees of freedom): holds,
contradicted or inconclusive, with n, the mean difference and the interval; "not measured" where a
setting lacks a side, says which. A verdict reached on a stand-in or random-init model says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import check_keys, read_toml
from harness.core.stats import PairedVerdict, paired_verdict
from harness.protocol.settings import standin_scope
from harness.protocol.variants import VARIANTS
from harness.results.paper import PAPER_TASKS, shipped_protocol_name
from harness.results.selection import (
    RANDOM_INIT,
    best_dev_per_seed,
    data_identity,
    field_value,
    grid_points,
    hardware_class,
    missing_grid_points,
    selectable,
)

NOT_MEASURED = "not measured"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SideMetric:
    path: tuple[str, ...]      # the record field
    scale: float               # x this: the unit the margin and differences are in
    unit: str


SIDE_METRICS: dict[str, SideMetric] = {
    "test_accuracy": SideMetric(("metrics", "test_accuracy"), 100.0, "points"),
    "best_dev_accuracy": SideMetric(("metrics", "best_dev_accuracy"), 100.0, "points"),
    "zero_shot_test_accuracy": SideMetric(("metrics", "zero_shot_test_accuracy"), 100.0, "points"),
    "zero_gradient_percent": SideMetric(("sparsity", "zero_fraction"), 100.0, "% of steps"),
    "memory_peak_ratio_mezo_over_inference": SideMetric(("memory", "ratios", "mezo_over_inference"), 1.0, "x"),
    "memory_peak_ratio_first_order_over_mezo": SideMetric(("memory", "ratios", "first_order_over_mezo"), 1.0, "x"),
    "memory_excess_ratio_mezo_over_inference": SideMetric(("memory", "ratios", "excess_mezo_over_inference"), 1.0,
                                                          "x"),
    "memory_excess_ratio_first_order_over_mezo": SideMetric(("memory", "ratios", "excess_first_order_over_mezo"),
                                                            1.0, "x"),
}
DIRECTIONS = {"up": "A > B", "down": "A < B", "within": "abs(A - B) < margin"}   # no "|": a markdown cell
COMPARISON_KEYS = ("id", "source", "statement", "paper_direction", "task", "a", "b", "direction", "margin",
                   "equal_forward_passes", "conditions")
CONDITION_KEYS = ("protocol_version", "protocol_name", "model", "hardware", "profile")
SIDE_KEYS = ("variant", "k", "metric", "value")


@dataclass(frozen=True)
class Side:
    variant: str | None = None
    k: int | None = None
    metric: str | None = None
    value: float | None = None     # a constant side

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.value:g}"
        return f"{self.variant} k={self.k} {self.metric}"


@dataclass(frozen=True)
class Comparison:
    id: str
    source: str
    statement: str
    paper_direction: str        # what the paper shows, set beside the verdict
    task: str
    a: Side
    b: Side
    direction: str              # "up" | "down" | "within"
    margin: float | None = None
    equal_forward_passes: bool = False
    conditions: dict = field(default_factory=dict)
    ledger: str = ""


@dataclass(frozen=True)
class ComparisonVerdict:
    comparison: Comparison
    outcome: str                # holds | contradicted | inconclusive | not measured
    setting: str                # the setting the pairs came from ("" when none)
    paired: PairedVerdict | None
    detail: str                 # the pairs, or what is missing
    scope: str = ""             # the model it rests on, where not the paper's

    @property
    def verdict(self) -> str:
        return f"{self.outcome} {self.scope}" if self.scope and self.outcome != NOT_MEASURED else self.outcome

    def as_dict(self) -> dict:
        c, p = self.comparison, self.paired
        return {"kind": "comparison", "id": c.id, "task": c.task, "source": c.source, "statement": c.statement,
                "paper_direction": c.paper_direction, "a": c.a.describe(), "b": c.b.describe(),
                "direction": c.direction, "margin": c.margin, "conditions": c.conditions, "setting": self.setting,
                "verdict": self.verdict, "outcome": self.outcome, "scope": self.scope,
                "n": p.n if p else None, "mean_difference": p.mean_difference if p else None,
                "interval": [p.low, p.high] if p and p.low is not None else None,
                "confidence": CONFIDENCE, "test": p.test if p else None, "detail": self.detail, "ledger": c.ledger}


def _side(entry, where: str) -> Side:
    if not isinstance(entry, dict):
        raise HarnessError(f"{where}: must be a table (variant, k, metric) or {{ value = <number> }}")
    check_keys(entry, SIDE_KEYS, where)
    if "value" in entry:
        if set(entry) != {"value"}:
            raise HarnessError(f"{where}: a constant side has only 'value'")
        if isinstance(entry["value"], bool) or not isinstance(entry["value"], (int, float)) \
                or not math.isfinite(entry["value"]):
            raise HarnessError(f"{where}: field 'value' must be a finite number, got {entry['value']!r}")
        return Side(value=float(entry["value"]))
    for key in ("variant", "k", "metric"):
        if key not in entry:
            raise HarnessError(f"{where}: missing key {key!r}")
    if entry["variant"] not in VARIANTS:
        raise HarnessError(f"{where}: field 'variant' must be a registered variant (harness/protocol/variants.toml), "
                           f"got {entry['variant']!r}")
    if entry["metric"] not in SIDE_METRICS:
        raise HarnessError(f"{where}: field 'metric' must be one of {sorted(SIDE_METRICS)}, got {entry['metric']!r}")
    if isinstance(entry["k"], bool) or not isinstance(entry["k"], int) or entry["k"] < 1:
        raise HarnessError(f"{where}: field 'k' must be an integer >= 1, got {entry['k']!r}")
    return Side(variant=str(entry["variant"]), k=entry["k"], metric=entry["metric"])


def check_ledger_entry(entry, kind: str, index: int, allowed: tuple[str, ...], required: tuple[str, ...],
                       seen: set) -> str:
    """The checks every ledger entry ([[claim]], [[comparison]]) shares: a table, known keys, the required
    ones present, an id not seen before in its file (added to `seen`), a known task. Returns the entry's
    name for messages ("<file> claim '<id>'")."""
    if not isinstance(entry, dict):
        raise HarnessError(f"{kind} #{index}: must be a table ([[{kind.rsplit(' ', 1)[-1]}]])")
    where = f"{kind} {entry.get('id', f'#{index}')!r}"
    check_keys(entry, allowed, where)
    for key in required:
        if key not in entry:
            raise HarnessError(f"{where}: missing key {key!r}")
    if entry["id"] in seen:
        raise HarnessError(f"{where}: duplicate id")
    seen.add(entry["id"])
    if entry["task"] not in PAPER_TASKS:
        raise HarnessError(f"{where}: field 'task' must be one of {', '.join(PAPER_TASKS)}, got {entry['task']!r}")
    return where


def load_comparisons(path: str | Path) -> list[Comparison]:
    """One ledger's `[[comparison]]` entries, checked (a bad field is an error naming it)."""
    path = Path(path)
    out, seen = [], set()
    entries = read_toml(path, "claims file").get("comparison", [])
    if not isinstance(entries, list):
        raise HarnessError(f"{path}: 'comparison' must be an array of tables ([[comparison]])")
    for index, entry in enumerate(entries, start=1):
        where = check_ledger_entry(entry, f"{path} comparison", index, COMPARISON_KEYS,
                                   ("id", "source", "statement", "paper_direction", "task", "a", "b", "direction",
                                    "conditions"), seen)
        if entry["direction"] not in DIRECTIONS:
            raise HarnessError(f"{where}: field 'direction' must be one of {', '.join(DIRECTIONS)}, "
                               f"got {entry['direction']!r}")
        margin = entry.get("margin")
        if (entry["direction"] == "within") != (margin is not None):
            raise HarnessError(f"{where}: field 'margin' is required with direction 'within' and only then")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not math.isfinite(margin) or margin <= 0):
            raise HarnessError(f"{where}: field 'margin' must be a number > 0, got {margin!r}")
        a, b = _side(entry["a"], f"{where} field 'a'"), _side(entry["b"], f"{where} field 'b'")
        if a.value is not None:
            raise HarnessError(f"{where}: field 'a' must name runs (variant, k, metric); only 'b' may be a constant")
        if not isinstance(entry.get("equal_forward_passes", False), bool):
            raise HarnessError(f"{where}: field 'equal_forward_passes' must be true or false")
        if entry.get("equal_forward_passes") and b.value is not None:
            raise HarnessError(f"{where}: field 'equal_forward_passes' needs runs on both sides, 'b' is a constant")
        conditions = entry["conditions"]
        if not isinstance(conditions, dict):
            raise HarnessError(f"{where}: field 'conditions' must be a table")
        check_keys(conditions, CONDITION_KEYS, f"{where} conditions")
        for key in ("protocol_version", "model"):
            if key not in conditions:
                raise HarnessError(f"{where} conditions: missing key {key!r} (a comparison is about one protocol "
                                   f"version on one model)")
        if isinstance(conditions["protocol_version"], bool) or not isinstance(conditions["protocol_version"], int):
            raise HarnessError(f"{where} conditions: 'protocol_version' must be an integer, "
                               f"got {conditions['protocol_version']!r}")
        if not isinstance(conditions["model"], str):
            raise HarnessError(f"{where} conditions: 'model' must be a model id, got {conditions['model']!r}")
        if conditions.get("hardware", "any") not in ("any", "cpu", "cuda"):
            raise HarnessError(f"{where} conditions: 'hardware' must be any, cpu or cuda")
        if "profile" in conditions:
            profiles = conditions["profile"]
            if not (isinstance(profiles, list) and profiles and all(isinstance(x, str) for x in profiles)):
                raise HarnessError(f"{where} conditions: 'profile' must be a list of profile names, got {profiles!r}")
        out.append(Comparison(id=entry["id"], source=entry["source"], statement=entry["statement"],
                              paper_direction=entry["paper_direction"], task=entry["task"], a=a, b=b,
                              direction=entry["direction"], margin=None if margin is None else float(margin),
                              equal_forward_passes=entry.get("equal_forward_passes", False),
                              conditions=dict(conditions), ledger=str(path)))
    return out


def _setting_key(record: dict) -> tuple:
    p = record["protocol"]
    return (p["name"], p["version"], p["profile"], record["model"]["id"], hardware_class(record),
            data_identity(record))


def _setting_text(key: tuple) -> str:
    name, version, profile, model, hardware, data = key
    short = ",".join(part.split(":")[0] + ":" + part.split(":")[1][:8] for part in data.split(","))
    return f"{name} v{version}, profile {profile}, {model}, {hardware}, data {short}"


def _matches(record: dict, c: Comparison) -> bool:
    cond = c.conditions
    p = record["protocol"]
    return (record["task"] == c.task and p["version"] == cond["protocol_version"]
            and p["name"] == cond.get("protocol_name", shipped_protocol_name(c.task))
            and record["model"]["id"] == cond["model"]
            and cond.get("hardware", "any") in ("any", hardware_class(record).split(":")[0])
            and p["profile"] in cond.get("profile", [p["profile"]]))


def _side_runs(side: Side, records: list[dict]) -> tuple[dict[int, dict] | None, str]:
    """{seed: the seed's best-dev run} of the side's complete grid in one setting, or None and why not."""
    runs = [r for r in records if r["variant"]["name"] == side.variant and r["k"] == side.k]
    if not runs:
        return None, f"no run of {side.variant} k={side.k}"
    hashes = sorted({r["protocol"]["hash"] for r in runs})
    if len(hashes) > 1:   # one protocol hash per (profile, variant): check_identities refuses it earlier
        return None, f"{side.variant} k={side.k} has runs of {len(hashes)} protocol hashes"
    absent = missing_grid_points(runs)
    grid = runs[0]["protocol"].get("grid")
    if absent is None:
        return None, f"the runs of {side.variant} k={side.k} do not say their grid (older schema)"
    if absent:
        return None, (f"{side.variant} k={side.k}: {len(absent)} of {len(grid_points(grid))} grid points not run "
                      f"(e.g. seed {absent[0][0]} lr {absent[0][1]:g})")
    selected = {r["seed"]: r for r in best_dev_per_seed(runs)}
    unevaluated = [seed for seed in grid["seeds"] if seed not in selected]
    if unevaluated:   # every run of the seed diverged before its first evaluation: never dropped silently
        return None, (f"{side.variant} k={side.k}: seed(s) {', '.join(map(str, unevaluated))} have no evaluated run "
                      f"(every grid point diverged before its first dev evaluation)")
    return selected, ""


def _value(side: Side, run: dict | None) -> float | None:
    if side.value is not None:
        return side.value
    metric = SIDE_METRICS[side.metric]
    value = field_value(run, metric.path)
    return None if value is None else metric.scale * value


def _scope(model_id: str) -> str:
    if model_id.startswith(RANDOM_INIT):
        return f"on a random-init model ({model_id}), not a pretrained checkpoint"
    return standin_scope(model_id) or ""


def _judge_setting(c: Comparison, key: tuple, records: list[dict]) -> ComparisonVerdict:
    setting, scope = _setting_text(key), _scope(key[3])
    sides = {}
    for name, side in (("a", c.a), ("b", c.b)):
        if side.value is None:
            runs, why = _side_runs(side, records)
            if runs is None:
                return ComparisonVerdict(c, NOT_MEASURED, setting, None, f"side {name.upper()}: {why}", scope)
            sides[name] = runs
    seeds_a, seeds_b = set(sides["a"]), set(sides.get("b", sides["a"]))
    seeds, one_side = sorted(seeds_a & seeds_b), sorted(seeds_a ^ seeds_b)
    pairs, lacking, unequal = [], [], []
    for seed in seeds:
        run_a, run_b = sides["a"][seed], sides.get("b", {}).get(seed)
        a, b = _value(c.a, run_a), _value(c.b, run_b)
        if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
            lacking.append(seed)
            continue
        if c.equal_forward_passes and run_b is not None and _passes(run_a) != _passes(run_b):
            unequal.append(f"seed {seed}: {_passes(run_a)} vs {_passes(run_b)}")
            continue
        pairs.append((seed, a, b))
    if unequal:
        return ComparisonVerdict(c, NOT_MEASURED, setting, None,
                                 "the sides did not run the same forward passes (steps x batch): " + "; ".join(unequal),
                                 scope)
    if lacking:   # a seed without the measurement (e.g. a --no-memory run): never dropped silently
        return ComparisonVerdict(c, NOT_MEASURED, setting, None,
                                 f"seed(s) {', '.join(map(str, lacking))} lack a finite value of {c.a.describe()} or "
                                 f"{c.b.describe()}", scope)
    if len(pairs) < 2:
        return ComparisonVerdict(c, NOT_MEASURED, setting, None,
                                 f"needs 2 or more seed pairs: {len(pairs)} seed(s) on both sides", scope)
    paired = paired_verdict([a - b for _, a, b in pairs], c.direction, CONFIDENCE, c.margin)
    listed = "; ".join(f"seed {seed}: {a:.4g} - {b:.4g}" for seed, a, b in pairs)
    detail = f"A = {c.a.describe()}, B = {c.b.describe()}; {listed}"
    if one_side:
        detail += f"; seeds on one side only: {', '.join(map(str, one_side))}"
    return ComparisonVerdict(c, paired.verdict, setting, paired, detail, scope)


def _passes(run: dict) -> tuple[int, int]:
    return run["hyperparameters"]["steps"], run["hyperparameters"]["batch_size"]


def judge_comparison(c: Comparison, records: list[dict]) -> list[ComparisonVerdict]:
    """A verdict per setting holding runs of either side; one "not measured" verdict when none does."""
    groups: dict[tuple, list[dict]] = {}
    variants = {side.variant for side in (c.a, c.b) if side.value is None}
    for record in selectable(records):
        if _matches(record, c) and record["variant"]["name"] in variants:
            groups.setdefault(_setting_key(record), []).append(record)
    if not groups:
        cond = c.conditions
        return [ComparisonVerdict(c, NOT_MEASURED, "", None,
                                  f"no completed runs of {' or '.join(sorted(variants))} on task {c.task}, protocol "
                                  f"{cond.get('protocol_name', shipped_protocol_name(c.task))} "
                                  f"v{cond['protocol_version']}, model {cond['model']}"
                                  + (f", profile {' or '.join(cond['profile'])}" if "profile" in cond else "")
                                  + (f", hardware {cond['hardware']}" if "hardware" in cond else ""),
                                  _scope(cond["model"]))]
    return [_judge_setting(c, key, groups[key]) for key in sorted(groups, key=lambda k: tuple(map(str, k)))]


def judge_comparisons(comparisons: list[Comparison], records: list[dict]) -> list[ComparisonVerdict]:
    return [verdict for c in comparisons for verdict in judge_comparison(c, records)]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3g}"


def to_markdown(verdicts: list[ComparisonVerdict]) -> str:
    """The comparisons' section of claims.md."""
    lines = ["## Comparisons, seed-paired", "",
             "Each verdict is computed from the seed-paired differences A - B (the same k-shot split per seed; "
             "each side's run for a seed is its best-dev grid point): a 95% Student t interval of the mean "
             "difference with n - 1 degrees of freedom. *holds*: the interval excludes 0 in the claimed direction "
             "(for \"within\", it lies inside ± margin); *contradicted*: it excludes 0 the other way (lies wholly "
             "outside ± margin); *inconclusive*: neither. A \"within\" verdict that holds is a two one-sided test "
             "at 2.5% each side (stricter than the usual 90% interval); with 3 seeds (t = 4.30 at 2 degrees of "
             "freedom) it needs the differences' standard deviation below about margin / 2.5. The paper's direction "
             "is what the paper shows on its model; the verdict is ours, on the model its setting names.", "",
             "| comparison | task | claimed | paper's direction | setting | verdict | n | mean A - B | 95% interval "
             "| pairs, or what is missing |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        c, p = v.comparison, v.paired
        claimed = DIRECTIONS[c.direction] + (f" (margin {c.margin:g})" if c.margin is not None else "")
        interval = f"[{p.low:+.3g}, {p.high:+.3g}]" if p and p.low is not None else "-"
        lines.append(f"| {c.id}: {c.statement} | {c.task} | {claimed} | {c.paper_direction} | {v.setting or '-'} | "
                     f"{v.verdict} | {p.n if p else '-'} | {_number(p.mean_difference if p else None)} | {interval} | "
                     f"{v.detail} |")
    return "\n".join(lines) + "\n"


def summary_line(verdict: ComparisonVerdict) -> str:
    """One verdict for the terminal: a line, and for a decided one a second line with its pairs."""
    p = verdict.paired
    evidence = p.describe() if p else f"{verdict.outcome}: {verdict.detail}"
    scope = f" {verdict.scope}" if verdict.scope and p else ""
    where = f" [{verdict.setting}]" if verdict.setting else ""
    line = f"{verdict.comparison.id:<44} {evidence}{scope}{where}"
    return line + (f"\n{'':<44} {verdict.detail}" if p else "")
