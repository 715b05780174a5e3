"""The paper's Table 18 measured: table18.md, table18.csv and table18_accuracy.png.

Rows are the methods of paper.METHODS in the paper's order (Table 18's, then Table 19's
LP-then-MeZO and Table 3's accuracy objective), a row per variant measuring the method (MeZO
(LoRA): both reference loralib readings; zero-shot: hf-zero-shot and hf-mlm before training).
Columns are the six tasks in the paper's order at each k of Table 18 (16, 512): a table per k.
Each cell is ours beside the paper's number; a cell not run, or with no published number in
benchmarks/paper.toml, shows "–".

Measured values are the rows of report.summarize, never recomputed here: each is one group of
its GROUP_KEYS (task, protocol name/version/hash, source data, profile, hardware, model,
variant, k) with the best-dev grid point of every seed (selection.best_dev_per_seed); mean and
population std over those seeds. So one cell never combines runs of different protocol hashes,
source data, profiles, models or hardware: the table has a section per setting (profile, model,
hardware), and where one section has more than one group for a cell (two protocol versions,
two source data) each gets its own sub-row. A footnote per (task, protocol, version, data)
names where a value came from. Zero-shot does not depend on k: its cells show, under both k,
each (protocol, hash, data)'s group of the smallest k.

Comparing with the paper needs the paper's conditions, and a value that misses one is shown but
marked, never silently compared: a section other than the paper's setting (profile "paper" on
the paper's pretrained model; random-init models are pipeline checks) is marked † as a whole;
in the paper's setting an entry is marked ‡, its footnote saying what it misses, unless it is
of the task's shipped protocol (whose paper profile holds the published steps, grid and seeds,
locked per version), its grid is complete (every point of every seed has a completed or diverged
run) and every seed of the grid has an evaluated run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.files import atomic_write_text
from harness.protocol.variants import VARIANTS
from harness.results.figures import method_color, pyplot, save_figure
from harness.results.paper import (
    METHODS,
    NOT_COMPARABLE_MARK,
    PAPER_TASKS,
    TABLE18_K,
    ZERO_SHOT,
    Method,
    Setting,
    paper_result,
    papers_setting,
    setting_of,
    shipped_protocol_name,
)
from harness.results.tables import HASH_DIGITS, NOT_RUN, mean_std, number, setting_heading, short_data

FILES = ("table18.md", "table18.csv", "table18_accuracy.png")
UNMET_MARK = "‡"
MEASURED, NOT_MEASURED = "measured", "not run"
CSV_COLUMNS = ("section", "profile", "model", "hardware", "comparable", "caveat", "method", "source", "variant", "k",
               "task", "paper_id", "paper_mean", "paper_std", "status", "measured_mean", "measured_std", "seeds",
               "measured_k", "steps", "protocol", "version", "hash", "data", "footnote", "conditions_met", "unmet")


@dataclass(frozen=True)
class Row:
    method: Method
    variant: str

    @property
    def zero_shot(self) -> bool:
        return self.method.name == ZERO_SHOT

    @property
    def metric(self) -> str:
        return "zero_shot_accuracy" if self.zero_shot else "test_accuracy"

    @property
    def label(self) -> str:
        return self.method.name + ("" if self.method.source == "Table 18" else f", {self.method.source}")


TABLE_ROWS = [Row(method, variant) for method in METHODS for variant in method.variants]


def unmet_conditions(group: dict) -> list[str]:
    """What a summary group of the paper's setting lacks to be compared with the paper's number
    ([] for none): the task's shipped protocol, a complete grid, an evaluated run of every seed."""
    unmet = []
    shipped = shipped_protocol_name(group["task"])
    if group["protocol"] != shipped:
        unmet.append(f"protocol {group['protocol']} is not the task's shipped protocol {shipped} (whose paper "
                     f"profile holds the published steps, grid and seeds)")
    missing, points, grid_seeds = (number(group[key]) for key in ("missing_points", "grid_points", "grid_seeds"))
    if missing is None:
        unmet.append("its records do not say their grid (older schema)")
    elif missing:
        unmet.append(f"{missing:.0f} of {points:.0f} grid points have no completed or diverged run")
    if grid_seeds is not None and group["seeds"] < grid_seeds:
        unmet.append(f"{group['seeds']} of the grid's {grid_seeds:.0f} seeds have an evaluated run")
    return unmet


def _settings(groups: list[dict], paper: dict[str, dict]) -> list[Setting]:
    """The settings with a group of a table variant, the paper's setting always among them (a
    placeholder of hardware 'any' when nothing of it was run)."""
    variants = {row.variant for row in TABLE_ROWS}
    found = {setting_of(g, paper) for g in groups if g["variant"] in variants}
    if not any(setting.comparable for setting in found):
        found.add(papers_setting(paper))
    return sorted(found, key=lambda setting: setting.order)


def _entries(groups: list[dict], setting: Setting, task: str, row: Row, k: int) -> list[dict]:
    """The summary groups of one cell, each its own entry (never combined): protocol name, version
    descending, hash, data. Zero-shot: of each (protocol, version, hash, data), the smallest k's."""
    matching = [g for g in groups if (g["profile"], g["model"], g["hardware"]) == (setting.profile, setting.model,
                                                                                 setting.hardware)
                and g["task"] == task and g["variant"] == row.variant and (row.zero_shot or g["k"] == k)]
    if row.zero_shot:
        smallest: dict[tuple, dict] = {}
        for group in sorted(matching, key=lambda g: g["k"]):
            smallest.setdefault((group["protocol"], group["version"], group["hash"], group["data"]), group)
        matching = list(smallest.values())
    return sorted(matching, key=lambda g: (g["protocol"], -g["version"], g["hash"], g["data"]))


def build(summary, paper: dict[str, dict]) -> dict:
    """The table as data: per setting, per (row, k, task) the cell's paper entry and measured
    entries (each with its footnote number and unmet conditions), and the footnotes.
    `summary`: report.summarize's DataFrame."""
    groups = summary.to_dict("records") if len(summary) else []
    out = {"sections": [], "citation": next((e["citation"] for e in paper.values()), ""),
           "unpublished": [m.name for m in METHODS if not any(e["method"] == m.name for e in paper.values())]}
    for setting in _settings(groups, paper):
        footnotes: dict[tuple, dict] = {}
        cells = {}
        for k in TABLE18_K:
            for row in TABLE_ROWS:
                for task in PAPER_TASKS:
                    measured = []
                    for group in _entries(groups, setting, task, row, k):
                        note = footnotes.setdefault((task, group["protocol"], group["version"], group["data"]),
                                                    {"number": len(footnotes) + 1, "variants": {}})
                        note["variants"][group["variant"]] = (group["hash"], group["steps"])
                        measured.append({"group": group, "footnote": note["number"],
                                         "mean": number(group["zero_shot_acc_mean" if row.zero_shot else "test_acc_mean"]),
                                         "std": None if row.zero_shot else number(group["test_acc_std"]),
                                         "unmet": unmet_conditions(group) if setting.comparable else []})
                    cells[(row, k, task)] = {"measured": measured, "paper": paper_result(
                        paper, task, row.method.name, None if row.zero_shot else k, row.metric)}
        out["sections"].append({"setting": setting, "cells": cells, "footnotes": footnotes})
    return out


def shown_k(part: dict) -> list[int]:
    """The k a section's tables and panels show: every k in the paper's setting, else the k its
    runs were made with (zero-shot's groups count at their own k only)."""
    return [k for k in TABLE18_K if part["setting"].comparable
            or any(item["group"]["k"] == k for (_, ck, _), cell in part["cells"].items() if ck == k
                   for item in cell["measured"])]


def _measured_text(item: dict, setting: Setting) -> str:
    if item["mean"] is None:
        return f"{NOT_RUN} [{item['footnote']}]"
    mark = (UNMET_MARK if item["unmet"] else "") + ("" if setting.comparable else NOT_COMPARABLE_MARK)
    return f"{mean_std(item['mean'], item['std'])} [{item['footnote']}]{mark}"


def _paper_text(entry: dict | None) -> str:
    return mean_std(entry["mean"], entry.get("std")) if entry else NOT_RUN


def _table_lines(part: dict, k: int) -> list[str]:
    """One section's table at one k: a line per row (sub-rows where a cell has several entries). On a
    model other than the paper's, ours only: the paper's numbers are of another model."""
    with_paper = part["setting"].papers_model
    lines = ["| method | variant | " + " | ".join(PAPER_TASKS.values()) + " |", "|---|---|" + "---|" * len(PAPER_TASKS)]
    for row in TABLE_ROWS:
        cells = [part["cells"][(row, k, task)] for task in PAPER_TASKS]
        lines.append(f"| {row.label} | {row.variant} | " + " | ".join(
            (_measured_text(cell['measured'][0], part['setting']) if cell['measured'] else NOT_RUN)
            + (f" / {_paper_text(cell['paper'])}" if with_paper else "") for cell in cells) + " |")
        for sub in range(1, max(len(cell["measured"]) for cell in cells)):   # the paper's number is above
            lines.append(f"| {row.label} (measurement {sub + 1}) | {row.variant} | " + " | ".join(
                _measured_text(cell["measured"][sub], part["setting"]) if sub < len(cell["measured"]) else ""
                for cell in cells) + " |")
    return lines


def _steps_text(variant: str, steps: int) -> str:
    """A variant's training steps; zero-shot and LP train nothing (their protocol's `steps` is unused)."""
    known = VARIANTS.get(variant)
    return "no training" if known is not None and known.optimizer == "none" else f"{steps:,} steps"


def _footnote_lines(part: dict) -> list[str]:
    lines = []
    for (task, protocol, version, data), note in part["footnotes"].items():
        variants = ", ".join(f"{variant} {digest[:HASH_DIGITS]} ({_steps_text(variant, steps)})"
                             for variant, (digest, steps) in sorted(note["variants"].items()))
        lines.append(f"- [{note['number']}] {PAPER_TASKS[task]}: protocol {protocol} v{version}, data "
                     f"{short_data(data)}; protocol hash per variant: {variants}.")
    unmet = {(row, task, item["group"]["k"], item["footnote"]): item["unmet"]   # zero-shot's: once, not per k
             for (row, _, task), cell in part["cells"].items() for item in cell["measured"] if item["unmet"]}
    lines += [f"- {UNMET_MARK} [{footnote}] {PAPER_TASKS[task]} {row.label} ({row.variant}), k={k}: {'; '.join(what)}."
              for (row, task, k, footnote), what in unmet.items()]
    return lines


def to_markdown(table: dict) -> str:
    lines = [
        "# Table 18, measured: test accuracy (%), ours / the paper's", "",
        "Rows: the paper's Table 18 (RoBERTa-large) in its order, then Table 19's LP-then-MeZO and Table 3's "
        "accuracy objective, a row per variant measuring the method; a table per k. Each cell: ours / the paper's; in a section on "
        "another model than the paper's (a stand-in, random-init weights), ours only. "
        "Ours: mean (population std) over seeds of the best-dev grid point of each seed, as in summary.md; [m] = "
        "the footnote naming the protocol (name, version, hash and steps per variant) and the source data it came "
        "from. A cell never combines runs of different protocol hashes, source data, profiles, models or hardware: "
        "one section per profile, model and hardware, and a sub-row where a section holds two groups for one cell. "
        "Zero-shot: test accuracy before training (hf-zero-shot, which trains nothing, and hf-mlm's runs before "
        "training; the group of the smallest k, the same under both k).",
        "",
        f"{NOT_RUN}: not run here (ours), or no published number recorded in benchmarks/paper.toml (the paper's: "
        f"{', '.join(table['unpublished'])}, and Table 3 where the paper has no number); {NOT_COMPARABLE_MARK}: "
        f"not comparable with the paper (see the section's heading); {UNMET_MARK}: in the paper's setting but "
        f"missing a condition of the paper's numbers (the task's shipped protocol, a complete grid, every seed; "
        f"listed below the section), so not comparable either.",
        "",
        f"Paper: {table['citation']}; Tables 18, 19 and 3.",
    ]
    for index, part in enumerate(table["sections"], start=1):
        setting = part["setting"]
        lines += ["", *setting_heading(index, setting)]
        for k in shown_k(part):
            lines += ["", f"### k = {k}", "", *_table_lines(part, k)]
        notes = _footnote_lines(part)
        lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"


def to_frame(table: dict):
    """table18.csv: one line per cell entry (a cell with no measurement: one line saying so), in
    the table's order; full hashes and data."""
    import pandas as pd

    lines = []
    for index, part in enumerate(table["sections"], start=1):
        setting = part["setting"]
        for (row, k, task), cell in part["cells"].items():
            paper_entry = cell["paper"] if setting.papers_model else None   # never beside another model
            base = {"section": index, "profile": setting.profile, "model": setting.model,
                    "hardware": setting.hardware, "comparable": setting.comparable, "caveat": setting.caveat,
                    "method": row.method.name, "source": row.method.source, "variant": row.variant, "k": k,
                    "task": task, "paper_id": paper_entry["id"] if paper_entry else "",
                    "paper_mean": paper_entry["mean"] if paper_entry else None,
                    "paper_std": paper_entry.get("std") if paper_entry else None}
            if not cell["measured"]:
                lines.append({**base, "status": NOT_MEASURED})
            for item in cell["measured"]:
                group = item["group"]
                lines.append({**base, "status": MEASURED if item["mean"] is not None else NOT_MEASURED,
                              "measured_mean": item["mean"], "measured_std": item["std"],
                              "seeds": int(group["seeds"]), "measured_k": int(group["k"]), "steps": int(group["steps"]),
                              "protocol": group["protocol"], "version": int(group["version"]),
                              "hash": group["hash"], "data": group["data"], "footnote": item["footnote"],
                              "conditions_met": setting.comparable and not item["unmet"],
                              "unmet": "; ".join(item["unmet"])})
    frame = pd.DataFrame(lines, columns=list(CSV_COLUMNS))
    return frame.astype({"seeds": "Int64", "measured_k": "Int64", "steps": "Int64", "version": "Int64",
                         "footnote": "Int64"})


VARIANT_HATCHES = ("", "////", "xxxx")


def panel_slots(part: dict, k: int) -> list[list[dict]]:
    """Per task, the slots of one panel, method by method (the methods with a paper number or a
    measurement at this k in any task): a bar per measured entry of each of its variants, an empty
    slot for a variant not run; each slot knows its method's paper entry in that task."""
    methods = [m for m in METHODS if any(part["cells"][(row, k, task)]["paper"] or part["cells"][(row, k, task)]["measured"]
                                         for row in TABLE_ROWS if row.method == m for task in PAPER_TASKS)]
    per_task = []
    for task in PAPER_TASKS:
        slots = []
        for method in methods:
            for position, variant in enumerate(method.variants):
                cell = part["cells"][(Row(method, variant), k, task)]
                hatch = VARIANT_HATCHES[min(position, len(VARIANT_HATCHES) - 1)]
                for item in [item for item in cell["measured"] if item["mean"] is not None] or [None]:
                    slots.append({"method": method, "item": item, "hatch": hatch, "paper": cell["paper"]})
        per_task.append(slots)
    return per_task


def _draw_panel(ax, part: dict, k: int) -> None:
    """One section's tasks side by side at one k: per task and method, a bar per measured entry
    (mean ± std over seeds, its footnote above; × at the bottom for a variant not run where the
    paper has a number) and the paper's number as an outline in the method's color around the
    method's slots (± its std in black at their middle)."""
    per_task = panel_slots(part, k)
    width = 0.9 / max(1, max(len(slots) for slots in per_task))
    for t, slots in enumerate(per_task):
        xs = [t - len(slots) * width / 2 + (j + 0.5) * width for j in range(len(slots))]
        for x, slot in zip(xs, slots):
            color, item = method_color(slot["method"].name), slot["item"]
            if item is None:
                if slot["paper"]:
                    ax.plot([x], [1.5], marker="x", color=color, markersize=4)
                continue
            ax.bar([x], [item["mean"]], width, yerr=[item["std"] or 0], capsize=1.5, color=color,
                   hatch=slot["hatch"], edgecolor="white" if slot["hatch"] else None, error_kw={"elinewidth": 0.6})
            ax.text(x, min(item["mean"] + (item["std"] or 0), 100) + 1,
                    f"[{item['footnote']}]{UNMET_MARK if item['unmet'] else ''}", ha="center", va="bottom", fontsize=5,
                    rotation=90)
        for method in dict.fromkeys(slot["method"] for slot in slots) if part["setting"].papers_model else ():
            at = [x for x, slot in zip(xs, slots) if slot["method"] == method]
            paper_entry = next(slot["paper"] for slot in slots if slot["method"] == method)
            if paper_entry:
                ax.bar([(at[0] + at[-1]) / 2], [paper_entry["mean"]], at[-1] - at[0] + width, fill=False,
                       edgecolor=method_color(method.name), linewidth=1.2, zorder=3)
                if paper_entry.get("std"):
                    ax.errorbar([(at[0] + at[-1]) / 2], [paper_entry["mean"]], yerr=[paper_entry["std"]], fmt="none",
                                ecolor="black", elinewidth=0.7, capsize=1.5)
    ax.set_xticks(range(len(PAPER_TASKS)), list(PAPER_TASKS.values()))
    ax.set_xlim(-0.55, len(PAPER_TASKS) - 0.45)
    ax.set_ylim(0, 108)
    ax.set_ylabel("test accuracy (%)")
    setting = part["setting"]
    caveat = f"\n{NOT_COMPARABLE_MARK} {setting.caveat}" if setting.caveat else ""
    what = ("ours (bars, mean ± std over seeds) vs the paper (outlines, mean ± std)" if setting.papers_model
            else "ours only (bars, mean ± std over seeds): the paper's numbers are of another model")
    ax.set_title(f"k={k}: {what}\n{setting.title}{caveat}", fontsize=8, color="black" if setting.comparable else "darkred")


def _legend_handles(methods: list[Method]) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=method_color(m.name), label=m.name + ("" if m.source == "Table 18" else f", {m.source}"))
               for m in methods]
    handles.append(Patch(fill=False, edgecolor="black", linewidth=1.2, label="the paper (mean ± std): an outline around "
                                                                          "the method's bars"))
    for position, hatch in enumerate(VARIANT_HATCHES[1:], start=1):
        later = [f"{m.name}: {m.variants[position]}" for m in methods if len(m.variants) > position]
        if later:
            handles.append(Patch(facecolor="C7", hatch=hatch, edgecolor="white",
                                 label=f"variant {position + 1} ({'; '.join(later)})"))
    handles.append(Line2D([], [], marker="x", ls="", color="C7", label="not run (the paper has a number)"))
    handles.append(Patch(facecolor="none", edgecolor="none", label=f"[m]: footnote in table18.md; {UNMET_MARK}: misses "
                                                                   f"a condition of the paper's numbers"))
    return handles




def draw(table: dict, path: Path) -> Path:
    """table18_accuracy.png: a panel per (section, k) of _panels, two per row; the key below."""
    plt = pyplot()
    panels = [(part, k) for part in table["sections"] for k in shown_k(part)]
    rows = (len(panels) + 1) // 2
    fig = plt.figure(figsize=(18, 4.6 * rows + 1.0))
    grid = fig.add_gridspec(rows + 1, 2, height_ratios=[4.6] * rows + [1.0])
    for index, (part, k) in enumerate(panels):
        _draw_panel(fig.add_subplot(grid[index // 2, index % 2]), part, k)
    key = fig.add_subplot(grid[rows, :])
    key.axis("off")
    key.legend(handles=_legend_handles(list(METHODS)), loc="center", ncol=5, fontsize=7, frameon=False)
    return save_figure(fig, path)


def write_table18(summary, paper: dict[str, dict], out_dir: Path) -> list[Path]:
    """table18.md, table18.csv and table18_accuracy.png in out_dir; returns their paths."""
    table = build(summary, paper)
    return [atomic_write_text(out_dir / FILES[0], to_markdown(table)),
            atomic_write_text(out_dir / FILES[1], to_frame(table).to_csv(index=False)),
            draw(table, out_dir / FILES[2])]
