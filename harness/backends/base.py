"""The backend contract: what recipes and measurements need from a backend, and nothing more.

A backend builds the model a variant runs (weights loaded, the variant's trainable parameter
set marked `requires_grad`), gives the head whose output is one logit per label for a batch,
and lists the parameters under Hugging Face's names (so MeZO draws the same z for the same
parameter on every backend). Backends are registered by name in harness.backends.registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from harness.protocol.settings import RunSettings
    from harness.protocol.variants import Variant
    from harness.tasks.batching import Batch


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module       # what the head and MeZO act on
    info: dict                   # goes into the run record's `model`


class LabelHead(Protocol):
    """Label logits [batch, labels] (float32) for a batch; `model` is what it runs."""

    model: torch.nn.Module

    def __call__(self, batch: Batch) -> torch.Tensor: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    ragged_batches: bool                # forwards run the real tokens only: throughput counts no padding
    memory_phases: tuple[str, ...]      # harness.measure.memory phases it can run
    memory_in_process: bool             # its model cannot be pickled into a child process
    measures_prefix_cache: bool         # its runs also measure RadixAttention (harness.measure.radix)

    def build_model(self, variant: Variant, settings: RunSettings, tokenizer, num_labels: int,
                    device: torch.device, seed: int) -> LoadedModel: ...

    def head(self, variant: Variant, model: torch.nn.Module, label_token_ids: list[int]) -> LabelHead: ...

    def trainable_parameters(self, model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
        """(Hugging Face name, tensor) of every parameter that requires grad, in model order."""
        ...


def cpu_state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
