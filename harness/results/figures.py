"""Figures of the report: matplotlib without a display, PNGs written atomically, one color per
method in every figure, and the report's figures across tasks beside Table 18's:

- accuracy_vs_forward_passes.png (the paper's Figure 2 style: MeZO vs FT by training budget):
  a panel per (setting, k, task), each variant's dev accuracy (mean over the best-dev run of each
  seed, report.dev_curve) against the training forward passes done when it was evaluated: step x
  FORWARD_PASSES_PER_STEP (MeZO: 2 forward passes a step; FT: 1 forward and 1 backward a step,
  counted as 1). A pass is one batch, and the batches differ (MeZO 64 examples, FT 2 to 32), as
  in the paper's protocol. Variants that train nothing (zero-shot, LP) are a dotted line at their
  dev accuracy.
- memory_per_method.png (the paper's Table 12 / Figure 3 style): a panel per (setting, task), a
  bar per (variant, batch) of report.memory_summary: the memory the variant's own training phase
  adds over the memory before it, the paper's numbers (Table 12, its batch) beside them in the
  paper's setting.
"""

from __future__ import annotations

import io
from pathlib import Path

from harness.core.files import atomic_write_bytes
from harness.protocol.variants import VARIANTS, ZEROTH_ORDER
from harness.results.paper import (
    METHODS,
    NOT_COMPARABLE_MARK,
    PAPER_TASKS,
    method_of,
    papers_setting,
    setting_of,
)
from harness.results.tables import PHASES, fmt, method_label, paper_memory, short_data, task_order, variant_order

DPI = 110
FILES = ("accuracy_vs_forward_passes.png", "memory_per_method.png")
# one color per method of paper.METHODS, in its order; C7 (gray): keys and variants of no method
METHOD_COLORS = dict(zip((m.name for m in METHODS), ("#7f7f7f", "#bcbd22", "#1f77b4", "#17becf", "#9467bd", "#2ca02c",
                                                      "#d62728", "#ff7f0e", "#e377c2", "#8c564b", "#393b79")))
OTHER_COLOR = "C7"
# variants of no method (hf-cls, sglang-mlm, ...) in the curves: lighter colors, by the registry's order
OTHER_VARIANT_COLORS = ("#aec7e8", "#98df8a", "#ffbb78", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#c5b0d5")
# training forward passes per step, by optimizer ("none": trains nothing)
FORWARD_PASSES_PER_STEP = {"mezo": 2, "mezo-adam": 2, "adamw": 1}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out (the axes within `rect`, figure fractions), write as PNG (atomically) and close a
    figure; returns `path`."""
    fig.tight_layout(rect=rect)
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png")
    pyplot().close(fig)
    return atomic_write_bytes(path, png.getvalue())


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, OTHER_COLOR)


def variant_marker(variant: str) -> str:
    """A marker per variant of a method, in the method's order (they share its color)."""
    method = method_of(variant)
    return ("o", "s", "^")[min(method.variants.index(variant), 2)] if method else "o"


def variant_color(variant: str) -> str:
    """Its method's color; a variant of no method gets one of OTHER_VARIANT_COLORS."""
    method = method_of(variant)
    if method:
        return method_color(method.name)
    others = [name for name in VARIANTS if not method_of(name)]
    return OTHER_VARIANT_COLORS[others.index(variant) % len(OTHER_VARIANT_COLORS)] if variant in others else OTHER_COLOR


def _grid(count: int, columns: int, width: float, height: float):
    """A figure of `count` panels, at most `columns` a row (unused cells hidden), and its axes."""
    columns = min(columns, count)
    rows = max(1, -(-count // columns))
    fig, axes = pyplot().subplots(rows, columns, figsize=(width * columns, height * rows + 1.2), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])


def _nothing(path: Path, what: str) -> Path:
    fig, ax = pyplot().subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, what, ha="center", va="center")
    return save_figure(fig, path)


def _setting_title(setting) -> str:
    return setting.title + ("" if setting.comparable else f"  {NOT_COMPARABLE_MARK}")


def _caveats(settings) -> str:
    """The caveats of the settings shown that are not comparable with the paper, one line each."""
    caveats = dict.fromkeys(f"{NOT_COMPARABLE_MARK} {s.title}: {s.caveat}" for s in settings if s.caveat)
    return "\n".join(caveats)


def forward_pass_panels(curves: list[dict], paper: dict[str, dict]) -> list[tuple]:
    """(setting, k, task, groups) of each accuracy-vs-forward-passes panel, in setting order, k,
    then the paper's task order; `curves`: summary rows with their `dev_curve`."""
    panels: dict[tuple, list[dict]] = {}
    for group in curves:
        panels.setdefault((setting_of(group, paper), int(group["k"]), group["task"]), []).append(group)
    return [(setting, k, task, sorted(groups, key=lambda g: (variant_order(g["variant"]), g["protocol"],
                                                             -g["version"], g["data"])))
            for (setting, k, task), groups in sorted(panels.items(), key=lambda item: (item[0][0].order, item[0][1],
                                                                                       task_order(item[0][2])))]


def forward_passes(group: dict) -> list[int] | None:
    """The training forward passes done at each of a summary row's dev evaluations (its
    `dev_curve` steps x FORWARD_PASSES_PER_STEP of its optimizer); None for a variant that trains
    nothing."""
    per_step = FORWARD_PASSES_PER_STEP.get(group["optimizer"])
    return None if per_step is None else [step * per_step for step in group["dev_curve"][0]]


def _curve_label(group: dict, groups: list[dict]) -> str:
    label = f"{method_label(group['variant'])} ({group['variant']})"
    if sum(g["variant"] == group["variant"] for g in groups) > 1:   # two protocols or data: say which
        label += f" {group['protocol']} v{group['version']} data {short_data(group['data'])}"
    return label


def draw_accuracy_vs_forward_passes(curves: list[dict], paper: dict[str, dict], path: Path) -> Path:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = forward_pass_panels(curves, paper)
    if not panels:
        return _nothing(path, "accuracy vs forward passes: no evaluated run")
    fig, axes = _grid(len(panels), 3, 5.6, 3.9)
    handles = {}
    for ax, (setting, k, task, groups) in zip(axes, panels):
        for group in groups:
            color = variant_color(group["variant"])
            passes, dev = forward_passes(group), group["dev_curve"][1]
            label = _curve_label(group, groups)
            if not dev:
                continue
            if passes is None:   # trains nothing: its dev accuracy, for reference
                handles[label] = ax.axhline(dev[-1], color=color, ls=":", lw=1.2, label=label)
            else:
                handles[label], = ax.plot(passes, dev, marker=variant_marker(group["variant"]), markersize=3.5,
                                          color=color, ls="-" if group["optimizer"] in ZEROTH_ORDER else "--",
                                          label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training forward passes (log): step × 2 (MeZO), × 1 (FT, + 1 backward)", fontsize=7)
        ax.set_ylabel("dev accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"{PAPER_TASKS.get(task, task)} · k={k}\n{_setting_title(setting)}", fontsize=8,
                     color="black" if setting.comparable else "darkred")
    fig.suptitle("Dev accuracy vs training forward passes (mean over seeds of each seed's best-dev run); solid: "
                 "zeroth-order (2 passes a step), dashed: first-order, dotted: no training", fontsize=9)
    caveats = _caveats(p[0] for p in panels)
    fig.legend(handles=list(handles.values()), loc="lower center", ncol=3, fontsize=7, frameon=False,
               title=caveats or None, title_fontsize=7)
    return save_figure(fig, path, rect=(0, 0.06 + 0.02 * (len(handles) // 3 + caveats.count("\n")), 1, 0.97))


def memory_panels(memory_rows: list[dict], paper: dict[str, dict]) -> list[tuple]:
    """(setting, task, rows, paper row) of each memory panel, in setting order then the paper's task
    order; the paper's numbers (tables.paper_memory) ride in each comparable setting, which has a
    panel of each task with paper numbers even where nothing of it was run (the paper's setting is
    shown when no comparable one was)."""
    panels: dict[tuple, list[dict]] = {}
    for row in memory_rows:
        panels.setdefault((setting_of(row, paper), row["task"]), []).append(row)
    for setting in [s for s, _ in panels if s.comparable] or [papers_setting(paper)]:
        for task in PAPER_TASKS:
            if paper_memory(paper, task):
                panels.setdefault((setting, task), [])
    return [(setting, task, sorted(rows, key=lambda r: (variant_order(r["variant"]), r["batch"], r["protocol"],
                                                        -r["version"], r["data"])),
             paper_memory(paper, task) if setting.comparable else None)
            for (setting, task), rows in sorted(panels.items(), key=lambda item: (item[0][0].order,
                                                                                   task_order(item[0][1])))]


def memory_bars(rows: list[dict], paper_row: dict | None) -> list[dict]:
    """The bars of one memory panel: each (variant, batch) row's own training phase (`value`: MiB
    added, None where not measured), then the paper's numbers (MB as printed) with their batch."""
    several = len({(r["protocol"], r["version"], r["data"]) for r in rows}) > 1   # then each label says which
    bars = [{"label": f"{r['variant']} · batch {r['batch']} · {PHASES[r['phase']][0]}"
                      + (f" · {r['protocol']} v{r['version']}" if several else ""),
             "value": r[f"{r['phase']}_mib"], "color": variant_color(r["variant"]), "hatch": ""} for r in rows]
    bars += [{"label": f"paper ({paper_row['source']}) · batch {paper_row['batch']} · {name}",
              "value": paper_row[f"{phase}_mib"], "color": "white", "hatch": "////"}
             for phase, (name, _) in PHASES.items() if paper_row and paper_row[f"{phase}_mib"] is not None]
    return bars


def draw_memory_per_method(memory_rows: list[dict], paper: dict[str, dict], path: Path) -> Path:
    panels = memory_panels(memory_rows, paper)
    if not panels:
        return _nothing(path, "memory per method: no memory measurement")
    fig, axes = _grid(len(panels), 3, 6.0, 4.4)
    for ax, (setting, task, rows, paper_row) in zip(axes, panels):
        bars = memory_bars(rows, paper_row)
        values = [bar["value"] or 0 for bar in bars]
        ax.bar(range(len(bars)), values, 0.7, color=[b["color"] for b in bars], hatch=[b["hatch"] for b in bars],
               edgecolor="black", linewidth=0.5)
        for i, bar in enumerate(bars):
            ax.text(i, values[i], fmt(bar["value"], ",.1f"), ha="center", va="bottom", fontsize=6)
        positive = [value for value in values if value > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
        ax.set_xticks(range(len(bars)), [bar["label"] for bar in bars], fontsize=6, rotation=35, ha="right")
        ax.set_xlim(-0.6, max(len(bars), 5) - 0.4)
        ax.set_ylabel("added over the memory before the phase\n(MiB; the paper's: MB as printed)", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{PAPER_TASKS.get(task, task)} · {_setting_title(setting)}", fontsize=8,
                     color="black" if setting.comparable else "darkred")
    caveats = _caveats(p[0] for p in panels)
    fig.suptitle("Memory each variant's own training phase adds (MeZO step, MeZO-Adam step, first-order step; "
                 "inference for variants that train nothing), mean over runs, by the batch it was measured on"
                 + (f"\n{caveats}" if caveats else ""), fontsize=8)
    return save_figure(fig, path, rect=(0, 0, 1, 1 - 0.1 * (2 + caveats.count("\n")) / fig.get_figheight()))


def write_figures(curves: list[dict], memory_rows: list[dict], paper: dict[str, dict], out_dir: Path) -> list[Path]:
    """accuracy_vs_forward_passes.png and memory_per_method.png in out_dir; returns their paths."""
    return [draw_accuracy_vs_forward_passes(curves, paper, out_dir / FILES[0]),
            draw_memory_per_method(memory_rows, paper, out_dir / FILES[1])]
