"""`mezo-bench plan`: what a profile's grid costs before any of it runs: runs, steps, forward
passes and, where a stored performance run (results/perf/, `nox -s perf`) measured the same
model, dtype and device, an estimate of device-hours that names the measurement it used.

The estimate scales the measured MeZO step and forward (a 64-prompt SST-2 batch) linearly with
each run's batch size; it counts training steps and dev evaluations, not the zero-shot and test
evaluations (one pass each). The benchmarks run the Hugging Face backend and no first-order
step: other backends and FT runs are not estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from harness.protocol.loading import Protocol
from harness.protocol.variants import ZEROTH_ORDER, get_variant
from harness.results.perf import case_rows, latest_runs

PERF_BATCH = 64        # prompts in the benchmark batch (benchmarks/perf/conftest.py)
PERF_BACKEND = "hf"    # the backend the benchmarks run


@dataclass(frozen=True)
class PlanRow:
    variant: str
    runs: int
    steps: int                  # training steps, all runs
    train_forwards: int         # forward passes of training (MeZO: two per step)
    eval_forwards: int          # dev-evaluation batches, all runs
    hours: float | None         # estimated device-hours, None where nothing was measured
    basis: str                  # the measurement used, or why there is no estimate


def architecture(model: str) -> str:
    """`roberta-large`, `FacebookAI/roberta-large` and `random-init:roberta-large` share one."""
    return model.removeprefix("random-init:").rsplit("/", 1)[-1]


def plan(protocol: Protocol, profile: str, variants: list[str], perf_root: Path, device: str) -> list[PlanRow]:
    protocol.check_profile(profile)
    measured = [row for _, run in latest_runs(perf_root) for row in case_rows(run)]
    rows = []
    for name in variants or protocol.profile_variants[profile]:
        settings = protocol.run_settings(profile, get_variant(name).name)
        optimizer = get_variant(name).optimizer
        mezo = optimizer == "mezo"
        points = settings.grid()
        steps = 0 if optimizer == "none" else settings.steps   # zero-shot and LP take no step
        evaluations = 1 if optimizer == "none" else math.ceil(settings.steps / settings.eval_every)
        labels = len(settings.label_words)   # one word per label
        dev_batches = {k: math.ceil(k * labels / settings.eval_batch_size) for k in settings.k}
        match = next((row for row in measured if architecture(row["model"]) == architecture(settings.model)
                      and row["dtype"] == settings.dtype and row["device"] == device
                      and row["step_ms"] is not None), None)
        hours, basis = None, (f"no stored performance run of {architecture(settings.model)} {settings.dtype} on "
                              f"{device} under {perf_root}")
        if not mezo:
            basis = {"none": "no training steps (one dev evaluation; LP also one pass over the training set)",
                     "mezo-adam": "MeZO-Adam steps are not benchmarked"}.get(optimizer,
                                                                           "first-order steps are not benchmarked")
        elif get_variant(name).backend != PERF_BACKEND:
            basis = f"performance runs measure the Hugging Face backend, not {get_variant(name).backend}"
        elif match is not None:
            seconds = sum(steps * match["step_ms"] / 1e3 * point.batch_size / PERF_BATCH
                          + evaluations * dev_batches[point.k] * match["forward_ms"] / 1e3
                          * settings.eval_batch_size / PERF_BATCH for point in points)
            hours = seconds / 3600
            basis = (f"{match['machine']} {match['case']}: step {match['step_ms']:,.1f} ms, forward "
                     f"{match['forward_ms']:,.1f} ms (commit {str(match['commit'])[:7]}, {match['datetime'][:10]})")
        rows.append(PlanRow(variant=name, runs=len(points), steps=len(points) * steps,
                            train_forwards=len(points) * steps * (2 if optimizer in ZEROTH_ORDER else 1),
                            eval_forwards=sum(evaluations * dev_batches[point.k] for point in points),
                            hours=hours, basis=basis))
    return rows


def to_text(rows: list[PlanRow]) -> str:
    lines = [f"{'variant':<24} {'runs':>5} {'steps':>12} {'train fwd':>12} {'dev batches':>12} {'device-h':>9}  basis"]
    for row in rows:
        hours = f"{row.hours:9.3g}" if row.hours is not None else f"{'-':>9}"
        lines.append(f"{row.variant:<24} {row.runs:>5} {row.steps:>12,} {row.train_forwards:>12,} "
                     f"{row.eval_forwards:>12,} {hours}  {row.basis}")
    known = [row.hours for row in rows if row.hours is not None]
    missing = [row.variant for row in rows if row.hours is None]
    total = f"total: {sum(row.runs for row in rows)} runs, {sum(row.steps for row in rows):,} steps"
    if known:
        total += f"; {sum(known):.2f} device-hours estimated"
    if missing:
        total += f" (not estimated: {', '.join(missing)})"
    return "\n".join(lines + [total])
