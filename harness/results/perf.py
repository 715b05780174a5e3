"""Performance results: pytest-benchmark JSON from `nox -s perf`, stored per machine, and the
performance table of `mezo-bench report`.

A stored run is pytest-benchmark's own JSON (machine info, commit, every benchmark's stats and
extra_info), written to results/perf/<machine>/<UTC time>_<commit>.json. The table takes the
newest run of each machine and, for every case (model, dtype, device) in it, the *median*
round of each benchmark; all ratios compare benchmarks of the same run, model and batch.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_output_dir
from harness.core.text import slug
from harness.results.figures import pyplot, save_figure

KINDS = ("forward", "forward_bucketed", "mezo_step", "mezo_step_bucketed", "reference_step", "perturb_first", "perturb_repeat",
         "peak_memory")

# The targets: (case model, device) -> limit; checked against measured values only.
OVERHEAD_TARGETS = {("random-init:roberta-base", "cpu"): 1.15, ("random-init:roberta-large", "cuda"): 1.10}
SPEEDUP_TARGET = 2.0
MEMORY_RATIO_TARGET = 1.05

TIME_COLUMNS = {
    "machine": "machine",
    "case": "case",
    "forward_ms": "forward ms",
    "step_ms": "MeZO step ms",
    "overhead_factor": "overhead (step / 2 fwd)",
    "reference_step_ms": "reference step ms",
    "speedup_vs_reference": "speedup vs reference",
    "non_forward_speedup": "speedup outside forwards",
    "bucketed_speedup_vs_reference": "speedup vs reference, bucketed step",
}
THROUGHPUT_COLUMNS = {
    "machine": "machine",
    "case": "case",
    "perturb_first_gbps": "perturb GB/s (1st pass)",
    "perturb_repeat_gbps": "perturb GB/s (2nd/3rd)",
    "bandwidth_gbps": "copy bandwidth GB/s",
    "tokens_per_s_padded": "tokens/s padded",
    "tokens_per_s_bucketed": "tokens/s bucketed",
    "mezo_peak_over_inference": "peak mem MeZO / inference",
    "reference_peak_over_inference": "peak mem reference / inference",
}


def machine_label(machine_info: dict) -> str:
    extra = machine_info.get("mezo_bench", {})
    if extra.get("cuda_device"):
        return f"{extra['cuda_device']} (CUDA)"
    cpu = machine_info.get("cpu", {})
    return f"{cpu.get('brand_raw', 'unknown CPU')} ({cpu.get('count', '?')} cores)"


def load_benchmark_json(path: Path) -> dict:
    """A pytest-benchmark JSON of benchmarks/perf (machine and commit info, datetime, at least one
    benchmark, each with its `kind` in extra_info); anything else is refused, naming the file and
    the field, before anything is written."""
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessError(f"{path}: not a readable pytest-benchmark JSON file ({error})") from None
    if not isinstance(run, dict):
        raise HarnessError(f"{path}: not pytest-benchmark JSON: a {type(run).__name__}, not an object")
    for field in ("machine_info", "commit_info", "benchmarks", "datetime"):
        if field not in run:
            raise HarnessError(f"{path}: not pytest-benchmark JSON: field {field!r} is missing")
    for field in ("machine_info", "commit_info"):
        if not isinstance(run[field], dict):
            raise HarnessError(f"{path}: field {field!r} must be a JSON object, got {type(run[field]).__name__}")
    if not isinstance(run["benchmarks"], list) or not run["benchmarks"]:
        raise HarnessError(f"{path}: holds no benchmarks (were they all skipped or deselected?)")
    for bench in run["benchmarks"]:
        if "kind" not in bench.get("extra_info", {}):
            raise HarnessError(f"{path}: benchmark {bench.get('name')!r} has no extra_info 'kind'; "
                               f"only benchmarks/perf runs can be stored")
    try:
        datetime.fromisoformat(run["datetime"])
    except (TypeError, ValueError):
        raise HarnessError(f"{path}: field 'datetime' must be an ISO 8601 time, got {run['datetime']!r}") from None
    return run


def store_run(json_path: Path, out_root: Path) -> Path:
    """Copy a benchmark run to out_root/<machine>/<UTC time>_<commit>.json (atomically)."""
    check_output_dir(out_root, "--out")
    run = load_benchmark_json(json_path)
    commit = run["commit_info"].get("id") or "nocommit"
    dirty = "-dirty" if run["commit_info"].get("dirty") else ""
    stamp = datetime.fromisoformat(run["datetime"]).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = out_root / slug(machine_label(run["machine_info"]), lower=True, keep="")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / f"{stamp}_{commit[:12]}{dirty}.json",
                             json.dumps(run, indent=1, sort_keys=True) + "\n")


def latest_runs(root: Path) -> list[tuple[Path, dict]]:
    """The newest stored run of each machine folder under root."""
    if not root.is_dir():
        return []
    newest = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.json"))
        if files:
            newest.append((files[-1], load_benchmark_json(files[-1])))
    return newest


def _format(column: str, value) -> str:
    if value is None or value != value:   # None or NaN: not measured
        return ""
    if column.endswith("_ms") or column.startswith("tokens"):
        return f"{value:,.1f}"
    if column.endswith("_gbps"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(a, b):
    return a / b if a is not None and b else None


def _milliseconds(seconds):
    return seconds * 1e3 if seconds is not None else None


def case_rows(run: dict) -> list[dict]:
    """One row per case of a run: the medians and the ratios between them."""
    label = machine_label(run["machine_info"])
    bandwidth = {bench["extra_info"]["device"]: bench["extra_info"]["bytes_per_round"] / bench["stats"]["median"]
                 for bench in run["benchmarks"] if bench["extra_info"]["kind"] == "bandwidth"}
    cases: dict[str, dict[str, dict]] = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if info["kind"] in KINDS:
            cases.setdefault(info["case"], {})[info["kind"]] = bench
    rows = []
    for case, by_kind in cases.items():
        info = next(iter(by_kind.values()))["extra_info"]

        def median(kind):
            return by_kind[kind]["stats"]["median"] if kind in by_kind else None

        forward, step, reference = median("forward"), median("mezo_step"), median("reference_step")
        non_forward = (step - 2 * forward) if step is not None and forward is not None else None
        reference_non_forward = (reference - 2 * forward) if reference is not None and forward is not None else None
        memory_ratios = by_kind.get("peak_memory", {}).get("extra_info", {}).get("memory", {}).get("ratios", {})
        gbps = {kind: _ratio(by_kind[kind]["extra_info"]["bytes_per_pass"], median(kind)) if kind in by_kind else None
                for kind in ("perturb_first", "perturb_repeat")}
        rows.append({
            "machine": label,
            "case": case,
            "model": info["model"], "dtype": info["dtype"], "device": info["device"],
            "commit": run["commit_info"].get("id"), "dirty": run["commit_info"].get("dirty"),
            "datetime": run["datetime"],
            "num_parameters": info["num_parameters"],
            "real_tokens": info["real_tokens"], "padded_tokens": info["padded_tokens"],
            "forward_ms": _milliseconds(forward),
            "forward_bucketed_ms": _milliseconds(median("forward_bucketed")),
            "step_ms": _milliseconds(step),
            "reference_step_ms": _milliseconds(reference),
            "overhead_factor": _ratio(step, 2 * forward) if forward is not None else None,
            "speedup_vs_reference": _ratio(reference, step),
            "bucketed_step_ms": _milliseconds(median("mezo_step_bucketed")),
            "bucketed_speedup_vs_reference": _ratio(reference, median("mezo_step_bucketed")),
            "non_forward_speedup": (_ratio(reference_non_forward, non_forward)
                                    if non_forward is not None and non_forward > 0 else None),
            "perturb_first_gbps": _ratio(gbps["perturb_first"], 1e9),
            "perturb_repeat_gbps": _ratio(gbps["perturb_repeat"], 1e9),
            "bandwidth_gbps": _ratio(bandwidth.get(info["device"]), 1e9),
            "tokens_per_s_padded": _ratio(info["real_tokens"], forward),
            "tokens_per_s_bucketed": _ratio(info["real_tokens"], median("forward_bucketed")),
            "mezo_peak_over_inference": memory_ratios.get("mezo_over_inference"),
            "reference_peak_over_inference": memory_ratios.get("reference_mezo_over_inference"),
        })
    return rows


def target_checks(rows: list[dict]) -> list[dict]:
    """The issue's targets against each measured row: met / not met (never guessed)."""
    checks = []
    for row in rows:
        limit = OVERHEAD_TARGETS.get((row["model"], row["device"]))
        if limit is not None and row["overhead_factor"] is not None:
            checks.append({"machine": row["machine"], "case": row["case"], "target": f"overhead factor <= {limit}",
                           "measured": row["overhead_factor"], "met": row["overhead_factor"] <= limit})
        if row["speedup_vs_reference"] is not None:
            checks.append({"machine": row["machine"], "case": row["case"],
                           "target": f"step >= {SPEEDUP_TARGET}x faster than reference-style",
                           "measured": row["speedup_vs_reference"],
                           "met": row["speedup_vs_reference"] >= SPEEDUP_TARGET})
        if row["mezo_peak_over_inference"] is not None:
            checks.append({"machine": row["machine"], "case": row["case"],
                           "target": f"MeZO step peak memory <= {MEMORY_RATIO_TARGET} x inference",
                           "measured": row["mezo_peak_over_inference"],
                           "met": row["mezo_peak_over_inference"] <= MEMORY_RATIO_TARGET})
    return checks


def write_perf_report(perf_root: Path, out_dir: Path) -> list[Path]:
    """perf.md and perf.csv in out_dir from the newest run of each machine; [] when none."""
    import pandas as pd

    runs = latest_runs(perf_root)
    if not runs:
        return []
    rows = [row for _, run in runs for row in case_rows(run)]
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "perf.csv", out_dir / "perf.md"

    def shown(columns: dict) -> str:
        part = table[list(columns)].copy()
        for column in part.columns:
            if column not in ("machine", "case"):
                part[column] = part[column].map(lambda v, c=column: _format(c, v))
        return part.rename(columns=columns).to_markdown(index=False, disable_numparse=True)

    lines = ["# Performance (`nox -s perf`)", "",
             "Medians of pytest-benchmark rounds; every ratio compares benchmarks of one run on one model",
             "and batch (64 SST-2 prompts). Empty cells were not measured. Sources:", ""]
    lines += [f"- {machine_label(run['machine_info'])}: `{perf_root.name}/{path.relative_to(perf_root).as_posix()}` (commit "
              f"{(run['commit_info'].get('id') or '?')[:12]}{' + uncommitted changes' if run['commit_info'].get('dirty') else ''})"
              for path, run in runs]
    lines += ["", "## Time per step", "", shown(TIME_COLUMNS), "",
              "Overhead = MeZO step / (2 x forward). Speedup outside forwards = (reference step - 2 x forward)",
              "/ (MeZO step - 2 x forward). The bucketed step runs the same rows in length buckets.", "",
              "## Throughput and memory", "", shown(THROUGHPUT_COLUMNS), "",
              "Perturbation GB/s counts one read and one write of every parameter per pass (z is drawn into",
              "a small buffer); copy bandwidth is `dst.copy_(src)` on 512 MiB (CPU) or 2 GiB (CUDA).",
              "Tokens/s counts real tokens of one forward. Peak memory: harness.measure.memory (CPU: a fresh",
              "process per phase, peak RSS including weights and runtime).", "", "## Targets", ""]
    checks = target_checks(rows)
    if checks:
        lines.append(pd.DataFrame(checks).assign(met=lambda df: df["met"].map({True: "met", False: "not met"}))
                     .to_markdown(index=False, floatfmt=".3f"))
    missing = [f"overhead factor <= {limit} for {model} on {device}"
               for (model, device), limit in OVERHEAD_TARGETS.items()
               if not any(r["model"] == model and r["device"] == device and r["overhead_factor"] is not None
                          for r in rows)]
    if missing:
        lines += ["", "Not measured (no run on such a machine): " + "; ".join(missing) + "."]
    figure_path = _step_figure(rows, out_dir / "perf.png")
    lines += ["", "![Where a step's time goes](perf.png)"]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    atomic_write_text(csv_path, table.to_csv(index=False))
    return [md_path, csv_path, figure_path]


def _step_figure(rows: list[dict], path: Path) -> Path:
    """Per case: the MeZO step, the bucketed step and the reference-style step, each split
    into its forward passes and everything else (median times, relative to the MeZO step)."""
    plt = pyplot()
    cases = [row for row in rows if row["step_ms"] is not None and row["forward_ms"] is not None]
    fig, axes = plt.subplots(1, max(len(cases), 1), figsize=(4.2 * max(len(cases), 1), 3.6), squeeze=False)
    for ax, row in zip(axes[0], cases):
        bars = [("MeZO step", row["step_ms"], 2 * row["forward_ms"]),
                ("bucketed step", row["bucketed_step_ms"],
                 2 * row["forward_bucketed_ms"] if row["forward_bucketed_ms"] is not None else None),
                ("reference-style", row["reference_step_ms"], 2 * row["forward_ms"])]
        bars = [(label, total, forwards) for label, total, forwards in bars if total is not None and forwards is not None]
        labels = [label for label, _, _ in bars]
        forwards = [f / row["step_ms"] for _, _, f in bars]
        rest = [(total - f) / row["step_ms"] for _, total, f in bars]
        ax.bar(labels, forwards, color="#4c72b0", label="2 forward passes")
        ax.bar(labels, rest, bottom=forwards, color="#dd8452", label="parameter passes + other")
        ax.set_ylabel("time / MeZO step")
        ax.set_title(f"{row['case']}\n{row['machine']} · MeZO step {row['step_ms']:,.1f} ms", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=7)
    if not cases:
        axes[0][0].text(0.5, 0.5, "no case with forward and step timings", ha="center")
    return save_figure(fig, path)
