"""`mezo-bench report`: aggregate records like the paper and draw the figures.

Aggregation: records are grouped by what they are, not what they are called: task, protocol
hash, source data (harness.results.selection.data_identity), hardware class, model, variant and
k; the protocol's name, version and profile are shown beside the hash (first 8 hex digits in
the markdown tables; full in the CSVs), and records whose names and hashes disagree are refused
(selection.check_identities). In each group the best-dev grid point of every seed is selected
(selection.best_dev_per_seed), and each row reports the mean and population std (ddof=0) over
seeds of those runs: summary.csv has every column of every row. Memory does not depend on which
grid point won: memory_summary groups every run with a memory measurement by the batch it was
measured on instead of k. From these rows harness.results.tables writes the readable tables
(summary.md: identity and accuracy; sparsity.md, throughput.md, memory.md: one measurement each),
harness.results.table18 the paper's Table 18 with every task side by side, and
harness.results.figures the report's figures (accuracy vs forward passes, memory per method);
write_report also draws five figures per selection (task, protocol version, profile, hardware,
model). Every figure names on its face the protocol, profile, hardware and model that produced
it (and the data, where one figure holds runs of several). The paper's values come from
benchmarks/paper.toml by task, variant, k and metric.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.files import atomic_write_text
from harness.core.stats import mean, population_std
from harness.core.text import slug
from harness.protocol.settings import standin_scope
from harness.protocol.variants import VARIANTS
from harness.results.figures import pyplot, save_figure, write_figures
from harness.results.paper import entry_variants, setting_of
from harness.results.progress import progress_rows
from harness.results.progress import to_markdown as progress_markdown
from harness.results.selection import (
    best_dev_per_seed,
    check_identities,
    data_identity,
    grid_point,
    grid_points,
    hardware_class,
    missing_grid_points,
    selectable,
)
from harness.results.table18 import write_table18
from harness.results.tables import PHASES, TRAINING_PHASE, write_tables

# hash: the protocol hash of the (profile, variant); data: data_identity (the source files' sha256)
GROUP_KEYS = ("task", "protocol", "version", "profile", "hardware", "model", "variant", "k", "hash", "data")
SELECTION_KEYS = ("task", "protocol", "version", "profile", "hardware", "model")
# memory_summary's groups: GROUP_KEYS with the batch memory was measured on in place of k
MEMORY_KEYS = ("task", "protocol", "version", "profile", "hardware", "model", "variant", "batch", "hash", "data")
MIB = 2**20


def _group_key(record: dict) -> tuple:
    """GROUP_KEYS of a record. Name, version and profile add nothing to the hash (one hash per
    name, version, profile and variant: check_identities); they are there to be read."""
    return (record["task"], record["protocol"]["name"], record["protocol"]["version"], record["protocol"]["profile"],
            hardware_class(record), record["model"]["id"], record["variant"]["name"], record["k"],
            record["protocol"]["hash"], data_identity(record))


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    """The selectable records by _group_key, in a stable order."""
    groups: dict[tuple, list[dict]] = {}
    for record in selectable(records):
        groups.setdefault(_group_key(record), []).append(record)
    return dict(sorted(groups.items(), key=lambda item: tuple(str(part) for part in item[0])))


def _short(table):
    """The summary table with hash and data to 8 hex digits each (for figure labels)."""
    return table.assign(hash=table["hash"].str[:8],
                        data=table["data"].str.replace(r"([0-9a-f]{8})[0-9a-f]{56}", r"\1", regex=True))


def _values(runs: list[dict], getter) -> list[float]:
    out = []
    for run in runs:
        try:
            value = getter(run)
        except (KeyError, TypeError):
            continue
        if value is not None:
            out.append(value)
    return out


def _mean_mib(runs: list[dict], phase: str, field: str = "excess_bytes") -> float | None:
    """A memory phase's field, mean over the runs that measured it, in MiB; None where none did."""
    values = _values(runs, lambda r: r["memory"]["phases"][phase][field])
    return mean(values) / MIB if values else None


def _paper_entry(paper: dict[str, dict], task: str, variant: str, k: int | None, metric: str) -> dict | None:
    """The paper's number for a group: same task, a variant it names, metric and k (or no k);
    never a fewer-steps ablation."""
    for entry in paper.values():
        if (entry["task"] == task and variant in entry_variants(entry) and entry["metric"] == metric
                and entry.get("k") in (None, k) and "steps" not in entry):
            return entry
    return None


def summarize(records: list[dict], paper: dict[str, dict]):
    """One row per group: accuracy (mean, std over seeds), zero-shot, sparsity, memory,
    throughput of the best-dev run of each seed, beside the paper's value."""
    import pandas as pd

    check_identities(records)
    rows = []
    for key, runs in _groups(records).items():
        selected = best_dev_per_seed(runs)
        if not selected:   # every run diverged before its first evaluation: listed by unevaluated_groups
            continue
        group = dict(zip(GROUP_KEYS, key))
        tests = [100 * r["metrics"]["test_accuracy"] for r in selected]
        paper_test = _paper_entry(paper, group["task"], group["variant"], group["k"], "test_accuracy")
        paper_zero = _paper_entry(paper, group["task"], group["variant"], group["k"], "zero_shot_accuracy")

        grid = runs[0]["protocol"].get("grid")
        missing = missing_grid_points(runs)

        rows.append({
            **group,
            "seeds": len(selected),
            "runs": len(runs),
            "diverged": sum(r["status"] == "diverged" for r in runs),   # still points of the grid
            "test_acc_mean": mean(tests),
            "test_acc_std": population_std(tests),
            "zero_shot_acc_mean": mean(_values(selected, lambda r: 100 * r["metrics"]["zero_shot_test_accuracy"])),
            "zero_grad_pct": mean(_values(selected, lambda r: 100 * r["sparsity"]["zero_fraction"])),
            "tiny_grad_pct": mean(_values(selected, lambda r: 100 * r["sparsity"]["tiny_fraction"])),
            "mean_abs_grad": mean(_values(selected, lambda r: r["sparsity"]["mean_abs"])),
            "mem_inference_excess_mib": _mean_mib(selected, "inference"),
            "mem_mezo_excess_mib": _mean_mib(selected, "mezo_step"),
            "mem_first_order_excess_mib": _mean_mib(selected, "first_order_step"),
            "mem_peak_mezo_over_inference": mean(_values(selected, lambda r: r["memory"]["ratios"]["mezo_over_inference"])),
            "mem_peak_first_order_over_mezo": mean(_values(selected, lambda r: r["memory"]["ratios"]["first_order_over_mezo"])),
            "steps_per_s": mean(_values(selected, lambda r: r["throughput"]["steps_per_second"])),
            "tokens_per_s": mean(_values(selected, lambda r: r["throughput"]["tokens_per_second"])),
            "padding_pct": mean(_values(selected, lambda r: 100 * r["throughput"]["padding_fraction"])),
            "backend": selected[0]["variant"]["backend"],
            "method": VARIANTS[group["variant"]].label if group["variant"] in VARIANTS else "",
            "paper_test_acc": paper_test["mean"] if paper_test else None,
            "paper_test_std": paper_test.get("std") if paper_test else None,
            "paper_zero_shot_acc": paper_zero["mean"] if paper_zero else None,
            # columns added with the readable tables (appended: machines may read columns by position)
            "mem_mezo_adam_excess_mib": _mean_mib(selected, "mezo_adam_step"),
            "optimizer": selected[0]["variant"]["optimizer"],
            "steps": selected[0]["hyperparameters"]["steps"],
            # the seeds each kind of measurement is over (a mean above covers the seeds that have it)
            "sparsity_seeds": sum(bool(r.get("sparsity")) for r in selected),
            "tiny_threshold": next((r["sparsity"]["tiny_threshold"] for r in selected if r.get("sparsity")), None),
            "memory_seeds": sum("phases" in (r.get("memory") or {}) for r in selected),
            "throughput_seeds": sum(bool(r.get("throughput")) for r in selected),
            # the grid (protocol.grid; None in older records) and its points with no completed or diverged run
            "grid_seeds": len(grid["seeds"]) if grid else None,
            "grid_points": len(grid_points(grid)) if grid else None,
            "missing_points": len(missing) if missing is not None else None,
        })
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(GROUP_KEYS))   # no evaluated group


def memory_batch(record: dict) -> int:
    """Examples of the batch a run measured memory on: its first training batch."""
    return min(record["hyperparameters"]["batch_size"], record["data"]["split_sizes"]["train"])


def memory_summary(records: list[dict]):
    """One row per MEMORY_KEYS group of the runs with a memory measurement (any grid point):
    runs, the variant's own training phase (tables.TRAINING_PHASE), and per phase the excess
    over the memory before it, MiB, mean over the runs that measured it (`<phase>_mib`), and the
    own phase's peak (`peak_mib`)."""
    import pandas as pd

    groups: dict[tuple, list[dict]] = {}
    for record in selectable(records):
        if "phases" in (record.get("memory") or {}):
            key = dict(zip(GROUP_KEYS, _group_key(record)), batch=memory_batch(record))
            groups.setdefault(tuple(key[name] for name in MEMORY_KEYS), []).append(record)
    rows = []
    for key, runs in sorted(groups.items(), key=lambda item: tuple(str(part) for part in item[0])):
        own = TRAINING_PHASE[runs[0]["variant"]["optimizer"]]
        rows.append({**dict(zip(MEMORY_KEYS, key)), "runs": len(runs), "optimizer": runs[0]["variant"]["optimizer"],
                     "phase": own, **{f"{phase}_mib": _mean_mib(runs, phase) for phase in PHASES},
                     "peak_mib": _mean_mib(runs, own, "peak_bytes")})
    return pd.DataFrame(rows, columns=[*MEMORY_KEYS, "runs", "optimizer", "phase", *(f"{p}_mib" for p in PHASES),
                                       "peak_mib"])


def dev_curve(runs: list[dict]) -> tuple[list[int], list[float]]:
    """The steps of the runs' dev evaluations and the dev accuracy (%) at each, mean over the runs
    evaluated at that step (a diverged run stops early)."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for point in run["metrics"]["dev_history"]:
            by_step.setdefault(point["step"], []).append(100 * point["dev_accuracy"])
    steps = sorted(by_step)
    return steps, [mean(by_step[step]) for step in steps]


def with_dev_curves(records: list[dict], summary) -> list[dict]:
    """summarize's rows, each with its `dev_curve`: dev_curve of the best-dev run of each seed."""
    groups = _groups(records)
    return [dict(row, dev_curve=dev_curve(best_dev_per_seed(groups[tuple(row[key] for key in GROUP_KEYS)])))
            for row in summary.to_dict("records")]


def _title(selection: dict, what: str) -> str:
    model = selection["model"]
    scope = standin_scope(model)
    caveat = ("\n(random-init weights: not comparable to the paper)" if model.startswith("random-init:")
              else f"\n({scope})" if scope else "")
    return (f"{what}\n{selection['task']} · {selection['protocol']} v{selection['version']} · profile "
            f"{selection['profile']} · {selection['hardware']} · model {model}{caveat}")


def unevaluated_groups(records: list[dict]) -> list[str]:
    """Groups none of whose runs reached a dev evaluation (every one diverged before it): they
    have no accuracy, so the summary has no row for them; said, not dropped silently."""
    return [" ".join(f"{name}={value}" for name, value in zip(GROUP_KEYS, key[:-2]))
            + f" hash={key[-2][:8]} data={data_identity(runs[0], 8)}: {len(runs)} run(s) diverged"
            for key, runs in _groups(records).items() if not best_dev_per_seed(runs)]


def grid_search_markdown(records: list[dict]) -> str:
    """grid_search.md: for every group whose grid has more than one point per seed (an lr sweep, the
    paper's grid search), each point's best dev accuracy and the step it was reached, per seed, and the
    point selected (best_dev_per_seed, the reference's rule). Dev accuracy only: the choice never
    reads test accuracy, and neither does this table."""
    lines = ["# Grid search: dev accuracy per grid point", "",
             "Each group (task, protocol, profile, hardware, model, variant, k) whose grid has more than one point "
             "per seed: every point's best dev accuracy (%) and the step of it, per seed; **bold**: the point "
             "selected for that seed (the best dev accuracy; ties to the reference's folder order, "
             "harness.results.selection.best_dev_per_seed). Test accuracy is not shown: the selection never reads it.",
             ""]
    found = False
    for key, runs in _groups(records).items():
        grid = runs[0]["protocol"].get("grid")
        if not grid or len(grid_points(grid)) <= len(grid["seeds"]):
            continue
        found = True
        group = dict(zip(GROUP_KEYS, key))
        chosen = {id(run) for run in best_dev_per_seed(runs)}
        lines += [f"## {group['task']} · {group['protocol']} v{group['version']} · profile {group['profile']} · "
                  f"{group['hardware']} · {group['model']} · {group['variant']} · k={group['k']}", "",
                  "| seed | lr | batch | eps | weight decay | steps | best dev accuracy | at step | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        latest: dict[tuple, dict] = {}
        for run in sorted(runs, key=lambda r: r["created_utc"]):
            latest[grid_point(run)] = run
        for point, run in sorted(latest.items()):
            seed, lr, batch, eps, wd = point
            dev = run["metrics"]["best_dev_accuracy"]
            text = "–" if dev is None else f"{100 * dev:.2f}"
            if id(run) in chosen:
                text = f"**{text}**"
            lines.append(f"| {seed} | {lr:g} | {batch} | {eps:g} | {wd:g} | {run['hyperparameters']['steps']:,} | "
                         f"{text} | {run['metrics']['best_step']} | {run['status']} |")
        lines.append("")
    if not found:
        lines.append("No group has a grid of more than one point per seed.")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(records: list[dict], paper: dict[str, dict], out_dir: Path, protocols: list = ()) -> list[Path]:
    """summary.csv (every column) and the readable tables (summary.md, sparsity.md,
    throughput.md, memory.md, memory.csv), Table 18 across tasks (table18.md, table18.csv,
    table18_accuracy.png), the report's figures (accuracy_vs_forward_passes.png,
    memory_per_method.png), grid_search.md, progress.md (the grids of `protocols` the records cover),
    and five figures per selection (task, protocol version, profile, hardware, model). Returns the
    files written."""
    plt = pyplot()
    table = summarize(records, paper)   # refuses inconsistent records before anything is written
    memory = memory_summary(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out_dir / "summary.csv", table.to_csv(index=False))]   # every column, full hashes
    written += write_tables(table, memory, paper, out_dir, unevaluated_groups(records))
    written += write_table18(table, paper, out_dir)
    written.append(atomic_write_text(out_dir / "grid_search.md", grid_search_markdown(records)))
    written.append(atomic_write_text(out_dir / "progress.md", progress_markdown(progress_rows(list(protocols), records))))
    written += write_figures(with_dev_curves(records, table), memory.to_dict("records"), paper, out_dir)

    by_run_group = _groups(records)

    for selection_values, rows in table.groupby(list(SELECTION_KEYS), sort=True):
        selection = dict(zip(SELECTION_KEYS, selection_values))
        folder = out_dir / slug(*selection_values)
        folder.mkdir(exist_ok=True)
        rows = rows.sort_values(["variant", "k", "data"])
        several_data = rows["data"].nunique() > 1     # then every label says which data
        data_names = [f" data {d}" if several_data else "" for d in _short(rows)["data"]]
        labels = [f"{v}\nk={k}{d}" for v, k, d in zip(rows["variant"], rows["k"], data_names)]
        x = range(len(rows))

        # 1. dev accuracy vs step (mean over the selected seeds), zero-shot and test marked
        fig, ax = plt.subplots(figsize=(9, 5))
        for (_, row), data_name in zip(rows.iterrows(), data_names):
            runs = best_dev_per_seed(by_run_group[tuple(row[key] for key in GROUP_KEYS)])
            steps, dev = dev_curve(runs)
            line, = ax.plot([0] + steps, [mean([100 * r["metrics"]["zero_shot_dev_accuracy"] for r in runs])] + dev,
                            marker="o", label=f"{row['variant']} k={row['k']}{data_name} dev")
            ax.scatter([max(steps)], [row["test_acc_mean"]], marker="*", s=150, color=line.get_color(),
                       label=f"{row['variant']} k={row['k']}{data_name} test (best-dev ckpt)")
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(_title(selection, "Dev accuracy vs step (mean over seeds); ★ test of the best-dev checkpoint"), fontsize=9)
        written.append(save_figure(fig, folder / "accuracy_vs_step.png"))

        # 2. final test accuracy beside the paper's (on the paper's model), else beside zero-shot
        fig, ax = plt.subplots(figsize=(9, 5))
        ax.bar([i - 0.2 for i in x], rows["test_acc_mean"], 0.4, yerr=rows["test_acc_std"], capsize=3, label="this run")
        if setting_of(selection, paper).papers_model:
            paper_mean = rows["paper_test_acc"].astype(float)
            ax.bar([i + 0.2 for i in x], paper_mean, 0.4, yerr=rows["paper_test_std"].astype(float).fillna(0), capsize=3,
                   label="paper (RoBERTa-large)", color="tab:gray")
            what = "Test accuracy, mean ± std over seeds, beside the paper"
        else:
            ax.bar([i + 0.2 for i in x], rows["zero_shot_acc_mean"].astype(float), 0.4, color="tab:gray",
                   label="zero-shot (the same model before training)")
            what = "Test accuracy, mean ± std over seeds, beside zero-shot (the paper's numbers: another model)"
        ax.set_xticks(list(x), labels, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("test accuracy (%)")
        ax.axhline(50, color="k", lw=0.5, ls=":")
        ax.set_ylim(0, 118)   # room above 100 for the legend, clear of the bars
        ax.legend(loc="upper center", ncol=2, fontsize=8)
        ax.set_title(_title(selection, what), fontsize=9)
        written.append(save_figure(fig, folder / "accuracy_vs_paper.png"))

        # 3. gradient sparsity
        fig, ax = plt.subplots(figsize=(9, 5))
        ax.bar([i - 0.2 for i in x], rows["zero_grad_pct"].astype(float), 0.4, label="projected_grad == 0")
        ax.bar([i + 0.2 for i in x], rows["tiny_grad_pct"].astype(float), 0.4, label="|projected_grad| < threshold")
        ax.set_xticks(list(x), labels, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("% of MeZO steps")
        ax.set_ylim(0, 105)
        ax.legend()
        ax.set_title(_title(selection, "Gradient sparsity of MeZO's estimates (FT has none)"), fontsize=9)
        written.append(save_figure(fig, folder / "sparsity.png"))

        # 4. memory per phase
        fig, ax = plt.subplots(figsize=(9, 5))
        phases = [(column, name) for column, name in (("mem_inference_excess_mib", "inference forward"),
                                                      ("mem_mezo_excess_mib", "MeZO step"),
                                                      ("mem_mezo_adam_excess_mib", "MeZO-Adam step"),
                                                      ("mem_first_order_excess_mib", "first-order step"))
                  if rows[column].notna().any()]   # the phases some variant here measured
        width = 0.8 / max(1, len(phases))
        for position, (column, name) in enumerate(phases):
            ax.bar([i + (position - (len(phases) - 1) / 2) * width for i in x], rows[column].astype(float), width,
                   label=name)
        ax.set_xticks(list(x), labels, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("memory over the pre-phase baseline (MiB)")
        ax.legend()
        ax.set_title(_title(selection, "Memory per phase on the same batch"), fontsize=9)
        written.append(save_figure(fig, folder / "memory.png"))

        # 5. throughput by backend
        fig, ax = plt.subplots(figsize=(9, 5))
        colors = {backend: f"C{i}" for i, backend in enumerate(sorted(set(rows["backend"])))}
        ax.bar(list(x), rows["tokens_per_s"].astype(float), color=[colors[b] for b in rows["backend"]])
        for backend, color in colors.items():
            ax.bar([], [], color=color, label=f"backend {backend}")
        ax.set_xticks(list(x), labels, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("training tokens/s (real tokens, no padding)")
        ax.legend()
        ax.set_title(_title(selection, "Training throughput per variant and backend"), fontsize=9)
        written.append(save_figure(fig, folder / "throughput.png"))
    return written

