"""`mezo-bench report`: aggregate records like the paper and draw the figures.

Aggregation: records are grouped by what they are, not what they are called: task, protocol
hash, source data (harness.results.selection.data_identity), hardware class, model, variant and
k; the protocol's name, version and profile are shown beside the hash (first 8 hex digits in
summary.md; full in summary.csv), and records whose names and hashes disagree are refused
(selection.check_identities). In each group the best-dev grid point of every seed is selected
(selection.best_dev_per_seed), and each row reports the mean and population std (ddof=0) over
seeds of those runs. Every figure names on its face the protocol, profile, hardware and model
that produced it (and the data, where one figure holds runs of several). The paper's values
come from benchmarks/paper.toml by task, variant, k and metric. From the same summary rows,
harness.results.table18 writes Table 18 with every task side by side (table18.md, table18.csv,
table18_accuracy.png).
"""

from __future__ import annotations

from pathlib import Path

from harness.core.files import atomic_write_text
from harness.core.stats import mean, population_std
from harness.core.text import slug
from harness.protocol.variants import VARIANTS
from harness.results.figures import pyplot, save_figure
from harness.results.paper import entry_variants
from harness.results.selection import (
    best_dev_per_seed,
    check_identities,
    data_identity,
    hardware_class,
    selectable,
)
from harness.results.table18 import write_table18

# hash: the protocol hash of the (profile, variant); data: data_identity (the source files' sha256)
GROUP_KEYS = ("task", "protocol", "version", "profile", "hardware", "model", "variant", "k", "hash", "data")
SELECTION_KEYS = ("task", "protocol", "version", "profile", "hardware", "model")
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
    """The summary table as shown in summary.md: hash and data to 8 hex digits each."""
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

        def phase(name, field="excess_bytes"):
            values = _values(selected, lambda r: r["memory"]["phases"][name][field])
            return mean(values) / MIB if values else None

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
            "mem_inference_excess_mib": phase("inference"),
            "mem_mezo_excess_mib": phase("mezo_step"),
            "mem_first_order_excess_mib": phase("first_order_step"),
            "mem_peak_mezo_over_inference": mean(_values(selected, lambda r: r["memory"]["ratios"]["mezo_over_inference"])),
            "mem_peak_first_order_over_mezo": mean(_values(selected, lambda r: r["memory"]["ratios"]["first_order_over_mezo"])),
            "steps_per_s": mean(_values(selected, lambda r: r["throughput"]["steps_per_second"])),
            "tokens_per_s": mean(_values(selected, lambda r: r["throughput"].get("tokens_per_second"))),
            "padding_pct": mean(_values(selected, lambda r: 100 * r["throughput"]["padding_fraction"])),
            "backend": selected[0]["variant"]["backend"],
            "method": VARIANTS[group["variant"]].label if group["variant"] in VARIANTS else "",
            "paper_test_acc": paper_test["mean"] if paper_test else None,
            "paper_test_std": paper_test.get("std") if paper_test else None,
            "paper_zero_shot_acc": paper_zero["mean"] if paper_zero else None,
        })
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(GROUP_KEYS))   # no evaluated group


def _title(selection: dict, what: str) -> str:
    model = selection["model"]
    caveat = "  (random-init weights: not comparable to the paper)" if model.startswith("random-init:") else ""
    return (f"{what}\n{selection['task']} · {selection['protocol']} v{selection['version']} · profile "
            f"{selection['profile']} · {selection['hardware']} · model {model}{caveat}")


def unevaluated_groups(records: list[dict]) -> list[str]:
    """Groups none of whose runs reached a dev evaluation (every one diverged before it): they
    have no accuracy, so the summary has no row for them; said, not dropped silently."""
    return [" ".join(f"{name}={value}" for name, value in zip(GROUP_KEYS, key[:-2]))
            + f" hash={key[-2][:8]} data={data_identity(runs[0], 8)}: {len(runs)} run(s) diverged"
            for key, runs in _groups(records).items() if not best_dev_per_seed(runs)]


def write_report(records: list[dict], paper: dict[str, dict], out_dir: Path) -> list[Path]:
    """summary.csv and summary.md for all groups, five figures per selection (task, protocol
    version, profile, hardware, model), and Table 18 across tasks (table18.md, table18.csv,
    table18_accuracy.png). Returns the files written."""
    plt = pyplot()
    table = summarize(records, paper)   # refuses inconsistent records before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "summary.csv", out_dir / "summary.md"]
    atomic_write_text(written[0], table.to_csv(index=False))
    atomic_write_text(written[1], "# Summary\n\nBest-dev grid point per seed; mean and population std over seeds. "
                          "Accuracies in %, memory excess in MiB.\n\n"
                          + _short(table).to_markdown(index=False, floatfmt=".4g") + "\n"
                          + "".join(f"\nNo evaluated run (not in the table): {group}\n"
                                    for group in unevaluated_groups(records)))
    written += write_table18(table, paper, out_dir)

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
            steps = [h["step"] for h in runs[0]["metrics"]["dev_history"]]
            dev = [mean([100 * r["metrics"]["dev_history"][i]["dev_accuracy"] for r in runs])
                   for i in range(len(steps))]
            line, = ax.plot([0] + steps, [mean([100 * r["metrics"]["zero_shot_dev_accuracy"] for r in runs])] + dev,
                            marker="o", label=f"{row['variant']} k={row['k']}{data_name} dev")
            ax.scatter([max(steps)], [row["test_acc_mean"]], marker="*", s=150, color=line.get_color(),
                       label=f"{row['variant']} k={row['k']}{data_name} test (best-dev ckpt)")
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(_title(selection, "Dev accuracy vs step (mean over seeds); ★ test of the best-dev checkpoint"), fontsize=9)
        written.append(save_figure(fig, folder / "accuracy_vs_step.png"))

        # 2. final test accuracy beside the paper's
        fig, ax = plt.subplots(figsize=(9, 5))
        ax.bar([i - 0.2 for i in x], rows["test_acc_mean"], 0.4, yerr=rows["test_acc_std"], capsize=3, label="this run")
        paper_mean = rows["paper_test_acc"].astype(float)
        ax.bar([i + 0.2 for i in x], paper_mean, 0.4, yerr=rows["paper_test_std"].astype(float).fillna(0), capsize=3,
               label="paper (RoBERTa-large)", color="tab:gray")
        ax.set_xticks(list(x), labels, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("test accuracy (%)")
        ax.axhline(50, color="k", lw=0.5, ls=":")
        ax.legend()
        ax.set_title(_title(selection, "Test accuracy, mean ± std over seeds, beside the paper"), fontsize=9)
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
        for offset, (column, name) in zip((-0.27, 0, 0.27), (("mem_inference_excess_mib", "inference forward"),
                                                              ("mem_mezo_excess_mib", "MeZO step"),
                                                              ("mem_first_order_excess_mib", "first-order step"))):
            ax.bar([i + offset for i in x], rows[column].astype(float), 0.27, label=name)
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

