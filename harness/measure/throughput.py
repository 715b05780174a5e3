"""Throughput counters of a training run: forward passes, real and padded tokens, and time
split into forward, update and evaluation; on a GPU the clock synchronises before reading.

The record's `throughput`: steps/s, forward passes/s, tokens/s counting real (non-padding)
tokens only, the padding fraction (0 on a ragged backend such as SGLang), and seconds of
forward, update (MeZO: the perturbation passes and the fused restore/update; first-order:
backward and optimizer), evaluation and training (forward + update)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from harness.tasks.batching import Batch


class Clock:
    """Wall-clock seconds, synchronising a CUDA device first so queued kernels count."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


@dataclass
class Throughput:
    forward_passes: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_seconds: float = 0.0
    update_seconds: float = 0.0
    eval_seconds: float = 0.0
    train_seconds: float = 0.0   # forward + update, evaluation excluded

    def count_forward(self, batches: list[Batch], seconds: float, ragged: bool = False) -> None:
        """One forward over `batches` (a batch, or its length buckets). ragged: the backend
        ran the real tokens only (SGLang), so nothing was padded."""
        self.forward_passes += 1
        real = sum(batch.real_tokens for batch in batches)
        self.real_tokens += real
        self.padded_tokens += real if ragged else sum(batch.padded_tokens for batch in batches)
        self.forward_seconds += seconds

    def summary(self, steps: int) -> dict:
        seconds = self.train_seconds
        return {
            "steps_per_second": steps / seconds,
            "forward_passes_per_second": self.forward_passes / seconds,
            "tokens_per_second": self.real_tokens / seconds,   # real tokens only, no padding
            "padding_fraction": 1.0 - self.real_tokens / self.padded_tokens,
            "forward_passes": self.forward_passes,
            "real_tokens": self.real_tokens,
            "forward_seconds": self.forward_seconds,
            "update_seconds": self.update_seconds,
            "eval_seconds": self.eval_seconds,
            "train_seconds": seconds,
        }
