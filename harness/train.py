"""The MeZO training loop, top to bottom (compare with the paper's Algorithm 1).

Evaluation as published: dev accuracy every `eval_every` steps (and at the last step);
the best-dev parameters are kept on the CPU; the caller tests that checkpoint.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.mezo import MeZO
from harness.objective import LabelWordObjective
from harness.prompt import Batch, EpochSampler

MAX_CURVE_POINTS = 10_000


@dataclass
class TrainResult:
    curve_stride: int
    curve_steps: list[int] = field(default_factory=list)
    loss_plus: list[float] = field(default_factory=list)
    loss_minus: list[float] = field(default_factory=list)
    projected_grad: list[float] = field(default_factory=list)
    dev_history: list[dict] = field(default_factory=list)   # {"step", "dev_accuracy"}
    best_dev_accuracy: float = float("-inf")
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


def curve_stride(steps: int) -> int:
    return max(1, -(-steps // MAX_CURVE_POINTS))


def cpu_state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def train_mezo(*, objective: LabelWordObjective, trainable: list[tuple[str, torch.Tensor]],
               sampler: EpochSampler, dev_batches: list[Batch], steps: int, lr: float, eps: float,
               weight_decay: float, eval_every: int, seed: int, progress: bool = True) -> TrainResult:
    engine = MeZO(trainable, lr=lr, eps=eps, weight_decay=weight_decay)
    step_seeds = np.random.default_rng(seed)   # one seed per step, drawn from the run's RNG
    result = TrainResult(curve_stride=curve_stride(steps))
    # In a log file (no TTY) redraw every 5 s rather than every step.
    bar = tqdm(range(1, steps + 1), desc="MeZO", unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)
    started = time.perf_counter()

    for step in bar:
        batch = sampler.next()
        step_result = engine.step(lambda: float(objective.loss(batch)),
                                  seed=int(step_seeds.integers(0, 2**31 - 1)))

        if step % result.curve_stride == 0 or step == 1:
            result.curve_steps.append(step)
            result.loss_plus.append(step_result.loss_plus)
            result.loss_minus.append(step_result.loss_minus)
            result.projected_grad.append(step_result.projected_grad)

        if step % eval_every == 0 or step == steps:
            eval_started = time.perf_counter()
            dev_accuracy = objective.accuracy(dev_batches)
            result.dev_history.append({"step": step, "dev_accuracy": dev_accuracy})
            if dev_accuracy > result.best_dev_accuracy:   # ties keep the earlier checkpoint
                result.best_dev_accuracy, result.best_step = dev_accuracy, step
                result.best_state = cpu_state_copy(objective.model)
            result.eval_seconds += time.perf_counter() - eval_started
            bar.set_postfix(loss=f"{step_result.loss_plus:.4f}", dev=f"{dev_accuracy:.3f}", refresh=False)
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{step_result.loss_plus:.4f}", refresh=False)

    result.train_seconds = time.perf_counter() - started - result.eval_seconds
    return result
