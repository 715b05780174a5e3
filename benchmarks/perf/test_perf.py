"""Performance microbenchmarks (pytest-benchmark), run by `nox -s perf`.

Every benchmark of a case times the same model and batch (see conftest.py) and records its
`kind` in extra_info; `mezo-bench report` turns the medians into ratios: overhead factor =
MeZO step / (2 x forward), speedup = reference-style step / MeZO step, and so on.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.measure.memory import measure_memory
from harness.zo.reference_step import reference_style_step


def _run(benchmark, workload, kind: str, function, *, rounds: int | None = None, warmup_rounds: int = 1,
         **extra) -> None:
    benchmark.group = workload.case.id
    benchmark.extra_info.update(workload.info, kind=kind, **extra)
    benchmark.pedantic(function, rounds=rounds or workload.case.rounds, warmup_rounds=warmup_rounds, iterations=1)


def _synchronised(device: torch.device, function):
    if device.type != "cuda":
        return function

    def run():
        function()
        torch.cuda.synchronize(device)
    return run


def test_forward(benchmark, workload):
    """One inference forward of the objective on the batch, padded to its longest row: the unit of cost."""
    with torch.no_grad():
        _run(benchmark, workload, "forward", workload.loss)


def test_forward_bucketed(benchmark, workload):
    """The same rows split into length buckets, each padded to its own longest row."""
    with torch.no_grad():
        _run(benchmark, workload, "forward_bucketed", lambda: float(workload.objective.loss_over(workload.buckets)))


def test_mezo_step(benchmark, workload):
    """One MeZO step as train_mezo runs it (a new seed each round): 3 parameter passes + 2 forwards."""
    seeds = itertools.count(1000)
    _run(benchmark, workload, "mezo_step", lambda: workload.engine.step(workload.loss, seed=next(seeds)))


def test_mezo_step_bucketed(benchmark, workload):
    """The same step with length-bucketed forwards (harness.tasks.batching.split_by_length): what bucketing
    would buy; protocol v2 trains on batches padded to their longest row."""
    seeds = itertools.count(1000)
    loss = lambda: float(workload.objective.loss_over(workload.buckets))   # noqa: E731
    _run(benchmark, workload, "mezo_step_bucketed", lambda: workload.engine.step(loss, seed=next(seeds)))


def test_reference_style_step(benchmark, workload):
    """The reference code's step on the same model and batch: 4 passes, reseeded torch.normal per tensor."""
    seeds = itertools.count(1000)
    _run(benchmark, workload, "reference_step",
         lambda: reference_style_step(workload.trainable, workload.loss, seed=next(seeds), lr=workload.lr,
                                      eps=workload.eps, weight_decay=workload.weight_decay))


def test_perturbation_pass_first(benchmark, workload):
    """p += eps*z over all parameters for a new seed: the step's first pass (draws in order)."""
    seeds = itertools.count(5000)
    device = workload.batch.input_ids.device
    _run(benchmark, workload, "perturb_first",
         _synchronised(device, lambda: workload.engine.perturb(next(seeds), workload.eps)),
         bytes_per_pass=2 * workload.info["parameter_bytes"])


def test_perturbation_pass_repeat(benchmark, workload):
    """The same seed again: the step's second and third passes (redrawn on all workers on CPU)."""
    signs = itertools.cycle((-1.0, 1.0))
    device = workload.batch.input_ids.device
    workload.engine.perturb(4999, workload.eps)
    _run(benchmark, workload, "perturb_repeat",
         _synchronised(device, lambda: workload.engine.perturb(4999, next(signs) * workload.eps)),
         bytes_per_pass=2 * workload.info["parameter_bytes"])


def test_peak_memory(benchmark, workload):
    """Peak memory of the inference forward, a MeZO step and a reference-style step (harness.measure.memory:
    a fresh child process per phase on CPU, the allocator's peak on CUDA)."""
    memory = {}

    def measure():
        memory.update(measure_memory(workload.objective, workload.trainable, workload.batch, lr=workload.lr,
                                     eps=workload.eps, weight_decay=workload.weight_decay, dropout=False,
                                     phases=("inference", "mezo_step", "reference_mezo_step")))

    _run(benchmark, workload, "peak_memory", measure, rounds=1, warmup_rounds=0)
    assert "error" not in memory, memory.get("error")
    benchmark.extra_info["memory"] = memory


BANDWIDTH_BYTES = {"cpu": 512 * 2**20, "cuda": 2 * 2**30}


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)])
def test_memory_bandwidth(benchmark, device):
    """dst.copy_(src) over large fp32 buffers: the device's achievable bandwidth (read + write)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    size = BANDWIDTH_BYTES[device]
    source = torch.ones(size // 4, device=device)
    target = torch.zeros_like(source)
    benchmark.group = f"bandwidth-{device}"
    benchmark.extra_info.update(kind="bandwidth", device=device, bytes_per_round=2 * size)
    benchmark.pedantic(_synchronised(torch.device(device), lambda: target.copy_(source)), rounds=20,
                       warmup_rounds=2, iterations=1)
