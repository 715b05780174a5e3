"""The training loops, each readable top to bottom: MeZO (the paper's Algorithm 1) and
first-order fine-tuning (the FT baseline).

Evaluation as published: dev accuracy every `eval_every` steps (and at the last step);
the best-dev parameters are kept on the CPU; the caller tests that checkpoint.
Time is split into forward, update (perturbations + update for MeZO, backward + optimizer
for FT) and evaluation; on a GPU the clocks are read after synchronising.

MeZO runs every pass in eval mode (no dropout); each step's seed comes from
numpy.random.default_rng(run seed). A non-finite loss stops training (`diverged_at`); the
best-dev checkpoint before it stands. Dev ties keep the earlier step. FT: AdamW on the
cross-entropy, linear decay without warm-up, dropout on in training steps (off for
evaluation), the gradients' global norm clipped to `max_grad_norm` before each step.
Ctrl-C in a loop ends it as TrainingInterrupted, which names the step it stopped in.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.backends.base import cpu_state_copy
from harness.measure.throughput import Clock, Throughput
from harness.recipes.checkpoint import RunCheckpoint
from harness.tasks.batching import Batch, EpochSampler, split_by_length
from harness.tasks.objective import Objective
from harness.zo.mezo import MeZO, MezoStepResult
from harness.zo.mezo_adam import MeZOAdam
from harness.zo.trajectory import Trajectory, replay

MAX_CURVE_POINTS = 10_000


def curve_stride(steps: int) -> int:
    return max(1, -(-steps // MAX_CURVE_POINTS))


def scheduled_lr(base_lr: float, step: int, steps: int, schedule: str) -> float:
    """lr for 1-based `step`: constant, or linear decay to 0 over the run (no warm-up)."""
    return base_lr if schedule == "constant" else base_lr * (1.0 - (step - 1) / steps)


@dataclass
class TrainResult:
    curve_stride: int
    curve: dict[str, list] = field(default_factory=dict)      # "steps" plus per-step series
    projected_grads: list[float] = field(default_factory=list)   # every step (MeZO only)
    dev_history: list[dict] = field(default_factory=list)        # {"step", "dev_accuracy"}
    best_dev_accuracy: float = float("-inf")
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    diverged_at: int | None = None      # the step whose loss was not finite; training stopped there
    last_finite: dict | None = None     # the last step whose losses were all finite, and those losses
    z_stream: dict | None = None         # MeZO only: how z was drawn (harness.zo.z_stream)
    trajectory: Trajectory | None = None   # MeZO only: what replaying the run needs (harness.zo.trajectory)
    steps_done: int = 0
    throughput: Throughput = field(default_factory=Throughput)

    def log_curve(self, step: int, **values: float) -> None:
        if step == 1 or step % self.curve_stride == 0:
            self.curve.setdefault("steps", []).append(step)
            for name, value in values.items():
                self.curve.setdefault(name, []).append(value)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C in a training loop; `step` is the step in progress (None: before the first, e.g.
    while a resume replays its trajectory). Still a KeyboardInterrupt, so nothing that catches
    Exception takes it for a failure."""

    def __init__(self, step: int | None):
        super().__init__("interrupted" if step is None else f"interrupted at step {step}")
        self.step = step


@contextmanager
def _interrupt_names_the_step(current_step: Callable[[], int | None]):
    try:
        yield
    except KeyboardInterrupt:
        raise TrainingInterrupted(current_step()) from None


def _evaluate(result: TrainResult, objective: Objective, dev_batches: list[Batch], step: int, clock: Clock) -> float:
    started = clock.now()
    dev_accuracy = objective.accuracy(dev_batches)
    result.dev_history.append({"step": step, "dev_accuracy": dev_accuracy})
    if dev_accuracy > result.best_dev_accuracy:   # ties keep the earlier checkpoint
        result.best_dev_accuracy, result.best_step = dev_accuracy, step
        result.best_state = cpu_state_copy(objective.model)
    result.throughput.eval_seconds += clock.now() - started
    return dev_accuracy


def _end_of_step(result: TrainResult, objective: Objective, dev_batches: list[Batch], step: int, steps: int,
                 eval_every: int, clock: Clock, bar, loss: float) -> None:
    """Dev evaluation on schedule, and the live loss (and dev accuracy) on the progress bar."""
    if step % eval_every == 0 or step == steps:
        dev_accuracy = _evaluate(result, objective, dev_batches, step, clock)
        bar.set_postfix(loss=f"{loss:.4f}", dev=f"{dev_accuracy:.3f}", refresh=False)
    elif step % 10 == 0:
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)


def _progress_bar(steps: int, desc: str, enabled: bool, first: int = 1):
    # In a log file (no TTY) redraw every 5 s rather than every step.
    return tqdm(range(first, steps + 1), desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
                initial=first - 1, total=steps, mininterval=0.1 if sys.stderr.isatty() else 5.0)


def train_mezo(*, objective: Objective, trainable: list[tuple[str, torch.Tensor]], sampler: EpochSampler,
               dev_batches: list[Batch], steps: int, lr: float, eps: float, weight_decay: float,
               lr_schedule: str, eval_every: int, seed: int, length_buckets: int = 1,
               ragged_batches: bool = False, progress: bool = True,
               checkpoint: RunCheckpoint | None = None) -> TrainResult:
    """length_buckets > 1: each forward runs the batch split into that many length buckets
    (harness.tasks.batching.split_by_length); the loss is the same up to float rounding.
    ragged_batches: the backend runs the real tokens only, so throughput counts no padding.
    checkpoint: saved on its schedule; a run it holds a state of resumes from it."""
    saved = checkpoint.load() if checkpoint is not None else None
    step = None   # the step in progress, for an interrupt
    with MeZO(trainable, lr=lr, eps=eps, weight_decay=weight_decay) as engine, _interrupt_names_the_step(lambda: step):
        step_seeds = np.random.default_rng(seed)   # one seed per step, drawn from the run's RNG
        result = TrainResult(curve_stride=curve_stride(steps),
                             z_stream={"stream": engine.z_stream, "chunk_elements": engine.chunk_elements},
                             trajectory=Trajectory.for_engine(engine))
        clock = Clock(trainable[0][1].device)
        objective.model.eval()                      # no dropout in the zeroth-order passes
        first = _resume_mezo(saved, checkpoint, engine, objective.model, step_seeds, sampler, result) if saved else 1
        bar = _progress_bar(steps, "MeZO", progress, first)
        batch = parts = None

        for step in bar:
            previous, batch = batch, sampler.next()
            if batch is not previous:   # a full-batch sampler returns the same batch every step
                parts = split_by_length(batch, length_buckets) if length_buckets > 1 else [batch]
            engine.lr = scheduled_lr(lr, step, steps, lr_schedule)
            step_seed = int(step_seeds.integers(0, 2**31 - 1))
            out = _timed_step(engine, _counted_loss(objective, parts, clock, result.throughput, ragged_batches),
                              step_seed, clock, result.throughput)
            result.trajectory.append(step_seed, out.projected_grad, engine.lr)
            if not _record_zeroth_order_step(result, step, out):
                break
            _end_of_step(result, objective, dev_batches, step, steps, eval_every, clock, bar, out.loss_plus)
            if checkpoint is not None and checkpoint.due(step, steps):
                checkpoint.save({**_resumable(result), "step": step, "step_seeds": step_seeds.bit_generator.state,
                                 "sampler": sampler.state()},
                                files={"trajectory": result.trajectory.to_bytes(), "best": result.best_state},
                                model=objective.model)
    return result


def _counted_loss(objective: Objective, parts: list[Batch], clock: Clock, throughput: Throughput,
                  ragged_batches: bool = False) -> Callable[[], float]:
    """The loss of the batch `parts` split (one part: the batch itself), each call timed and counted as
    a training forward."""
    def loss() -> float:
        started = clock.now()
        value = float(objective.loss(parts[0]) if len(parts) == 1 else objective.loss_over(parts))
        throughput.count_forward(parts, clock.now() - started, ragged_batches)
        return value
    return loss


def _timed_step(engine: MeZO | MeZOAdam, loss_fn: Callable[[], float], seed: int, clock: Clock,
                throughput: Throughput) -> MezoStepResult:
    """One zeroth-order step: its time goes to train_seconds, the part outside its forwards to update_seconds."""
    forward_seconds_before = throughput.forward_seconds
    started = clock.now()
    out = engine.step(loss_fn, seed=seed)
    seconds = clock.now() - started
    throughput.train_seconds += seconds
    throughput.update_seconds += seconds - (throughput.forward_seconds - forward_seconds_before)
    return out


def _record_zeroth_order_step(result: TrainResult, step: int, out: MezoStepResult) -> bool:
    """The step's losses and projected gradient into the result; False if they are not finite (the
    parameters are no longer finite: training stops, the best-dev checkpoint stands)."""
    result.steps_done = step
    result.projected_grads.append(out.projected_grad)
    result.log_curve(step, loss_plus=out.loss_plus, loss_minus=out.loss_minus, projected_grad=out.projected_grad)
    if not math.isfinite(out.projected_grad):
        result.diverged_at = step
        return False
    result.last_finite = {"step": step, "loss_plus": out.loss_plus, "loss_minus": out.loss_minus}
    return True


RESUMED_FIELDS = ("curve", "dev_history", "best_dev_accuracy", "best_step", "last_finite", "steps_done")


def _resumable(result: TrainResult) -> dict:
    """What a checkpoint keeps of a result besides the trajectory and the weights."""
    return {**{name: getattr(result, name) for name in RESUMED_FIELDS},
            "best_dev_accuracy": None if result.best_step is None else result.best_dev_accuracy,
            "throughput": dataclasses.asdict(result.throughput)}


def _restore_result(saved: dict, checkpoint: RunCheckpoint, result: TrainResult) -> None:
    for name in RESUMED_FIELDS:
        setattr(result, name, saved[name])
    if saved["best_step"] is None:
        result.best_dev_accuracy = float("-inf")
    result.best_state = checkpoint.tensors(saved["files"]["best"])
    result.throughput = Throughput(**saved["throughput"])


def _resume_mezo(saved: dict, checkpoint: RunCheckpoint, engine: MeZO, model, step_seeds, sampler: EpochSampler,
                 result: TrainResult) -> int:
    """Weights, RNGs and result as they were after the saved step; returns the next step."""
    snapshot = checkpoint.tensors(saved["files"]["snapshot"])
    if snapshot is not None:
        model.load_state_dict(snapshot)
    trajectory = Trajectory.load(checkpoint.folder / saved["files"]["trajectory"])
    replay(engine, trajectory, saved["step"], start=saved["snapshot_step"])
    result.trajectory, result.projected_grads = trajectory, list(trajectory.projected_grads)
    _restore_result(saved, checkpoint, result)
    step_seeds.bit_generator.state = saved["step_seeds"]
    sampler.restore(saved["sampler"])
    return saved["step"] + 1


def train_first_order(*, objective: Objective, trainable: list[tuple[str, torch.Tensor]], sampler: EpochSampler,
                      dev_batches: list[Batch], steps: int, lr: float, weight_decay: float, lr_schedule: str,
                      dropout: bool, eval_every: int, seed: int, max_grad_norm: float | None = None,
                      progress: bool = True, checkpoint: RunCheckpoint | None = None) -> TrainResult:
    """AdamW on the cross-entropy of the objective's logits, with backprop. max_grad_norm: the
    gradients' global norm is clipped to it before each step, as HF's Trainer (used by the
    reference) does by default with 1.0."""
    if max_grad_norm is not None and max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
    params = [param for _, param in trainable]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda index: scheduled_lr(1.0, index + 1, steps, lr_schedule))
    result = TrainResult(curve_stride=curve_stride(steps))
    clock = Clock(params[0].device)
    model = objective.model
    saved = checkpoint.load() if checkpoint is not None else None
    cuda = params[0].device.type == "cuda"
    step = None   # the step in progress, for an interrupt

    with torch.random.fork_rng(devices=[params[0].device] if cuda else []), _interrupt_names_the_step(lambda: step):
        torch.manual_seed(seed)                 # dropout masks
        first = _resume_first_order(saved, checkpoint, model, optimizer, scheduler, sampler, result) if saved else 1
        bar = _progress_bar(steps, "FT", progress, first)
        for step in bar:
            batch = sampler.next()
            model.train(dropout)
            started = clock.now()
            loss = objective.cross_entropy(batch)
            forward_done = clock.now()
            result.throughput.count_forward([batch], forward_done - started)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            finished = clock.now()
            result.throughput.update_seconds += finished - forward_done
            result.throughput.train_seconds += finished - started
            model.eval()

            loss_value = float(loss.detach())
            result.steps_done = step
            result.log_curve(step, loss=loss_value)
            if not math.isfinite(loss_value):
                result.diverged_at = step
                break
            result.last_finite = {"step": step, "loss": loss_value}
            _end_of_step(result, objective, dev_batches, step, steps, eval_every, clock, bar, loss_value)
            if checkpoint is not None and checkpoint.due(step, steps):
                moments, groups = _optimizer_tensors(optimizer)
                checkpoint.save({**_resumable(result), "step": step, "sampler": sampler.state(),
                                 "optimizer_groups": groups, "scheduler": scheduler.state_dict(),
                                 "rng": torch.get_rng_state().tolist(),
                                 "cuda_rng": torch.cuda.get_rng_state(params[0].device).tolist() if cuda else None},
                                files={"weights": model.state_dict(), "optimizer": moments, "best": result.best_state})
    return result


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW's per-parameter state as named tensors (for safetensors) and its groups (for JSON)."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, values in state["state"].items() for name, value in values.items()}
    return tensors, state["param_groups"]


def _resume_first_order(saved: dict, checkpoint: RunCheckpoint, model, optimizer, scheduler, sampler: EpochSampler,
                        result: TrainResult) -> int:
    """Weights, optimizer, scheduler, RNGs and result as they were after the saved step."""
    model.load_state_dict(checkpoint.tensors(saved["files"]["weights"]))
    _load_optimizer(saved, checkpoint, optimizer)
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(torch.tensor(saved["rng"], dtype=torch.uint8))
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(torch.tensor(saved["cuda_rng"], dtype=torch.uint8))
    _restore_result(saved, checkpoint, result)
    sampler.restore(saved["sampler"])
    return saved["step"] + 1


def _load_optimizer(saved: dict, checkpoint: RunCheckpoint, optimizer: torch.optim.Optimizer) -> None:
    """AdamW's state as `_optimizer_tensors` saved it."""
    per_parameter: dict[int, dict] = {}
    for name, tensor in checkpoint.tensors(saved["files"]["optimizer"]).items():
        index, field_name = name.split(".", 1)
        per_parameter.setdefault(int(index), {})[field_name] = tensor
    optimizer.load_state_dict({"state": per_parameter, "param_groups": saved["optimizer_groups"]})


def train_mezo_adam(*, objective: Objective, trainable: list[tuple[str, torch.Tensor]], sampler: EpochSampler,
                    dev_batches: list[Batch], steps: int, lr: float, eps: float, weight_decay: float,
                    lr_schedule: str, eval_every: int, seed: int, progress: bool = True,
                    checkpoint: RunCheckpoint | None = None) -> TrainResult:
    """MeZO-Adam (harness.zo.mezo_adam): MeZO's two forwards per step, AdamW's update. Step
    seeds, eval mode and evaluation as train_mezo; a checkpoint holds the weights and AdamW's
    moments (Adam's state cannot be replayed from the seeds)."""
    saved = checkpoint.load() if checkpoint is not None else None
    step = None   # the step in progress, for an interrupt
    with MeZOAdam(trainable, lr=lr, eps=eps, weight_decay=weight_decay) as engine, \
            _interrupt_names_the_step(lambda: step):
        step_seeds = np.random.default_rng(seed)
        result = TrainResult(curve_stride=curve_stride(steps),
                             z_stream={"stream": engine.engine.z_stream, "chunk_elements": engine.engine.chunk_elements})
        clock = Clock(trainable[0][1].device)
        model = objective.model
        model.eval()
        first = 1
        if saved:
            model.load_state_dict(checkpoint.tensors(saved["files"]["weights"]))
            _load_optimizer(saved, checkpoint, engine.optimizer)
            _restore_result(saved, checkpoint, result)
            result.projected_grads = list(saved["projected_grads"])
            step_seeds.bit_generator.state = saved["step_seeds"]
            sampler.restore(saved["sampler"])
            first = saved["step"] + 1
        bar = _progress_bar(steps, "MeZO-Adam", progress, first)
        for step in bar:
            batch = sampler.next()
            engine.lr = scheduled_lr(lr, step, steps, lr_schedule)
            out = _timed_step(engine, _counted_loss(objective, [batch], clock, result.throughput),
                              int(step_seeds.integers(0, 2**31 - 1)), clock, result.throughput)
            if not _record_zeroth_order_step(result, step, out):
                break
            _end_of_step(result, objective, dev_batches, step, steps, eval_every, clock, bar, out.loss_plus)
            if checkpoint is not None and checkpoint.due(step, steps):
                moments, groups = _optimizer_tensors(engine.optimizer)
                checkpoint.save({**_resumable(result), "step": step, "step_seeds": step_seeds.bit_generator.state,
                                 "sampler": sampler.state(), "optimizer_groups": groups,
                                 "projected_grads": result.projected_grads},
                                files={"weights": model.state_dict(), "optimizer": moments, "best": result.best_state})
    return result


def evaluate_untrained(*, objective: Objective, dev_batches: list[Batch]) -> TrainResult:
    """Variants that train nothing (zero-shot, LP): one dev evaluation of the model as it is,
    recorded as step 0; the caller tests that same model."""
    result = TrainResult(curve_stride=1, curve={"steps": []})   # no step: an empty curve
    objective.model.eval()
    started = time.perf_counter()
    dev_accuracy = objective.accuracy(dev_batches)
    result.throughput.eval_seconds = time.perf_counter() - started
    result.dev_history.append({"step": 0, "dev_accuracy": dev_accuracy})
    result.best_dev_accuracy, result.best_step = dev_accuracy, 0
    return result
