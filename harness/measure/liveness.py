"""Which trainable parameter groups can change the objective at all?

A group is one module's parameters (weight and bias together; a LoRA layer's A and B
together, because with B = 0 at initialisation neither moves the output alone). Each group
is perturbed alone by eps * z, MeZO's own perturbation, and the head's logits are compared
bit for bit with the unperturbed ones. Logits, not the loss: a piecewise-constant loss
(accuracy) would call every group dead. A group whose logits never change is dead: an
unused pooler, or LoRA adapters merged into the base weights and so bypassed (the hazard of
the reference's LoRA path with loralib >= 0.1.2).

The check runs before training. Dead groups go into the record (`liveness`) and are not
perturbed, unless the protocol sets `perturb_dead_parameters = true` (the reference code's
behaviour: perturb everything); a variant with no live group fails with the list of its dead
groups.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.core.errors import HarnessError

_LORA_SUFFIX = re.compile(r"\.lora_(A|B|embedding_A|embedding_B)(\.[^.]+)?$")


def group_name(parameter_name: str) -> str:
    module = parameter_name.rsplit(".", 1)[0] if "." in parameter_name else parameter_name
    return _LORA_SUFFIX.sub("", module)


def parameter_groups(named: list[tuple[str, torch.Tensor]]) -> dict[str, list[tuple[str, torch.Tensor]]]:
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, param in named:
        groups.setdefault(group_name(name), []).append((name, param))
    return groups


@dataclass(frozen=True)
class LivenessReport:
    live: list[str]
    dead: list[str]

    def parameters_to_perturb(self, named: list[tuple[str, torch.Tensor]], include_dead: bool,
                              variant: str) -> list[tuple[str, torch.Tensor]]:
        """The live groups' parameters (all of them if include_dead); an error if none is live."""
        if not self.live:
            raise HarnessError(f"variant {variant!r}: no trainable parameter group can change the loss; "
                               f"dead groups: {', '.join(self.dead)}")
        live = set(self.live)
        return list(named) if include_dead else [(name, p) for name, p in named if group_name(name) in live]


@torch.no_grad()
def check_liveness(logits_fn: Callable[[], torch.Tensor], named: list[tuple[str, torch.Tensor]],
                   eps: float, seed: int = 0) -> LivenessReport:
    base = logits_fn()
    generator = torch.Generator(device=named[0][1].device)
    live, dead = [], []
    for group, members in parameter_groups(named).items():
        saved = [p.detach().clone() for _, p in members]
        generator.manual_seed(seed)
        for _, p in members:
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device), alpha=eps)
        changed = not torch.equal(logits_fn(), base)
        for (_, p), original in zip(members, saved):
            p.copy_(original)   # bit-exact restore
        (live if changed else dead).append(group)
    return LivenessReport(live=live, dead=dead)
