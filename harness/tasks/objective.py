"""Objectives: what MeZO minimises and what is evaluated, over a backend's label head
(harness.backends.base.LabelHead: one logit per label for a batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.tasks.batching import Batch

LOSSES = ("ce", "neg-accuracy")


class Objective:
    """loss: "ce" (cross-entropy) or "neg-accuracy" (-(batch accuracy), piecewise constant:
    a MeZO step sees loss+ == loss- unless a prediction flips between the two passes)."""

    def __init__(self, head, loss: str = "ce"):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.head, self.loss_kind = head, loss

    @property
    def model(self):
        return self.head.model

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.head(batch)

    def cross_entropy(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.head(batch), batch.labels)

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.loss_kind == "ce":
            return self.cross_entropy(batch)
        return -(self.head(batch).argmax(dim=-1) == batch.labels).float().mean()

    def loss_over(self, buckets: list[Batch]) -> torch.Tensor:
        """The loss of the batch that `buckets` split (harness.tasks.batching.split_by_length):
        the example-weighted mean of the buckets' losses."""
        total = sum(bucket.labels.numel() for bucket in buckets)
        return sum(self.loss(bucket) * (bucket.labels.numel() / total) for bucket in buckets)

    @torch.no_grad()
    def accuracy(self, batches: list[Batch]) -> float:
        correct = total = 0
        for batch in batches:
            correct += int((self.head(batch).argmax(dim=-1) == batch.labels).sum())
            total += batch.labels.numel()
        return correct / total

    @torch.no_grad()
    def mean_cross_entropy(self, batches: list[Batch]) -> float:
        """Example-weighted mean cross-entropy (comparable across objectives)."""
        total = sum(float(self.cross_entropy(b)) * b.labels.numel() for b in batches)
        return total / sum(b.labels.numel() for b in batches)
