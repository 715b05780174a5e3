"""MeZO: zeroth-order SPSA with in-place perturbations (Malladi et al. 2023, Algorithm 1).

z is never stored: it is regenerated from the step's seed in the same order every time. A
step makes three passes over the parameters: +eps*z, -2*eps*z, then restore and update
fused into one (the reference makes four, each with a fresh allocation per tensor). Two z
streams (`z_stream`; "auto" picks per-chunk on CUDA, sequential elsewhere):
- "sequential": one generator stream over the parameters, the draws of
  `torch.randn(param.shape, generator=g)` for each parameter in turn (the reference code's
  `torch.manual_seed` + `torch.normal` give the same numbers).
- "per-chunk": the parameters are cut into the chunks below and chunk k (counted over all
  parameters) draws `normal_` from a generator seeded with
  `numpy.random.SeedSequence(seed, spawn_key=(k,)).generate_state(1, uint64)[0]`, numpy's
  k-th independent child of the step seed. Chunks need no shared generator state, so
  every pass just reseeds per chunk, and no parameter-sized tensor is ever allocated (a
  non-contiguous parameter, which no model here has, is drawn whole as its one chunk).

Speed without changing a single draw (CPU):
- z is drawn chunk by chunk into a small reused buffer, never a whole tensor at once, so a
  step allocates a few MiB instead of the largest parameter (the 50K x 1024 embedding
  matrix of roberta-large is 206 MB). Chunks are multiples of 16 elements and a tensor's
  last chunk has at least 16: torch's CPU `normal_` draws one uniform per element, turns
  blocks of 16 into normals and redraws the last block of a tensor whose size is not a
  multiple of 16, so such chunks draw exactly the whole tensor's numbers.
  `chunked_draws_match` checks this on the running torch once per dtype; if it ever stops
  holding, whole tensors are drawn as before.
- The first pass of a seed draws in order and notes the generator state at the start of
  every chunk; the step's other two passes then redraw the chunks on several threads at
  once (torch releases the GIL), each thread with its own generator set to those states.
  The CPU generator (mt19937) is inherently sequential, so the first pass cannot be split.

CUDA uses the per-chunk stream: Philox offsets depend on each call's size, so slicing one
sequential draw into chunks would change the numbers, while drawing whole tensors allocates
the largest parameter per step (206 MB for roberta-large, more than an SST-2 inference
batch). Per-chunk seeds make chunks independent and exactly reproducible (for a given torch,
GPU model and chunk size: the kernel's grid depends on the GPU's multiprocessor count). Its
z are other numbers than whole-tensor draws, statistically the same (iid N(0, 1)); the CPU
default stream is unchanged, bit for bit. On CUDA the passes are bound by memory bandwidth.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

# Weight decay skips parameters whose name contains one of these, the rule of MeZO's
# `large_models/trainer.py` (zo_update); it is case-sensitive, so HF RoBERTa's "LayerNorm"
# weights *are* decayed, there and here. The RoBERTa code (`medium_models/src/trainer.py`)
# differs: at the paper's commit (May 2023) its zeroth-order update ignored weight decay, and
# since the fix of 2023-12-27 it decays every parameter (README: differences from the reference).
NO_DECAY_NAME_PARTS = ("bias", "layer_norm", "layernorm")

CHUNK_ELEMENTS = 1 << 20            # 4 MiB of fp32 per thread; a multiple of 16
NORMAL_BLOCK = 16                   # torch's CPU normal_ works in blocks of 16 draws
PARALLEL_MIN_ELEMENTS = 1 << 22     # below ~4M parameters threads cost more than they save
Z_STREAMS = ("auto", "sequential", "per-chunk")


@dataclass(frozen=True)
class MezoStepResult:
    loss_plus: float
    loss_minus: float
    projected_grad: float


@dataclass(frozen=True)
class Chunk:
    index: int          # which parameter
    start: int          # element range of the flattened parameter
    stop: int
    whole: bool         # drawn as one tensor of the parameter's shape


def chunk_bounds(numel: int, chunk_elements: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `chunk_elements` (a multiple of 16); the last range takes the
    remainder and is never shorter than 16 elements unless it is the whole tensor."""
    if chunk_elements % NORMAL_BLOCK:
        raise ValueError(f"chunk_elements must be a multiple of {NORMAL_BLOCK}, got {chunk_elements}")
    bounds, start = [], 0
    while numel - start >= chunk_elements + NORMAL_BLOCK:
        bounds.append((start, start + chunk_elements))
        start += chunk_elements
    bounds.append((start, numel))
    return bounds


@functools.cache
def chunked_draws_match(dtype: torch.dtype) -> bool:
    """Whether drawing a CPU tensor chunk by chunk gives torch.randn's numbers for it."""
    generator = torch.Generator()
    for numel, chunk in ((NORMAL_BLOCK * 9 + 7, 2 * NORMAL_BLOCK), (NORMAL_BLOCK * 8, 2 * NORMAL_BLOCK), (5, 16)):
        whole = torch.randn(numel, generator=generator.manual_seed(1), dtype=dtype)
        generator.manual_seed(1)
        pieces = [torch.empty(stop - start, dtype=dtype).normal_(generator=generator)
                  for start, stop in chunk_bounds(numel, chunk)]
        if not torch.equal(torch.cat(pieces), whole):
            return False
    return True


def chunk_seed(seed: int, chunk: int) -> int:
    """The per-chunk stream's generator seed for global chunk `chunk` of step `seed`."""
    return int(np.random.SeedSequence(seed, spawn_key=(chunk,)).generate_state(1, np.uint64)[0])


class MeZO:
    def __init__(self, named_parameters: list[tuple[str, torch.Tensor]], *, lr: float, eps: float,
                 weight_decay: float, workers: int | None = None, chunk_elements: int = CHUNK_ELEMENTS,
                 z_stream: str = "auto"):
        """workers: threads that redraw z in the second and third pass of a step (CPU,
        sequential stream only); default: torch's thread count for models of 4M+ parameters,
        else 1. z_stream: "auto" (per-chunk on CUDA, else sequential), "sequential" or
        "per-chunk"; `self.z_stream` holds the resolved name."""
        if not named_parameters:
            raise ValueError("MeZO needs at least one trainable parameter")
        self.names = [name for name, _ in named_parameters]
        self.params = [param for _, param in named_parameters]
        self.decays = [not any(part in name for part in NO_DECAY_NAME_PARTS) for name in self.names]
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        device = self.params[0].device
        if z_stream not in Z_STREAMS:
            raise ValueError(f"z_stream must be one of {', '.join(Z_STREAMS)}; got {z_stream!r}")
        if z_stream == "auto":
            z_stream = "per-chunk" if device.type == "cuda" else "sequential"
        self.z_stream, self.chunk_elements = z_stream, chunk_elements
        self.generator = torch.Generator(device=device)
        self.chunks = self._plan_chunks(device, chunk_elements)
        self._chunk_seeds: tuple[int, list[int]] | None = None   # (step seed, per-chunk seeds)

        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        total = sum(param.numel() for param in self.params)
        if device.type != "cpu" or z_stream == "per-chunk":
            workers = 1
        elif workers is None:
            workers = torch.get_num_threads() if total >= PARALLEL_MIN_ELEMENTS else 1
        self._parts = self._balanced_parts(workers)
        self.workers = len(self._parts)   # threads that actually share the redraws
        self._largest_chunk = max((c.stop - c.start for c in self.chunks if not c.whole), default=0)
        self._scratch: dict[tuple[int, torch.dtype], torch.Tensor] = {}   # (part, dtype) -> buffer
        self._part_generators = [torch.Generator() for _ in self._parts]
        self._pool = ThreadPoolExecutor(len(self._parts), thread_name_prefix="mezo-z") if len(self._parts) > 1 else None
        self._states_seed: int | None = None
        self._states: list[torch.Tensor] = []    # generator state at the start of each chunk

    def _plan_chunks(self, device: torch.device, chunk_elements: int) -> list[Chunk]:
        chunks = []
        for index, param in enumerate(self.params):
            chunkable = param.is_contiguous() and (
                self.z_stream == "per-chunk" or (device.type == "cpu" and chunked_draws_match(param.dtype)))
            bounds = chunk_bounds(param.numel(), chunk_elements) if chunkable else [(0, param.numel())]
            chunks.extend(Chunk(index, start, stop, whole=not chunkable) for start, stop in bounds)
        return chunks

    def _balanced_parts(self, parts: int) -> list[range]:
        """Up to `parts` consecutive runs of chunks with about the same number of elements."""
        sizes = [chunk.stop - chunk.start for chunk in self.chunks]
        total, bounds, running = sum(sizes), [0], 0
        for index, size in enumerate(sizes):
            running += size
            if len(bounds) < parts and running >= total * len(bounds) / parts and index + 1 < len(sizes):
                bounds.append(index + 1)
        bounds.append(len(sizes))
        return [range(start, stop) for start, stop in zip(bounds, bounds[1:])]

    # --- z ---------------------------------------------------------------------------------

    def _draw(self, chunk: Chunk, generator: torch.Generator, part: int) -> torch.Tensor:
        param = self.params[chunk.index]
        if chunk.whole:
            return torch.randn(param.shape, generator=generator, dtype=param.dtype, device=param.device)
        key = (part, param.dtype)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(self._largest_chunk, dtype=param.dtype, device=param.device)
        return self._scratch[key][: chunk.stop - chunk.start].normal_(generator=generator)

    def _target(self, chunk: Chunk) -> torch.Tensor:
        param = self.params[chunk.index]
        return param if chunk.whole else param.view(-1)[chunk.start:chunk.stop]

    def _per_chunk_draws(self, seed: int) -> Iterator[tuple[Chunk, torch.Tensor]]:
        """The per-chunk stream: each chunk drawn from its own seed (kept for the step's other passes)."""
        if self._chunk_seeds is None or self._chunk_seeds[0] != seed:
            self._chunk_seeds = (seed, [chunk_seed(seed, k) for k in range(len(self.chunks))])
        for chunk, generator_seed in zip(self.chunks, self._chunk_seeds[1]):
            yield chunk, self._draw(chunk, self.generator.manual_seed(generator_seed), 0)

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, z) pairs, whole tensors; what every pass applies, chunked or not."""
        if self.z_stream == "sequential":
            self.generator.manual_seed(seed)
            for param in self.params:
                yield param, torch.randn(param.shape, generator=self.generator, dtype=param.dtype,
                                         device=param.device)
            return
        for chunk, chunk_z in self._per_chunk_draws(seed):
            param = self.params[chunk.index]
            if chunk.start == 0:
                z = torch.empty(param.numel(), dtype=param.dtype, device=param.device)
            z[chunk.start:chunk.stop] = chunk_z.reshape(-1)
            if chunk.stop == param.numel():
                yield param, z.view(param.shape)

    def _walk(self, seed: int, apply: Callable[[Chunk, torch.Tensor, torch.Tensor], None]) -> None:
        """apply(chunk, target, z) over every chunk, with z drawn from `seed`."""
        if self.z_stream == "per-chunk":
            for chunk, z in self._per_chunk_draws(seed):
                apply(chunk, self._target(chunk), z)
            return
        if self._pool is not None and self._states_seed == seed:
            list(self._pool.map(lambda part: self._walk_part(part, apply), range(len(self._parts))))
            return
        self.generator.manual_seed(seed)
        if self._pool is None:
            for chunk in self.chunks:
                apply(chunk, self._target(chunk), self._draw(chunk, self.generator, 0))
            return
        # First pass of this seed: draw in order, noting each chunk's starting state; the
        # pool applies chunk i while this thread draws chunk i+1 into the other buffer.
        states, pending = [], None
        for position, chunk in enumerate(self.chunks):
            states.append(self.generator.get_state())
            z = self._draw(chunk, self.generator, position % 2)
            if pending is not None:
                pending.result()
            pending = self._pool.submit(self._apply_no_grad, apply, chunk, z)
        pending.result()
        self._states_seed, self._states = seed, states

    @torch.no_grad()
    def _apply_no_grad(self, apply, chunk: Chunk, z: torch.Tensor) -> None:
        apply(chunk, self._target(chunk), z)

    @torch.no_grad()   # grad mode is per thread: the pool's threads need it too
    def _walk_part(self, part: int, apply) -> None:
        generator = self._part_generators[part]
        generator.set_state(self._states[self._parts[part].start])   # the part's chunks then follow in order
        for index in self._parts[part]:
            chunk = self.chunks[index]
            apply(chunk, self._target(chunk), self._draw(chunk, generator, part))

    # --- the passes ------------------------------------------------------------------------

    @torch.no_grad()
    def perturb(self, seed: int, scale: float) -> None:
        """p <- p + scale * z."""
        self._walk(seed, lambda chunk, target, z: target.add_(z, alpha=scale))

    @torch.no_grad()
    def restore_and_update(self, seed: int, projected_grad: float) -> None:
        """From p - eps*z: p0 = p + eps*z, then p0 <- p0 - lr * (projected_grad * z + wd * p0)."""
        lr, eps, wd = self.lr, self.eps, self.weight_decay

        def apply(chunk: Chunk, target: torch.Tensor, z: torch.Tensor) -> None:
            if self.decays[chunk.index] and wd:
                target.add_(z, alpha=eps).mul_(1.0 - lr * wd).add_(z, alpha=-lr * projected_grad)
            else:
                target.add_(z, alpha=eps - lr * projected_grad)

        self._walk(seed, apply)

    @torch.no_grad()
    def step(self, loss_fn: Callable[[], float], seed: int) -> MezoStepResult:
        self.perturb(seed, +self.eps)
        loss_plus = loss_fn()
        self.perturb(seed, -2.0 * self.eps)
        loss_minus = loss_fn()
        projected_grad = (loss_plus - loss_minus) / (2.0 * self.eps)
        self.restore_and_update(seed, projected_grad)
        return MezoStepResult(loss_plus=loss_plus, loss_minus=loss_minus, projected_grad=projected_grad)
