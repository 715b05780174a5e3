"""MeZO-Adam: Adam on MeZO's gradient estimate, as the reference's ablation runs it
(`medium_models/src/trainer.py` with `--zero_order_use_trainer_optim --optimizer adam`).

A step is MeZO's two perturbed forwards (harness.zo.mezo), the parameters restored, then the
estimate projected_grad * z stored in each parameter's `.grad` and handed to AdamW (the
reference's `transformers.AdamW` with the Trainer's defaults: betas (0.9, 0.999), eps 1e-8, no
weight decay on biases and LayerNorm weights). So MeZO-Adam holds a gradient buffer and two
moments per trained parameter: three times the parameters on top of inference, which the memory
phase `mezo_adam_step` measures (harness.measure.memory). z is the step's MeZO draw, regenerated
from the seed; the reference draws it the same way (`--efficient_zero_order`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.zo.mezo import MeZO, MezoStepResult

# The reference's Trainer.create_optimizer_and_scheduler: no decay for these name parts
ADAM_NO_DECAY = ("bias", "LayerNorm.weight")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adamw_for(named_parameters: list[tuple[str, torch.Tensor]], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the reference's two groups (decayed, and biases/LayerNorm weights undecayed)."""
    decayed = [p for n, p in named_parameters if not any(part in n for part in ADAM_NO_DECAY)]
    undecayed = [p for n, p in named_parameters if any(part in n for part in ADAM_NO_DECAY)]
    groups = [{"params": params, "weight_decay": decay}
              for params, decay in ((decayed, weight_decay), (undecayed, 0.0)) if params]
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)


class MeZOAdam:
    """MeZO's estimate, AdamW's update. A context manager, as MeZO (its z stream's threads)."""

    def __init__(self, named_parameters: list[tuple[str, torch.Tensor]], *, lr: float, eps: float,
                 weight_decay: float):
        # the MeZO engine only perturbs (weight decay is AdamW's here)
        self.engine = MeZO(named_parameters, lr=0.0, eps=eps, weight_decay=0.0)
        self.optimizer = adamw_for(named_parameters, lr=lr, weight_decay=weight_decay)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @torch.no_grad()
    def step(self, loss_fn: Callable[[], float], seed: int) -> MezoStepResult:
        out = self.engine.estimate(loss_fn, seed)
        self.engine.perturb(seed, +self.engine.eps)    # back to the step's starting point
        for param, z in self.engine.noise(seed):
            param.grad = z.mul_(out.projected_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> MeZOAdam:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
