"""MeZO: zeroth-order SPSA with in-place perturbations (Malladi et al. 2023, Algorithm 1).

z is never stored: it is regenerated from the step's seed in the same order every time. A
step makes three passes over the parameters: +eps*z, -2*eps*z, then restore and update
fused into one (the reference makes four, each with a fresh allocation per tensor). How z
is drawn (whole tensors, chunks, threads; CPU and CUDA streams): harness.zo.z_stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from harness.zo.z_stream import CHUNK_ELEMENTS, Chunk, ZStream, make_z_stream

# Weight decay skips parameters whose name contains one of these, the rule of MeZO's
# `large_models/trainer.py` (zo_update); it is case-sensitive, so HF RoBERTa's "LayerNorm"
# weights *are* decayed, there and here. The RoBERTa code (`medium_models/src/trainer.py`)
# differs: at the paper's commit (May 2023) its zeroth-order update ignored weight decay, and
# since the fix of 2023-12-27 it decays every parameter (README: differences from the reference).
NO_DECAY_NAME_PARTS = ("bias", "layer_norm", "layernorm")


@dataclass(frozen=True)
class MezoStepResult:
    loss_plus: float
    loss_minus: float
    projected_grad: float


class MeZO:
    """Algorithm 1 over a z stream (`step`: +eps*z, loss+, -2*eps*z, loss-, projected gradient, then
    restore and update in one pass). A context manager: `close()` shuts the stream's threads down."""

    def __init__(self, named_parameters: list[tuple[str, torch.Tensor]], *, lr: float, eps: float,
                 weight_decay: float, workers: int | None = None, chunk_elements: int = CHUNK_ELEMENTS,
                 z_stream: str | ZStream = "auto"):
        """z_stream: "auto", "sequential" or "per-chunk" (harness.zo.z_stream.make_z_stream, with
        `workers` and `chunk_elements`), or a ZStream over these parameters. `self.z_stream`
        holds the stream's name, `self.stream` the stream."""
        if not named_parameters:
            raise ValueError("MeZO needs at least one trainable parameter")
        self.names = [name for name, _ in named_parameters]
        self.params = [param for _, param in named_parameters]
        self.decays = [not any(part in name for part in NO_DECAY_NAME_PARTS) for name in self.names]
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        if isinstance(z_stream, str):
            z_stream = make_z_stream(self.params, z_stream, workers, chunk_elements)
        elif list(map(id, z_stream.params)) != list(map(id, self.params)):
            raise ValueError("the z stream is over other parameters than MeZO's")
        self.stream = z_stream
        self.z_stream, self.chunk_elements, self.workers = z_stream.name, z_stream.chunk_elements, z_stream.workers

    @torch.no_grad()
    def step(self, loss_fn: Callable[[], float], seed: int) -> MezoStepResult:
        out = self.estimate(loss_fn, seed)
        self.restore_and_update(seed, out.projected_grad)
        return out

    @torch.no_grad()
    def estimate(self, loss_fn: Callable[[], float], seed: int) -> MezoStepResult:
        """+eps*z, loss+, -2*eps*z, loss-, and the projected gradient; the parameters are left at
        p - eps*z for the caller to restore (`restore_and_update`, or `perturb(seed, +eps)`)."""
        self.perturb(seed, +self.eps)
        loss_plus = loss_fn()
        self.perturb(seed, -2.0 * self.eps)
        loss_minus = loss_fn()
        projected_grad = (loss_plus - loss_minus) / (2.0 * self.eps)
        return MezoStepResult(loss_plus=loss_plus, loss_minus=loss_minus, projected_grad=projected_grad)

    @torch.no_grad()
    def perturb(self, seed: int, scale: float) -> None:
        """p <- p + scale * z."""
        self.stream.apply(seed, lambda index, target, z: target.add_(z, alpha=scale))

    @torch.no_grad()
    def restore_and_update(self, seed: int, projected_grad: float) -> None:
        """From p - eps*z: p0 = p + eps*z, then p0 <- p0 - lr * (projected_grad * z + wd * p0)."""
        lr, eps, wd = self.lr, self.eps, self.weight_decay

        def restore_and_update_one(index: int, target: torch.Tensor, z: torch.Tensor) -> None:
            if self.decays[index] and wd:
                target.add_(z, alpha=eps).mul_(1.0 - lr * wd).add_(z, alpha=-lr * projected_grad)
            else:
                target.add_(z, alpha=eps - lr * projected_grad)

        self.stream.apply(seed, restore_and_update_one)

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, z) pairs, whole tensors; what every pass applies, chunked or not."""
        return self.stream.noise(seed)

    @property
    def chunks(self) -> list[Chunk]:
        """The pieces each pass walks, in order (the stream's)."""
        return self.stream.chunks

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> MeZO:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
