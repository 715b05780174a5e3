"""The paper's Table 18 measured: table18.md, table18.csv and table18_accuracy.png.

Rows are Table 18's methods x k in the paper's order (zero-shot; LP, MeZO, MeZO (LoRA),
MeZO (prefix), FT, FT (LoRA) at k=16, then at k=512), then Table 3's accuracy objective
(k=512); a method with several variants (MeZO (LoRA): both reference loralib readings) has a
row per variant, one with none a row saying "no variant". Columns are the six tasks in the
paper's order (SST-2, SST-5, SNLI, MNLI, RTE, TREC), each the measured value beside the paper's.

Measured values are the rows of report.summarize, never recomputed here: each is one group
of its GROUP_KEYS (task, protocol name/version/hash, source data, profile, hardware, model,
variant, k) with the best-dev grid point of every seed (selection.best_dev_per_seed); mean
and population std over those seeds. So one cell never combines runs of different protocol
hashes, source data, profiles, models or hardware: the table has a section per (profile,
model, hardware), and where one section has more than one group for a cell (two protocol
versions, two source data) each gets its own sub-row. A footnote per (task, protocol,
version, data) names where a value came from. The zero-shot row is the zero-shot test
accuracy of the hf-mlm runs of the smallest k of a group (before training; it does not
depend on k). Sections other than the paper's setting (profile "paper" on the paper's
pretrained model) are marked not comparable with the paper; random-init models are pipeline
checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from harness.core.files import atomic_write_text
from harness.results.figures import pyplot, save_figure
from harness.results.paper import (
    ACCURACY_OBJECTIVE,
    PAPER_TASKS,
    TABLE18_METHODS,
    TABLE18_ROWS,
    ZERO_SHOT,
    entry_variants,
    paper_result,
)
from harness.results.selection import RANDOM_INIT, model_matches

PAPER_PROFILE = "paper"   # the profile holding the published grid, in every task's protocol
FILES = ("table18.md", "table18.csv", "table18_accuracy.png")
NOT_MEASURED = "not measured"
NO_VARIANT = "no variant"
NOT_COMPARABLE_MARK = "†"
CSV_COLUMNS = ("section", "profile", "model", "hardware", "comparable", "caveat", "method", "k", "variant", "source",
               "task", "paper_id", "paper_mean", "paper_std", "status", "measured_mean", "measured_std", "seeds",
               "measured_k", "protocol", "version", "hash", "data", "footnote")


@dataclass(frozen=True)
class Row:
    method: str
    k: int | None           # None: zero-shot (no training set)
    variant: str | None     # None: this suite has no variant for the method
    source: str             # the paper's table: "Table 18" or "Table 3"

    @property
    def metric(self) -> str:
        return "zero_shot_accuracy" if self.method == ZERO_SHOT else "test_accuracy"


@dataclass(frozen=True)
class Section:
    profile: str
    model: str
    hardware: str
    comparable: bool
    caveat: str             # "" where comparable

    @property
    def title(self) -> str:
        return f"profile {self.profile} · model {self.model} · hardware {self.hardware}"


def table_rows(paper: dict[str, dict]) -> list[Row]:
    """Table 18's rows, then Table 3's; a row per variant the paper file names for the method
    (on any task), or one row with variant None."""
    rows = []
    for (method, k), source in [*((row, "Table 18") for row in TABLE18_ROWS), ((ACCURACY_OBJECTIVE, 512), "Table 3")]:
        metric = "zero_shot_accuracy" if method == ZERO_SHOT else "test_accuracy"
        variants: list[str] = []
        for task in PAPER_TASKS:
            entry = paper_result(paper, task, method, k, metric)
            variants += [v for v in (entry_variants(entry) if entry else []) if v not in variants]
        rows += [Row(method, k, variant, source) for variant in variants or [None]]
    return rows


def _number(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _section_of(group: dict, paper_model: str | None) -> Section:
    profile, model, hardware = group["profile"], group["model"], group["hardware"]
    if model.startswith(RANDOM_INIT):
        caveat = f"random-init weights ({model}): a pipeline check, not comparable with the paper's numbers"
    elif paper_model is None or not model_matches(model, paper_model) or profile != PAPER_PROFILE:
        caveat = (f"not the paper's setting (profile {profile}, model {model}; the paper's: profile "
                  f"{PAPER_PROFILE}, model {paper_model}): not comparable with the paper's numbers")
    else:
        caveat = ""
    return Section(profile, model, hardware, comparable=not caveat, caveat=caveat)


def _sections(groups: list[dict], rows: list[Row], paper_model: str | None) -> list[Section]:
    """A section per (profile, model, hardware) with at least one group in the table, the
    paper's setting first (a placeholder 'any' hardware section when nothing of it was run),
    then other pretrained settings, then random-init ones."""
    variants = {row.variant for row in rows if row.variant}
    found = {}
    for group in groups:
        if group["variant"] in variants:
            section = _section_of(group, paper_model)
            found.setdefault((section.profile, section.model, section.hardware), section)
    sections = list(found.values())
    if not any(s.comparable for s in sections):   # the paper's setting is always shown, measured or not
        sections.append(Section(PAPER_PROFILE, paper_model or "(the paper's)", "any", comparable=True, caveat=""))
    return sorted(sections, key=lambda s: (not s.comparable, s.model.startswith(RANDOM_INIT), s.profile, s.model,
                                           s.hardware))


def _entries(groups: list[dict], section: Section, task: str, row: Row) -> list[dict]:
    """The summary groups of one cell, each its own entry (never combined): protocol name,
    version descending, hash, data. Zero-shot: of each (protocol, version, hash, data), the group
    of the smallest k."""
    matching = [g for g in groups if (g["profile"], g["model"], g["hardware"]) == (section.profile, section.model,
                                                                                 section.hardware)
                and g["task"] == task and g["variant"] == row.variant and (row.k is None or g["k"] == row.k)]
    if row.k is None:
        smallest: dict[tuple, dict] = {}
        for group in sorted(matching, key=lambda g: g["k"]):
            smallest.setdefault((group["protocol"], group["version"], group["hash"], group["data"]), group)
        matching = list(smallest.values())
    return sorted(matching, key=lambda g: (g["protocol"], -g["version"], g["hash"], g["data"]))


def _value(group: dict, row: Row) -> tuple[float | None, float | None]:
    if row.k is None:
        return _number(group.get("zero_shot_acc_mean")), None
    return _number(group["test_acc_mean"]), _number(group["test_acc_std"])


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.1f}" + (f" ({std:.1f})" if std is not None else "")


def _short_data(data: str) -> str:
    return ",".join(f"{part.split(':')[0]}:{part.split(':')[-1][:8]}" for part in data.split(","))


def build(summary, paper: dict[str, dict]) -> dict:
    """The table as data: sections, rows, and per (section, row, task) the cell's entries, with
    footnotes. `summary`: report.summarize's DataFrame."""
    groups = summary.to_dict("records") if len(summary) else []
    paper_model = next((entry["model"] for entry in paper.values()), None)
    rows = table_rows(paper)
    out = {"rows": rows, "sections": [], "citation": next((e["citation"] for e in paper.values()), "")}
    for section in _sections(groups, rows, paper_model):
        footnotes: dict[tuple, dict] = {}
        cells = {}
        for row in rows:
            for task in PAPER_TASKS:
                paper_entry = paper_result(paper, task, row.method, row.k, row.metric)
                entries = [] if row.variant is None else _entries(groups, section, task, row)
                measured = []
                for group in entries:
                    key = (task, group["protocol"], group["version"], group["data"])
                    note = footnotes.setdefault(key, {"number": len(footnotes) + 1, "hashes": {}})
                    note["hashes"][group["variant"]] = group["hash"]
                    mean, std = _value(group, row)
                    measured.append({"group": group, "mean": mean, "std": std, "footnote": note["number"]})
                status = NO_VARIANT if row.variant is None else ("measured" if measured else NOT_MEASURED)
                cells[(row, task)] = {"paper": paper_entry, "status": status, "measured": measured}
        out["sections"].append({"section": section, "cells": cells, "footnotes": footnotes})
    return out


def _measured_text(item: dict, section: Section) -> str:
    seeds = int(item["group"]["seeds"])
    mark = "" if section.comparable else f" {NOT_COMPARABLE_MARK}"
    if item["mean"] is None:
        return f"{NOT_MEASURED} [{item['footnote']}]"
    return f"{_fmt(item['mean'], item['std'])} n={seeds} [{item['footnote']}]{mark}"


def to_markdown(table: dict) -> str:
    names = list(PAPER_TASKS.values())
    header = "| method | k | variant | " + " | ".join(f"{name} | {name} paper" for name in names) + " |"
    rule = "|---|---|---|" + "---|---|" * len(names)
    lines = [
        "# Table 18, measured: test accuracy (%) beside the paper's", "",
        "Rows: the paper's Table 18 (RoBERTa-large) in its order, then Table 3's accuracy objective (k=512). "
        "Each measured cell: mean (population std) over seeds of the best-dev grid point of each seed, as in "
        "summary.md; n = seeds; [m] = the footnote naming the protocol (name, version, hash per variant) and the "
        "source data it came from. A cell never combines runs of different protocol hashes, source data, profiles, "
        "models or hardware: one section per profile, model and hardware, and a sub-row where a section holds two "
        "groups for one cell. Zero-shot: the hf-mlm runs' test accuracy before training (smallest k).",
        "",
        f"*{NOT_MEASURED}*: this suite has the variant, but there is no record of it here; *{NO_VARIANT}*: this "
        f"suite has no variant for the method yet; *—*: the paper gives no number; {NOT_COMPARABLE_MARK}: not "
        f"comparable with the paper (see the section's heading).",
        "",
        f"Paper: {table['citation']}; Table 18 and Table 3.",
    ]
    for index, part in enumerate(table["sections"], start=1):
        section = part["section"]
        lines += ["", f"## {index}. {section.title}", ""]
        lines.append(f"**{NOT_COMPARABLE_MARK} {section.caveat}.**" if section.caveat
                     else "The paper's setting (profile paper, the paper's pretrained model): comparable with the paper.")
        lines += ["", header, rule]
        for row in table["rows"]:
            cells = [part["cells"][(row, task)] for task in PAPER_TASKS]
            for sub in range(max([1] + [len(cell["measured"]) for cell in cells])):
                label = row.method + (" (Table 3)" if row.source != "Table 18" else "")
                label += f" (measurement {sub + 1})" if sub else ""
                texts = [label, "-" if row.k is None else str(row.k), row.variant or NO_VARIANT]
                for cell in cells:
                    if sub < len(cell["measured"]):
                        measured = _measured_text(cell["measured"][sub], section)
                    else:
                        measured = "" if sub else cell["status"]
                    paper_entry = cell["paper"]
                    paper_text = "" if sub else (_fmt(paper_entry["mean"], paper_entry.get("std")) if paper_entry
                                                 else "—")
                    texts += [measured, paper_text]
                lines.append("| " + " | ".join(texts) + " |")
        if part["footnotes"]:
            lines.append("")
            for (task, protocol, version, data), note in part["footnotes"].items():
                hashes = ", ".join(f"{variant} {digest[:8]}" for variant, digest in sorted(note["hashes"].items()))
                lines.append(f"- [{note['number']}] {PAPER_TASKS[task]}: protocol {protocol} v{version}, data "
                             f"{_short_data(data)}; protocol hash per variant: {hashes}; {section.title}.")
    return "\n".join(lines) + "\n"


def to_frame(table: dict):
    """table18.csv: one line per cell entry (a cell with no measurement: one line saying why),
    in the table's order; full hashes and data."""
    import pandas as pd

    lines = []
    for index, part in enumerate(table["sections"], start=1):
        section = part["section"]
        for row in table["rows"]:
            for task in PAPER_TASKS:
                cell = part["cells"][(row, task)]
                paper_entry = cell["paper"]
                base = {"section": index, "profile": section.profile, "model": section.model,
                        "hardware": section.hardware, "comparable": section.comparable, "caveat": section.caveat,
                        "method": row.method, "k": row.k, "variant": row.variant or "", "source": row.source,
                        "task": task, "paper_id": paper_entry["id"] if paper_entry else "",
                        "paper_mean": paper_entry["mean"] if paper_entry else None,
                        "paper_std": paper_entry.get("std") if paper_entry else None}
                if not cell["measured"]:
                    lines.append({**base, "status": cell["status"]})
                for item in cell["measured"]:
                    group = item["group"]
                    lines.append({**base, "status": "measured" if item["mean"] is not None else NOT_MEASURED,
                                  "measured_mean": item["mean"], "measured_std": item["std"],
                                  "seeds": int(group["seeds"]), "measured_k": int(group["k"]),
                                  "protocol": group["protocol"], "version": int(group["version"]),
                                  "hash": group["hash"], "data": group["data"], "footnote": item["footnote"]})
    frame = pd.DataFrame(lines, columns=list(CSV_COLUMNS))
    return frame.astype({"k": "Int64", "seeds": "Int64", "measured_k": "Int64", "version": "Int64",
                         "footnote": "Int64"})


METHOD_ORDER = (ZERO_SHOT, *TABLE18_METHODS, ACCURACY_OBJECTIVE)
METHOD_COLORS = dict(zip(METHOD_ORDER, ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8")))   # C7 (gray): the key
VARIANT_HATCHES = ("", "////", "xxxx")


def _draw_panel(ax, table: dict, part: dict, k: int) -> None:
    """One section's tasks side by side at one k (zero-shot too): per task, per method the
    paper's bar (pale) then a solid bar per measured variant and cell entry."""
    rows = [row for row in table["rows"] if row.k in (None, k)]
    methods = [m for m in METHOD_ORDER if any(row.method == m for row in rows)]
    per_task = []
    for task in PAPER_TASKS:
        bars = []   # (kind, method, mean, std, hatch, footnote)
        for method in methods:
            method_rows = [row for row in rows if row.method == method]
            paper_entry = part["cells"][(method_rows[0], task)]["paper"]
            if paper_entry:
                bars.append(("paper", method, paper_entry["mean"], paper_entry.get("std"), "", None))
            for position, row in enumerate(r for r in method_rows if r.variant):
                cell = part["cells"][(row, task)]
                hatch = VARIANT_HATCHES[min(position, len(VARIANT_HATCHES) - 1)]
                values = [m for m in cell["measured"] if m["mean"] is not None]
                if not values and paper_entry:
                    bars.append(("missing", method, None, None, hatch, None))
                for item in values:
                    bars.append(("measured", method, item["mean"], item["std"], hatch, item["footnote"]))
        per_task.append(bars)
    width = 0.9 / max(1, max(len(bars) for bars in per_task))
    for t, bars in enumerate(per_task):
        for j, (kind, method, mean, std, hatch, footnote) in enumerate(bars):
            x = t - len(bars) * width / 2 + (j + 0.5) * width
            if kind == "missing":
                ax.plot([x], [1.5], marker="x", color=METHOD_COLORS[method], markersize=4)
                continue
            ax.bar([x], [mean], width, yerr=[std or 0], capsize=1.5, color=METHOD_COLORS[method],
                   alpha=0.35 if kind == "paper" else 1.0, hatch=hatch, edgecolor="white" if hatch else None,
                   error_kw={"elinewidth": 0.6})
            if footnote is not None:
                ax.text(x, mean + (std or 0) + 1, f"[{footnote}]", ha="center", va="bottom", fontsize=5, rotation=90)
    ax.set_xticks(range(len(PAPER_TASKS)), list(PAPER_TASKS.values()))
    ax.set_xlim(-0.55, len(PAPER_TASKS) - 0.45)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    section = part["section"]
    caveat = f"\n{NOT_COMPARABLE_MARK} {section.caveat}" if section.caveat else ""
    ax.set_title(f"Table 18, k={k} (and zero-shot): paper (pale) vs measured, tasks side by side\n"
                 f"{section.title}{caveat}", fontsize=8, color="black" if section.comparable else "darkred")


def _legend_handles(rows: list[Row]) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=METHOD_COLORS[m], label=m + (" (Table 3)" if m == ACCURACY_OBJECTIVE else ""))
               for m in METHOD_ORDER if any(row.method == m for row in rows)]
    handles += [Patch(facecolor="C7", alpha=0.35, label="paper (mean ± std)"),
                Patch(facecolor="C7", label="measured: mean ± std over seeds [footnote in table18.md]")]
    for position, hatch in enumerate(VARIANT_HATCHES[1:], start=1):
        later = [f"{method}: {variants[position]}" for method in METHOD_ORDER
                 if len(variants := list(dict.fromkeys(r.variant for r in rows if r.method == method and r.variant)))
                 > position]
        if later:
            handles.append(Patch(facecolor="C7", hatch=hatch, edgecolor="white",
                                 label=f"measured, variant {position + 1} ({'; '.join(later)})"))
    handles.append(Line2D([], [], marker="x", ls="", color="C7", label=f"{NOT_MEASURED} (the suite has the variant)"))
    return handles


def write_table18(summary, paper: dict[str, dict], out_dir: Path) -> list[Path]:
    """table18.md, table18.csv and table18_accuracy.png (a row of two panels, k=16 and k=512,
    per section; the key below them) in out_dir; returns their paths."""
    table = build(summary, paper)
    written = [atomic_write_text(out_dir / FILES[0], to_markdown(table)),
               atomic_write_text(out_dir / FILES[1], to_frame(table).to_csv(index=False))]
    plt = pyplot()
    count = len(table["sections"])
    fig = plt.figure(figsize=(18, 4.6 * count + 0.7))
    grid = fig.add_gridspec(count + 1, 2, height_ratios=[4.6] * count + [0.7])
    for index, part in enumerate(table["sections"]):
        for column, k in enumerate((16, 512)):
            _draw_panel(fig.add_subplot(grid[index, column]), table, part, k)
    key = fig.add_subplot(grid[count, :])
    key.axis("off")
    key.legend(handles=_legend_handles(table["rows"]), loc="center", ncol=5, fontsize=7, frameon=False)
    written.append(save_figure(fig, out_dir / FILES[2]))
    return written
