"""The report's readable tables: summary.md, sparsity.md, throughput.md, memory.md (and
memory.csv), and the formatting table18.md shares with them.

Every value comes from report.summarize's rows (one group of its GROUP_KEYS: task, protocol
name/version/hash, source data, profile, hardware, model, variant, k; the best-dev grid point of
every seed, mean and population std over those seeds), except memory's, which come from
report.memory_summary (every run with a memory measurement, by batch: memory does not depend on
which grid point won). Nothing is recomputed here.

summary.md is the index: a row per group, identity and accuracy. The other three each show one
kind of measurement in a handful of columns, grouped as table18.md is: a section per setting
(profile, model, hardware; the paper's first, random-init pipeline checks last, marked not
comparable with the paper), and in it a table per (task, protocol name and version, source data)
named in its heading, a row per variant. "n" counts the runs or seeds a row's means are over
("1 of 2": one of the two selected seeds has the measurement); a value not measured is "–",
never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.core.files import atomic_write_text
from harness.protocol.variants import VARIANTS, ZEROTH_ORDER
from harness.results.paper import (
    METHODS,
    NOT_COMPARABLE_MARK,
    PAPER_TASKS,
    Setting,
    method_of,
    papers_setting,
    setting_of,
)

NOT_RUN = "–"     # not measured (not run, or a measurement the run does not have), or no paper number recorded
HASH_DIGITS = 8
FILES = ("summary.md", "sparsity.md", "throughput.md", "memory.md", "memory.csv")

# Memory phases (harness.measure.memory), in the order shown: name -> (column, the paper's Table 12 metric)
PHASES = {"inference": ("inference", "memory_excess_mb_inference"),
          "mezo_step": ("MeZO step", "memory_excess_mb_mezo"),
          "mezo_adam_step": ("MeZO-Adam step", None),
          "first_order_step": ("first-order step", "memory_excess_mb_first_order")}
# a variant's own training phase, by its optimizer; "none" (zero-shot, LP) trains nothing: inference
TRAINING_PHASE = {"none": "inference", "mezo": "mezo_step", "mezo-adam": "mezo_adam_step",
                  "adamw": "first_order_step"}


def number(value) -> float | None:
    """A float, or None for a missing value (None or NaN, as pandas gives)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def fmt(value, spec: str) -> str:
    """`value` formatted with `spec`, or NOT_RUN where there is none."""
    value = number(value)
    return NOT_RUN if value is None else format(value, spec)


def mean_std(mean, std=None) -> str:
    """'91.0 (1.0)': a mean and its std to 1 decimal; the mean alone where there is no std."""
    mean, std = number(mean), number(std)
    if mean is None:
        return NOT_RUN
    return f"{mean:.1f}" + (f" ({std:.1f})" if std is not None else "")


def short_data(data: str) -> str:
    """A data identity ("test:<sha256>,train:<sha256>") with 8 hex digits per file."""
    return ",".join(f"{part.split(':')[0]}:{part.split(':')[-1][:HASH_DIGITS]}" for part in data.split(","))


def seeds_text(count, seeds) -> str:
    """n of a row: the seeds a mean is over, 'c of s' where fewer than the selected seeds."""
    count, seeds = int(count), int(seeds)
    return str(seeds) if count == seeds else f"{count} of {seeds}"


def method_label(variant: str) -> str:
    """The paper's method a variant measures (METHODS), else the registry's label of the variant."""
    method = method_of(variant)
    return method.name if method else (VARIANTS[variant].label if variant in VARIANTS else variant)


def variant_order(variant: str) -> tuple:
    """Variants in the paper's method order (METHODS), then the others by name."""
    method = method_of(variant)
    return (METHODS.index(method), method.variants.index(variant), "") if method else (len(METHODS), 0, variant)


def task_order(task: str) -> tuple:
    tasks = list(PAPER_TASKS)
    return (tasks.index(task), "") if task in tasks else (len(tasks), task)


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict], str]


def markdown_table(columns: list[Column], rows: list[dict]) -> list[str]:
    return (["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows])


def setting_heading(index: int, setting: Setting) -> list[str]:
    """A section's heading and the line saying whether it is comparable with the paper."""
    return [f"## {index}. {setting.title}", "",
            f"**{NOT_COMPARABLE_MARK} {setting.caveat}.**" if setting.caveat
            else "The paper's setting (profile paper, the paper's pretrained model): comparable with the paper."]


def by_setting(groups: list[dict], paper: dict[str, dict],
               size: str = "k") -> list[tuple[Setting, dict[tuple, list[dict]]]]:
    """Groups by setting (Setting.order), and in each by (task, protocol, version, data): tasks in the
    paper's order, versions newest first; rows by variant (variant_order), then `size` (k or batch)."""
    found: dict[Setting, dict[tuple, list[dict]]] = {}
    for group in groups:
        part = (group["task"], group["protocol"], int(group["version"]), group["data"])
        found.setdefault(setting_of(group, paper), {}).setdefault(part, []).append(group)
    return [(setting, {part: sorted(rows, key=lambda g: (variant_order(g["variant"]), int(g[size])))
                       for part, rows in sorted(parts.items(), key=lambda item: (task_order(item[0][0]), item[0][1],
                                                                                  -item[0][2], item[0][3]))})
            for setting, parts in sorted(found.items(), key=lambda item: item[0].order)]


def part_heading(part: tuple) -> str:
    task, protocol, version, data = part
    return f"### {PAPER_TASKS.get(task, task)} · protocol {protocol} v{version} · data {short_data(data)}"


def sectioned_markdown(sections: list[tuple[Setting, dict[tuple, list[dict]]]], columns: list[Column]) -> list[str]:
    lines = []
    for index, (setting, parts) in enumerate(sections, start=1):
        lines += ["", *setting_heading(index, setting)]
        for part, rows in parts.items():
            lines += ["", part_heading(part), "", *markdown_table(columns, rows)]
    return lines


def _identity(count: Callable[[dict], str], size: str = "k") -> list[Column]:
    return [Column("method", lambda g: method_label(g["variant"])), Column("variant", lambda g: g["variant"]),
            Column(size, lambda g: str(int(g[size]))), Column("n", count)]


HASH = Column("protocol hash", lambda g: g["hash"][:HASH_DIGITS])
COMMON_NOTE = (
    "A section per setting (profile, model, hardware) and in it a table per task, protocol (name, version) and "
    "source data (sha256 of its files, 8 hex digits); each row names its protocol hash. "
    f"{NOT_RUN}: not measured. {NOT_COMPARABLE_MARK}: not comparable with the paper (see the section's heading).")

SPARSITY_COLUMNS = [
    *_identity(lambda g: seeds_text(g["sparsity_seeds"], g["seeds"])),
    Column("zero grad %", lambda g: fmt(g["zero_grad_pct"], ".2f")),
    Column("tiny grad %", lambda g: fmt(g["tiny_grad_pct"], ".2f")),
    Column("tiny threshold", lambda g: fmt(g["tiny_threshold"], "g")),
    HASH,
]
THROUGHPUT_COLUMNS = [
    *_identity(lambda g: seeds_text(g["throughput_seeds"], g["seeds"])),
    Column("backend", lambda g: g["backend"]),
    Column("steps/s", lambda g: fmt(g["steps_per_s"], ".2f")),
    Column("tokens/s", lambda g: fmt(g["tokens_per_s"], ",.0f")),
    Column("padding %", lambda g: fmt(g["padding_pct"], ".1f")),
    HASH,
]


def _phase_cell(phase: str) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        text = fmt(row[f"{phase}_mib"], ",.1f")
        return f"**{text}**" if row.get("phase") == phase and text != NOT_RUN else text
    return cell


MEMORY_COLUMNS = [*_identity(lambda g: str(int(g["runs"])), size="batch"),
                  *(Column(f"{label} MiB", _phase_cell(phase)) for phase, (label, _) in PHASES.items()), HASH]


def _measurement_markdown(title: str, intro: str, rows: list[dict], columns: list[Column],
                          paper: dict[str, dict], empty: str) -> str:
    sections = by_setting(rows, paper)
    lines = [f"# {title}", "", intro, "", COMMON_NOTE]
    lines += sectioned_markdown(sections, columns) if sections else ["", empty]
    return "\n".join(lines) + "\n"


def sparsity_markdown(summary_rows: list[dict], paper: dict[str, dict]) -> str:
    return _measurement_markdown(
        "Gradient sparsity of MeZO's projected gradients",
        "Over every training step of a run: % of projected gradients exactly 0 (zero grad %), and % with |g| below "
        "the protocol's threshold (tiny grad %, the threshold beside it). Zeroth-order variants only (first-order "
        "ones have no projected gradient). Values: the best-dev grid point of each seed (as in summary.md), mean "
        "over seeds; n = the seeds with a sparsity summary (a run with no finite projected gradient has none).",
        [g for g in summary_rows if g["optimizer"] in ZEROTH_ORDER], SPARSITY_COLUMNS, paper,
        "No zeroth-order run in the records.")


def throughput_markdown(summary_rows: list[dict], paper: dict[str, dict]) -> str:
    return _measurement_markdown(
        "Training throughput",
        "Steps per second and real (non-padding) tokens per second of training time (evaluation excluded), and the "
        "% of the training forwards' tokens that were padding (variants that train nothing, zero-shot and LP, are "
        "not here). Values: the best-dev grid point of each seed (as in summary.md), mean over seeds; n = the seeds "
        "with a throughput measurement. A step is one batch: MeZO's is two forward passes, FT's one forward and one "
        "backward, so steps/s compare within a method.",
        [g for g in summary_rows if g["optimizer"] != "none"], THROUGHPUT_COLUMNS, paper,   # "none": trains nothing
        "No training run in the records.")


def paper_memory(paper: dict[str, dict], task: str) -> dict | None:
    """The paper's memory numbers of a task (Table 12) as a memory.md row, or None where it has none."""
    entries = {phase: next((e for e in paper.values() if e["task"] == task and e["metric"] == metric), None)
               for phase, (_, metric) in PHASES.items()}
    first = next((e for e in entries.values() if e), None)
    if first is None:
        return None
    return {"source": first["source"].split(" (")[0], "batch": first.get("batch_size"),
            **{f"{phase}_mib": entry["mean"] if entry else None for phase, entry in entries.items()}}


PAPER_MEMORY_COLUMNS = [Column("method", lambda r: f"paper ({r['source']}; MB)"), Column("variant", lambda r: NOT_RUN),
                        Column("batch", lambda r: str(r["batch"]) if r["batch"] else NOT_RUN),
                        Column("n", lambda r: NOT_RUN), *MEMORY_COLUMNS[4:-1], Column("protocol hash", lambda r: NOT_RUN)]


def memory_markdown(memory_rows: list[dict], paper: dict[str, dict]) -> str:
    """memory.md from report.memory_summary's rows; the paper's numbers (Table 12) as a row of the
    first table of their task in each comparable section (a table of their own where it has none;
    the paper's setting is shown even when nothing of it was run)."""
    lines = ["# Memory per phase", "",
             "Measured after training, on the run's trained parameter set and one training batch of `batch` examples: "
             "what each phase added over the memory just before it (weights and runtime already loaded), in MiB "
             "(2^20 bytes): an inference forward, a MeZO step, a MeZO-Adam step (MeZO-Adam runs only), a first-order "
             "step (backprop + AdamW with its state). **Bold**: the variant's own training phase (inference for "
             "variants that train nothing). n = runs: every completed run measures memory, whichever grid point won; "
             "values are means over them. On CPU a phase's peak is process RSS; on CUDA, torch's allocated bytes. "
             "The paper's row: its Table 12 (RoBERTa-large, memory over the weights, in MB as printed).", "",
             COMMON_NOTE]
    sections = by_setting(memory_rows, paper, size="batch")
    if not any(setting.comparable for setting, _ in sections):
        sections.insert(0, (papers_setting(paper), {}))
    for index, (setting, parts) in enumerate(sections, start=1):
        lines += ["", *setting_heading(index, setting)]
        paper_rows = {task: paper_memory(paper, task) for task in PAPER_TASKS} if setting.comparable else {}
        for part, rows in parts.items():
            paper_row = paper_rows.pop(part[0], None)
            lines += ["", part_heading(part), "", *markdown_table(MEMORY_COLUMNS, rows)]
            lines += markdown_table(PAPER_MEMORY_COLUMNS, [paper_row])[2:] if paper_row else []
        for task, paper_row in paper_rows.items():
            if paper_row:
                lines += ["", f"### {PAPER_TASKS[task]} · not measured in this setting", "",
                          *markdown_table(PAPER_MEMORY_COLUMNS, [paper_row])]
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = [
    Column("task", lambda g: g["task"]),
    Column("protocol", lambda g: f"{g['protocol']} v{int(g['version'])}"),
    Column("profile", lambda g: g["profile"]),
    Column("hardware", lambda g: g["hardware"]),
    Column("model", lambda g: g["model_text"]),
    Column("variant", lambda g: g["variant"]),
    Column("k", lambda g: str(int(g["k"]))),
    Column("hash", lambda g: g["hash"][:HASH_DIGITS]),
    Column("data", lambda g: short_data(g["data"])),
    Column("n", lambda g: str(int(g["seeds"]))),
    Column("test acc %", lambda g: mean_std(g["test_acc_mean"], g["test_acc_std"])),
    Column("zero-shot %", lambda g: fmt(g["zero_shot_acc_mean"], ".1f")),
    Column("paper test %", lambda g: mean_std(g["paper_test_acc"], g["paper_test_std"])),
    Column("paper zero-shot %", lambda g: mean_std(g["paper_zero_shot_acc"])),
]


def summary_markdown(summary_rows: list[dict], paper: dict[str, dict], unevaluated: list[str]) -> str:
    """summary.md: a row per group, identity and accuracy only; the groups none of whose runs was
    evaluated (report.unevaluated_groups) named below it."""
    lines = [
        "# Summary: test accuracy (%)", "",
        "A row per task, protocol (name, version, hash, 8 hex digits), source data (sha256 of its files), profile, "
        "hardware, model, variant and k. Test accuracy: mean (population std) over seeds of the best-dev grid point "
        "of each seed (selected as the reference's tools/gather_result.py does); n = seeds. Zero-shot: test "
        "accuracy before training. Paper: benchmarks/paper.toml (RoBERTa-large).", "",
        f"{NOT_RUN}: not measured, or no published number recorded; {NOT_COMPARABLE_MARK}: not the paper's setting "
        f"(profile paper, its pretrained model), not comparable with the paper's numbers; random-init models are "
        f"pipeline checks.", "",
        "Other tables from the same rows: table18.md (the paper's Table 18, tasks side by side), sparsity.md "
        "(gradient sparsity), throughput.md (steps/s, tokens/s, padding), memory.md (memory per phase, by batch); "
        "summary.csv has every column in full (hashes, data, std, sparsity, memory, throughput, grid, paper values).",
        "",
    ]
    rows = [dict(g, model_text=g["model"] + ("" if setting_of(g, paper).comparable
                                             else f" {NOT_COMPARABLE_MARK}")) for g in summary_rows]
    lines += markdown_table(SUMMARY_COLUMNS, rows) if rows else ["No evaluated run."]
    lines += [line for group in unevaluated for line in ("", f"No evaluated run (not in the table): {group}")]
    return "\n".join(lines) + "\n"


def write_tables(summary, memory, paper: dict[str, dict], out_dir: Path, unevaluated: list[str]) -> list[Path]:
    """summary.md, sparsity.md, throughput.md, memory.md and memory.csv in out_dir from
    report.summarize's and report.memory_summary's DataFrames; returns their paths."""
    groups = summary.to_dict("records")
    memory_rows = memory.to_dict("records")
    texts = (summary_markdown(groups, paper, unevaluated), sparsity_markdown(groups, paper),
             throughput_markdown(groups, paper), memory_markdown(memory_rows, paper), memory.to_csv(index=False))
    return [atomic_write_text(out_dir / name, text) for name, text in zip(FILES, texts)]
