"""Encoded examples and batches: right-padded tensors, evaluation batches, the training
sampler and length buckets.

Length buckets (the protocol's `length_buckets`, MeZO variants only): 1 pads a training batch
to its longest row, as the reference code does; above 1, each MeZO forward runs the batch
split by `split_by_length` into that many buckets, each padded to its own longest row, and
the loss is the example-weighted mean over buckets (harness.tasks.objective.Objective.loss_over):
the same loss up to float rounding, which MeZO's 1/(2 eps) amplifies -- hence a protocol
option, off by default."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncodedExample:
    input_ids: tuple[int, ...]
    mask_position: int
    label: int


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor         # [B, T], right-padded
    attention_mask: torch.Tensor    # [B, T]
    mask_positions: torch.Tensor    # [B]
    labels: torch.Tensor            # [B]

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.attention_mask.numel()


def collate(examples: list[EncodedExample], pad_id: int, device: torch.device) -> Batch:
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
    return Batch(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        mask_positions=torch.tensor([e.mask_position for e in examples], device=device),
        labels=torch.tensor([e.label for e in examples], device=device),
    )


def split_by_length(batch: Batch, buckets: int) -> list[Batch]:
    """The batch's rows sorted by length into at most `buckets` sub-batches, each padded only
    to its own longest row; the split points minimise the padded tokens (exact, by dynamic
    programming over the sorted lengths). The rows' losses are unchanged up to float rounding."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    lengths = batch.attention_mask.sum(dim=1).tolist()
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    rows = len(order)
    # best[b][j]: fewest padded tokens for the first j sorted rows in b buckets.
    best = [[0] + [float("inf")] * rows for _ in range(buckets + 1)]
    cut = [[0] * (rows + 1) for _ in range(buckets + 1)]
    for b in range(1, buckets + 1):
        for j in range(1, rows + 1):
            for i in range(b - 1, j):
                cost = best[b - 1][i] + (j - i) * sorted_lengths[j - 1]
                if cost < best[b][j]:
                    best[b][j], cut[b][j] = cost, i
    used = min(range(1, buckets + 1), key=lambda b: (best[b][rows], b))
    bounds, j = [], rows
    for b in range(used, 0, -1):
        bounds.append((cut[b][j], j))
        j = cut[b][j]
    out = []
    for start, stop in reversed(bounds):
        index = torch.tensor(order[start:stop], device=batch.input_ids.device)
        width = sorted_lengths[stop - 1]
        out.append(Batch(input_ids=batch.input_ids[index, :width], attention_mask=batch.attention_mask[index, :width],
                         mask_positions=batch.mask_positions[index], labels=batch.labels[index]))
    return out


def eval_batches(examples: list[EncodedExample], batch_size: int, pad_id: int,
                 device: torch.device) -> list[Batch]:
    """Fixed evaluation batches, sorted by length so little compute goes to padding."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    return [collate(ordered[i:i + batch_size], pad_id, device) for i in range(0, len(ordered), batch_size)]


class EpochSampler:
    """Shuffled passes over the training set in batches of `batch_size` (the last one of an
    epoch may be smaller, as with a PyTorch DataLoader). A set no larger than one batch is
    used whole every step (MeZO's k=16 runs are full-batch)."""

    def __init__(self, examples: list[EncodedExample], batch_size: int, seed: int, pad_id: int,
                 device: torch.device):
        self.examples, self.batch_size, self.pad_id, self.device = examples, batch_size, pad_id, device
        self.generator = torch.Generator().manual_seed(seed)
        self.full_batch = collate(examples, pad_id, device) if len(examples) <= batch_size else None
        self._queue: list[list[int]] = []

    def next(self) -> Batch:
        if self.full_batch is not None:
            return self.full_batch
        if not self._queue:
            order = torch.randperm(len(self.examples), generator=self.generator).tolist()
            self._queue = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return collate([self.examples[i] for i in self._queue.pop(0)], self.pad_id, self.device)

    def state(self) -> dict:
        """What `restore` needs to continue the same sequence of batches (JSON-serialisable)."""
        return {"generator": self.generator.get_state().tolist(), "queue": [list(ids) for ids in self._queue]}

    def restore(self, state: dict) -> None:
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self._queue = [list(ids) for ids in state["queue"]]
