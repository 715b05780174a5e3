"""A MeZO step written the way the reference code writes it, as the performance baseline.

Follows MeZO `medium_models/src/trainer.py` (zo_perturb_parameters, zo_step, zo_update):
every pass reseeds torch's global generator and calls `torch.normal` once per tensor, and
applies the perturbation out of place (`param.data = param.data + scale * z * eps`, a new
tensor per parameter). Four passes: +eps, -2 eps, +eps (restore), then the update drawn
again. Same z and the same update as harness.zo.mezo.MeZO, up to float rounding; it reseeds
the global generator, as the reference does, so use it in benchmarks and tests only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.zo.mezo import NO_DECAY_NAME_PARTS, MezoStepResult


def _perturb(named_parameters: list[tuple[str, torch.Tensor]], seed: int, eps: float, scaling_factor: float) -> None:
    torch.manual_seed(seed)
    for _, param in named_parameters:
        z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
        param.data = param.data + scaling_factor * z * eps


@torch.no_grad()
def reference_style_step(named_parameters: list[tuple[str, torch.Tensor]], loss_fn: Callable[[], float], *,
                         seed: int, lr: float, eps: float, weight_decay: float) -> MezoStepResult:
    _perturb(named_parameters, seed, eps, 1)
    loss_plus = loss_fn()
    _perturb(named_parameters, seed, eps, -2)
    loss_minus = loss_fn()
    projected_grad = (loss_plus - loss_minus) / (2 * eps)
    _perturb(named_parameters, seed, eps, 1)

    torch.manual_seed(seed)
    for name, param in named_parameters:
        z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
        if any(part in name for part in NO_DECAY_NAME_PARTS):
            param.data = param.data - lr * (projected_grad * z)
        else:
            param.data = param.data - lr * (projected_grad * z + weight_decay * param.data)
    return MezoStepResult(loss_plus=loss_plus, loss_minus=loss_minus, projected_grad=projected_grad)
