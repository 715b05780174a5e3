"""MeZO: zeroth-order SPSA with in-place perturbations (Malladi et al. 2023, Algorithm 1).

z is never stored: it is regenerated from the step's seed, tensor by tensor, in the same
order every time (one generator stream over the parameters, as the reference code does
with `torch.manual_seed` + `torch.normal`). A step makes three passes over the parameters:
+eps*z, -2*eps*z, then restore and update fused into one (the reference makes four).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

# The reference code (MeZO `medium_models/src/trainer.py`, zo_update) skips weight decay for
# parameters whose name contains one of these; note it is case-sensitive, so HF RoBERTa's
# "LayerNorm" weights *are* decayed there, and so they are here.
NO_DECAY_NAME_PARTS = ("bias", "layer_norm", "layernorm")


@dataclass(frozen=True)
class MezoStepResult:
    loss_plus: float
    loss_minus: float
    projected_grad: float


class MeZO:
    def __init__(self, named_parameters: list[tuple[str, torch.Tensor]], *, lr: float, eps: float,
                 weight_decay: float):
        if not named_parameters:
            raise ValueError("MeZO needs at least one trainable parameter")
        self.names = [name for name, _ in named_parameters]
        self.params = [param for _, param in named_parameters]
        self.decays = [not any(part in name for part in NO_DECAY_NAME_PARTS) for name in self.names]
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        self.generator = torch.Generator(device=self.params[0].device)

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, z) pairs; the same seed always gives the same z."""
        self.generator.manual_seed(seed)
        for param in self.params:
            yield param, torch.randn(param.shape, generator=self.generator, dtype=param.dtype,
                                     device=param.device)

    @torch.no_grad()
    def perturb(self, seed: int, scale: float) -> None:
        """p <- p + scale * z."""
        for param, z in self.noise(seed):
            param.add_(z, alpha=scale)

    @torch.no_grad()
    def restore_and_update(self, seed: int, projected_grad: float) -> None:
        """From p - eps*z: p0 = p + eps*z, then p0 <- p0 - lr * (projected_grad * z + wd * p0)."""
        lr, eps, wd = self.lr, self.eps, self.weight_decay
        for (param, z), decays in zip(self.noise(seed), self.decays):
            if decays and wd:
                param.add_(z, alpha=eps).mul_(1.0 - lr * wd).add_(z, alpha=-lr * projected_grad)
            else:
                param.add_(z, alpha=eps - lr * projected_grad)

    @torch.no_grad()
    def step(self, loss_fn: Callable[[], float], seed: int) -> MezoStepResult:
        self.perturb(seed, +self.eps)
        loss_plus = loss_fn()
        self.perturb(seed, -2.0 * self.eps)
        loss_minus = loss_fn()
        projected_grad = (loss_plus - loss_minus) / (2.0 * self.eps)
        self.restore_and_update(seed, projected_grad)
        return MezoStepResult(loss_plus=loss_plus, loss_minus=loss_minus, projected_grad=projected_grad)
