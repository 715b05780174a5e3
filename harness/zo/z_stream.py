"""MeZO's z: N(0, 1) draws, one per parameter element, regenerated from the step's seed.

z is never stored: every pass of a step redraws it from the seed, in the same order. A
stream walks the parameters for a pass: `apply(seed, fn)` calls `fn(param_index, target, z)`
with `target` the parameter or a chunk of it (a view) and `z` that target's draws;
`noise(seed)` yields whole (parameter, z) pairs, the same numbers (tests, estimates).

Two z streams (`z_stream`; "auto" picks per-chunk on CUDA, sequential elsewhere):
- "sequential": one generator stream over the parameters, the draws of
  `torch.randn(param.shape, generator=g)` for each parameter in turn (the reference code's
  `torch.manual_seed` + `torch.normal` give the same numbers). `WholeTensorStream` draws it
  exactly so, the reference the fast stream is checked against; `SequentialChunkStream`
  draws the same numbers bit for bit, faster (the CPU default, below).
- "per-chunk" (`PerChunkStream`): the parameters are cut into the chunks below and chunk k
  (counted over all parameters) draws `normal_` from a generator seeded with
  `numpy.random.SeedSequence(seed, spawn_key=(k,)).generate_state(1, uint64)[0]`, numpy's
  k-th independent child of the step seed. Chunks need no shared generator state, so
  every pass just reseeds per chunk, and no parameter-sized tensor is ever allocated (a
  non-contiguous parameter, which no model here has, is drawn whole as its one chunk).

Speed without changing a single draw (CPU, `SequentialChunkStream`):
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
  The threads are a pool the stream owns: close it (`close()`, or use the stream as a
  context manager) when done.

CUDA uses the per-chunk stream: Philox offsets depend on each call's size, so slicing one
sequential draw into chunks would change the numbers, while drawing whole tensors allocates
the largest parameter per step (206 MB for roberta-large, more than an SST-2 inference
batch). Per-chunk seeds make chunks independent and exactly reproducible (for a given torch,
GPU model and chunk size: the kernel's grid depends on the GPU's multiprocessor count). Its
z are other numbers than whole-tensor draws, statistically the same (iid N(0, 1)); the CPU
default stream is unchanged, bit for bit. On CUDA the passes are bound by memory bandwidth.

No pass allocates a parameter-sized z on CPU, so a MeZO step's peak memory is the inference
forward's (the reference's `param.data = param.data + scale * z * eps` allocates a new tensor
per parameter per pass; measured on CPU: 1.010 x vs 1.48 x, results/report/perf.md). The
per-chunk (CUDA) stream has not been measured on a GPU yet; tests/zo/test_cuda_z_stream.py
checks its logic on CPU and has a `gpu` test for the memory.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 20            # 4 MiB of fp32 per thread; a multiple of 16
NORMAL_BLOCK = 16                   # torch's CPU normal_ works in blocks of 16 draws
PARALLEL_MIN_ELEMENTS = 1 << 22     # below ~4M parameters threads cost more than they save
Z_STREAMS = ("auto", "sequential", "per-chunk")

ApplyFn = Callable[[int, torch.Tensor, torch.Tensor], None]   # fn(param_index, target, z)


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


class ZStream(ABC):
    """z for a list of parameters, drawn from a seed. A context manager: `close()` frees
    what the stream holds (a thread pool); a closed stream draws no more."""

    name: str                    # the stream of numbers: "sequential" or "per-chunk"
    chunk_elements: int | None   # chunk size (None: whole tensors)
    workers: int = 1             # threads that draw z
    params: list[torch.Tensor]
    chunks: list[Chunk]          # the pieces `apply` hands to fn, in order

    @abstractmethod
    def apply(self, seed: int, fn: ApplyFn) -> None:
        """fn(param_index, target, z) over every chunk, z drawn from `seed`."""

    @abstractmethod
    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, z) pairs, whole tensors: the numbers `apply` hands out."""

    def close(self) -> None:
        pass

    def __enter__(self) -> ZStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class WholeTensorStream(ZStream):
    """The sequential stream, simply: one generator, `torch.randn(param.shape)` per parameter
    in order (the reference code's numbers). The reference the other streams are tested against."""

    name = "sequential"
    chunk_elements = None

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)
        self.chunks = [Chunk(index, 0, param.numel(), whole=True) for index, param in enumerate(self.params)]
        self._generator = torch.Generator(device=self.params[0].device)

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._generator.manual_seed(seed)
        for param in self.params:
            yield param, torch.randn(param.shape, generator=self._generator, dtype=param.dtype, device=param.device)

    def apply(self, seed: int, fn: ApplyFn) -> None:
        for index, (param, z) in enumerate(self.noise(seed)):
            fn(index, param, z)


class _ChunkedStream(ZStream):
    """Parameters cut into `chunk_bounds` chunks (those for which `chunkable(param)`; the
    others are one whole chunk), drawn into reused scratch buffers."""

    def __init__(self, params: Sequence[torch.Tensor], chunk_elements: int,
                 chunkable: Callable[[torch.Tensor], bool]):
        self.params, self.chunk_elements = list(params), chunk_elements
        self.chunks = []
        for index, param in enumerate(self.params):
            if chunkable(param):
                self.chunks.extend(Chunk(index, start, stop, whole=False)
                                   for start, stop in chunk_bounds(param.numel(), chunk_elements))
            else:
                self.chunks.append(Chunk(index, 0, param.numel(), whole=True))
        self._largest_chunk = max((c.stop - c.start for c in self.chunks if not c.whole), default=0)
        self._scratch: dict[tuple[int, torch.dtype], torch.Tensor] = {}   # (buffer, dtype) -> buffer

    def _draw(self, chunk: Chunk, generator: torch.Generator, buffer: int) -> torch.Tensor:
        param = self.params[chunk.index]
        if chunk.whole:
            return torch.randn(param.shape, generator=generator, dtype=param.dtype, device=param.device)
        key = (buffer, param.dtype)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(self._largest_chunk, dtype=param.dtype, device=param.device)
        return self._scratch[key][: chunk.stop - chunk.start].normal_(generator=generator)

    def _target(self, chunk: Chunk) -> torch.Tensor:
        param = self.params[chunk.index]
        return param if chunk.whole else param.view(-1)[chunk.start:chunk.stop]


class SequentialChunkStream(_ChunkedStream):
    """`WholeTensorStream`'s numbers bit for bit, drawn chunk by chunk on CPU, the redraws on
    `workers` threads (default: torch's thread count for models of 4M+ parameters, else 1)."""

    name = "sequential"

    def __init__(self, params: Sequence[torch.Tensor], workers: int | None = None,
                 chunk_elements: int = CHUNK_ELEMENTS):
        if params[0].device.type != "cpu":
            raise ValueError("SequentialChunkStream draws on CPU only (see the module docstring)")
        super().__init__(params, chunk_elements,
                         chunkable=lambda param: param.is_contiguous() and chunked_draws_match(param.dtype))
        self._reference = WholeTensorStream(self.params)
        self._generator = torch.Generator()
        if workers is None:
            total = sum(param.numel() for param in self.params)
            workers = torch.get_num_threads() if total >= PARALLEL_MIN_ELEMENTS else 1
        self._parts = self._balanced_parts(workers)
        self.workers = len(self._parts)   # threads that actually share the redraws
        self._part_generators = [torch.Generator() for _ in self._parts]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mezo-z") if self.workers > 1 else None
        self._states_seed: int | None = None
        self._states: list[torch.Tensor] = []    # generator state at the start of each chunk

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

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._reference.noise(seed)

    def apply(self, seed: int, fn: ApplyFn) -> None:
        if self._pool is None:
            self._generator.manual_seed(seed)
            for chunk in self.chunks:
                fn(chunk.index, self._target(chunk), self._draw(chunk, self._generator, 0))
        elif self._states_seed == seed:
            list(self._pool.map(lambda part: self._redraw_part(part, fn), range(len(self._parts))))
        else:
            self._first_pass(seed, fn)

    def _first_pass(self, seed: int, fn: ApplyFn) -> None:
        """Draw in order, noting each chunk's starting state; the pool applies chunk i while
        this thread draws chunk i+1 into the other buffer."""
        self._generator.manual_seed(seed)
        states, pending = [], None
        for position, chunk in enumerate(self.chunks):
            states.append(self._generator.get_state())
            z = self._draw(chunk, self._generator, position % 2)
            if pending is not None:
                pending.result()
            pending = self._pool.submit(self._apply_no_grad, fn, chunk, z)
        pending.result()
        self._states_seed, self._states = seed, states

    @torch.no_grad()   # grad mode is per thread: the pool's threads need it too
    def _apply_no_grad(self, fn: ApplyFn, chunk: Chunk, z: torch.Tensor) -> None:
        fn(chunk.index, self._target(chunk), z)

    @torch.no_grad()
    def _redraw_part(self, part: int, fn: ApplyFn) -> None:
        generator = self._part_generators[part]
        generator.set_state(self._states[self._parts[part].start])   # the part's chunks then follow in order
        for index in self._parts[part]:
            chunk = self.chunks[index]
            fn(chunk.index, self._target(chunk), self._draw(chunk, generator, part))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class PerChunkStream(_ChunkedStream):
    """The per-chunk stream (the CUDA default): chunk k drawn from `chunk_seed(seed, k)`."""

    name = "per-chunk"

    def __init__(self, params: Sequence[torch.Tensor], chunk_elements: int = CHUNK_ELEMENTS):
        super().__init__(params, chunk_elements, chunkable=lambda param: param.is_contiguous())
        self._generator = torch.Generator(device=self.params[0].device)
        self._chunk_seeds: tuple[int, list[int]] | None = None   # (step seed, per-chunk seeds)

    def _draws(self, seed: int) -> Iterator[tuple[Chunk, torch.Tensor]]:
        """Each chunk drawn from its own seed (kept for the step's other passes)."""
        if self._chunk_seeds is None or self._chunk_seeds[0] != seed:
            self._chunk_seeds = (seed, [chunk_seed(seed, k) for k in range(len(self.chunks))])
        for chunk, generator_seed in zip(self.chunks, self._chunk_seeds[1]):
            yield chunk, self._draw(chunk, self._generator.manual_seed(generator_seed), 0)

    def apply(self, seed: int, fn: ApplyFn) -> None:
        for chunk, z in self._draws(seed):
            fn(chunk.index, self._target(chunk), z)

    def noise(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk, chunk_z in self._draws(seed):
            param = self.params[chunk.index]
            if chunk.start == 0:
                z = torch.empty(param.numel(), dtype=param.dtype, device=param.device)
            z[chunk.start:chunk.stop] = chunk_z.reshape(-1)
            if chunk.stop == param.numel():
                yield param, z.view(param.shape)


def make_z_stream(params: Sequence[torch.Tensor], z_stream: str = "auto", workers: int | None = None,
                  chunk_elements: int = CHUNK_ELEMENTS) -> ZStream:
    """The stream named `z_stream` over `params`: "auto" is "per-chunk" on CUDA, else
    "sequential"; "sequential" is `SequentialChunkStream` on CPU, else `WholeTensorStream`.
    workers: threads of `SequentialChunkStream` (the other streams use one)."""
    if z_stream not in Z_STREAMS:
        raise ValueError(f"z_stream must be one of {', '.join(Z_STREAMS)}; got {z_stream!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    device = params[0].device
    if z_stream == "auto":
        z_stream = "per-chunk" if device.type == "cuda" else "sequential"
    if z_stream == "per-chunk":
        return PerChunkStream(params, chunk_elements)
    if device.type == "cpu":
        return SequentialChunkStream(params, workers, chunk_elements)
    return WholeTensorStream(params)
