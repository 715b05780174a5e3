"""The paper's published numbers (benchmarks/paper.toml), the layout of its RoBERTa-large table
(Table 18: the tasks and methods in the paper's order, and the variants of this suite measuring
each method), and which settings are comparable with the paper.

load_paper validates the file: every result has an id (unique across tasks), a task of
PAPER_TASKS, a method, a metric of PAPER_METRICS, a mean and a source; k, std, steps and
batch_size are optional numbers. The variants measuring a result are its method's in METHODS
(the one copy of that mapping); a result of another method (Tables 5 and 12) names its own
`variant` (one name or a list), and a result of a METHODS method must not. A HarnessError names
the result's id and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import check_keys, read_toml
from harness.protocol.settings import standin_scope
from harness.protocol.variants import VARIANTS
from harness.results.selection import RANDOM_INIT, model_matches

# Table 18's columns, in the paper's order: task name (harness/tasks/spec.py TASKS) -> the paper's label
PAPER_TASKS = {"sst2": "SST-2", "sst5": "SST-5", "snli": "SNLI", "mnli": "MNLI", "rte": "RTE", "trec": "TREC"}
TABLE18_K = (16, 512)        # Table 18's two training-set sizes (examples per label)
ZERO_SHOT = "zero-shot"      # the method whose metric is zero_shot_accuracy (no training set, so no k)
PAPER_PROFILE = "paper"      # the profile of every task's protocol holding the published grid


@dataclass(frozen=True)
class Method:
    name: str                    # the paper's row label
    source: str                  # the paper's table
    variants: tuple[str, ...]    # this suite's variants measuring it (harness/protocol/variants.toml)


# The report's Table 18 rows in the paper's order: Table 18's methods, then Table 19's LP-then-MeZO and
# Table 3's accuracy objective. benchmarks/paper.toml holds the published numbers of zero-shot, LP,
# MeZO, MeZO (LoRA), MeZO (prefix), FT, FT (LoRA) and the accuracy objective; none is recorded for
# MeZO-Adam, FT (prefix) or LP-then-MeZO (the report says so). Zero-shot has two sources: hf-zero-shot
# (trains nothing) and the test accuracy hf-mlm runs record before training; both must agree.
# MeZO (LoRA): both readings of the reference's loralib (harness/protocol/variants.py).
METHODS = (
    Method(ZERO_SHOT, "Table 18", ("hf-zero-shot", "hf-mlm")),
    Method("LP", "Table 18", ("hf-lp",)),
    Method("MeZO", "Table 18", ("hf-mlm",)),
    Method("MeZO (LoRA)", "Table 18", ("hf-mlm-lora-ref", "hf-mlm-lora-ref-merged")),
    Method("MeZO (prefix)", "Table 18", ("hf-mlm-prefix",)),
    Method("MeZO-Adam", "Table 18", ("hf-mlm-adam",)),
    Method("FT", "Table 18", ("hf-ft",)),
    Method("FT (LoRA)", "Table 18", ("hf-ft-lora",)),
    Method("FT (prefix)", "Table 18", ("hf-ft-prefix",)),
    Method("LP-then-MeZO", "Table 19", ("hf-lp-mezo",)),
    Method("MeZO (accuracy objective)", "Table 3", ("hf-mlm-acc",)),
)
METHOD_VARIANTS = {method.name: method.variants for method in METHODS}
PAPER_METRICS = ("test_accuracy", "zero_shot_accuracy", "memory_excess_mb_inference", "memory_excess_mb_mezo",
                 "memory_excess_mb_first_order")
TOP_KEYS = ("citation", "model", "result")
PAPER_KEYS = ("id", "task", "method", "variant", "k", "metric", "mean", "std", "source", "steps", "batch_size")
REQUIRED_KEYS = ("id", "task", "method", "metric", "mean", "source")


def shipped_protocol_name(task: str) -> str:
    """The name of a task's shipped protocol (benchmarks/<task>/protocol.toml); a renamed copy is
    another protocol, whose settings may differ from the published ones."""
    return f"{task}-mezo"


def method_of(variant: str) -> Method | None:
    """The METHODS method a variant measures (hf-mlm: MeZO; its zero-shot accuracy is a second
    source), or None."""
    methods = [m for m in METHODS if variant in m.variants]
    return next((m for m in methods if m.name != ZERO_SHOT), methods[0] if methods else None)


@dataclass(frozen=True)
class Setting:
    """Where runs were made: profile, model and hardware; comparable with the paper only on the
    paper's profile and pretrained model (random-init models are pipeline checks)."""
    profile: str
    model: str
    hardware: str
    comparable: bool
    caveat: str             # why not comparable; "" where comparable
    papers_model: bool = True   # the paper's pretrained model: its numbers may be shown beside ours (else ours only)

    @property
    def title(self) -> str:
        return f"profile {self.profile} · model {self.model} · hardware {self.hardware}"

    @property
    def order(self) -> tuple:
        """The paper's setting first, then other pretrained settings, then random-init ones."""
        return (not self.comparable, self.model.startswith(RANDOM_INIT), self.profile, self.model, self.hardware)


NOT_COMPARABLE_MARK = "†"


def setting_of(group: dict, paper: dict[str, dict]) -> Setting:
    """The Setting of a summary row (or any dict with profile, model and hardware)."""
    profile, model, hardware = group["profile"], group["model"], group["hardware"]
    papers_model = paper_model(paper)
    same_model = papers_model is not None and model_matches(model, papers_model)
    standin = standin_scope(model)
    if model.startswith(RANDOM_INIT):
        caveat = f"random-init weights ({model}): a pipeline check, not comparable with the paper's numbers"
    elif standin:
        caveat = (f"real learning {standin} ({model}): not comparable with the paper's numbers (the "
                  f"paper's claims are decided on it as seed-paired comparisons, claims.md)")
    elif not same_model or profile != PAPER_PROFILE:
        caveat = (f"not the paper's setting (profile {profile}, model {model}; the paper's: profile "
                  f"{PAPER_PROFILE}, model {papers_model}): not comparable with the paper's numbers")
    else:
        caveat = ""
    return Setting(profile, model, hardware, comparable=not caveat, caveat=caveat, papers_model=same_model)


def papers_setting(paper: dict[str, dict]) -> Setting:
    """The paper's setting, hardware "any": the placeholder shown where nothing of it was run."""
    return Setting(PAPER_PROFILE, paper_model(paper) or "(the paper's)", "any", comparable=True, caveat="")


def paper_model(paper: dict[str, dict]) -> str | None:
    return next((entry["model"] for entry in paper.values()), None)


def entry_variants(entry: dict) -> list[str]:
    """The variants a paper result is measured by: its method's in METHODS, else its own
    `variant` ([] where it names none)."""
    if entry["method"] in METHOD_VARIANTS:
        return list(METHOD_VARIANTS[entry["method"]])
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
    for key in ("k", "steps", "batch_size"):
        if key in entry and not (isinstance(entry[key], int) and not isinstance(entry[key], bool) and entry[key] >= 1):
            raise HarnessError(f"{where}: field {key!r} must be an integer >= 1, got {entry[key]!r}")
    if "variant" in entry and entry["method"] in METHOD_VARIANTS:
        raise HarnessError(f"{where}: field 'variant' must not be given: the variants of method "
                           f"{entry['method']!r} are given once, in harness/results/paper.py METHODS")
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
    unknown = [f"{m.name}: {name}" for m in METHODS for name in m.variants if name not in VARIANTS]
    if unknown:
        raise HarnessError(f"harness/results/paper.py METHODS names unknown variant(s) ({'; '.join(unknown)}); "
                           f"known: {', '.join(sorted(VARIANTS))}")
    return results


def paper_result(paper: dict[str, dict], task: str, method: str, k: int | None, metric: str) -> dict | None:
    """The paper's number for one cell of its tables (task, method, k, metric; never a
    fewer-steps ablation), or None where the paper gives none."""
    for entry in paper.values():
        if (entry["task"], entry["method"], entry.get("k"), entry["metric"]) == (task, method, k, metric) \
                and "steps" not in entry:
            return entry
    return None
