"""The per-chunk z stream (the CUDA default): each chunk drawn from its own seed, the same z
in every pass of a step, never a parameter-sized allocation. Its logic is tested on CPU
with z_stream="per-chunk"; the CPU default stays the sequential stream."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.zo.mezo import MeZO
from harness.zo.z_stream import NORMAL_BLOCK, chunk_bounds, chunk_seed

CHUNK = 32
# Sizes 323, 19, 300, 5 and 320: several chunks, a single short chunk, ragged tails.
SHAPES = {"encoder.weight": (17, 19), "encoder.bias": (19,), "head.weight": (300,),
          "head.layer_norm.weight": (5,), "head.dense.weight": (40, 8)}


def make_params(seed=0, zero=False, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [(name, torch.zeros(shape, dtype=dtype) if zero else torch.randn(shape, generator=generator, dtype=dtype))
            for name, shape in SHAPES.items()]


def per_chunk(named, lr=0.0, eps=1e-3, weight_decay=0.0):
    return MeZO(named, lr=lr, eps=eps, weight_decay=weight_decay, z_stream="per-chunk", chunk_elements=CHUNK)


def whole_noise(engine, seed):
    return {name: z.clone() for name, (_, z) in zip(engine.names, engine.noise(seed))}


def snapshot(named):
    return {name: param.clone() for name, param in named}


def test_chunk_seeds_are_pinned_and_well_mixed():
    # numpy SeedSequence(seed, spawn_key=(chunk,)): fixed numbers, part of the CUDA z definition.
    assert [chunk_seed(0, 0), chunk_seed(0, 1), chunk_seed(1, 0)] == [
        8668861027912758289, 4881901421217228719, 8431846347943309920]
    seeds = {chunk_seed(seed, chunk) for seed in range(64) for chunk in range(64)}
    assert len(seeds) == 64 * 64          # no (seed, chunk) pair shares a seed, e.g. (s, k+1) and (s+1, k)
    assert all(value < 2**64 for value in seeds)


def test_per_chunk_passes_see_the_same_z_and_restore():
    named, eps = make_params(seed=1), 1e-3
    engine = per_chunk(named, eps=eps)
    assert engine.z_stream == "per-chunk" and engine.workers == 1
    assert len(engine.chunks) == sum(len(chunk_bounds(torch.Size(s).numel(), CHUNK)) for s in SHAPES.values())
    p0, z = snapshot(named), whole_noise(engine, seed=5)

    # Each pass applies exactly noise(seed): bit for bit the same float ops on whole tensors.
    expected = {name: p.add(z[name], alpha=eps) for name, p in p0.items()}
    engine.perturb(5, eps)
    for name, param in named:
        assert torch.equal(param, expected[name]), name
    expected = {name: p.add(z[name], alpha=-2 * eps) for name, p in expected.items()}
    engine.perturb(5, -2 * eps)
    for name, param in named:
        assert torch.equal(param, expected[name]), name
    expected = {name: p.add(z[name], alpha=eps) for name, p in expected.items()}
    engine.restore_and_update(5, projected_grad=0.0)
    for name, param in named:
        assert torch.equal(param, expected[name]), name
        # p + eps*z - 2*eps*z + eps*z is p only up to float rounding in general.
        torch.testing.assert_close(param, p0[name], rtol=0, atol=1e-6)


def test_per_chunk_step_from_zero_restores_bit_for_bit():
    # From 0 with eps = 1 every pass is exact: z, -z, then exactly 0 -- only if all three z agree.
    named = make_params(zero=True)
    engine = per_chunk(named, eps=1.0)
    z, seen = whole_noise(engine, seed=9), []
    result = engine.step(lambda: seen.append(snapshot(named)) or 0.25, seed=9)
    assert result.projected_grad == 0.0
    for name, param in named:
        assert torch.equal(seen[0][name], z[name]) and torch.equal(seen[1][name], -z[name]), name
        assert torch.equal(param, torch.zeros_like(param)), name


def test_per_chunk_z_is_each_chunk_drawn_from_its_own_seed():
    named = make_params(zero=True)
    engine = per_chunk(named, eps=1.0)
    engine.perturb(3, 1.0)
    chunk = 0
    for name, param in named:
        pieces = []
        for start, stop in chunk_bounds(param.numel(), CHUNK):
            generator = torch.Generator().manual_seed(chunk_seed(3, chunk))
            pieces.append(torch.empty(stop - start).normal_(generator=generator))
            chunk += 1
        assert torch.equal(param.view(-1), torch.cat(pieces)), name
        heads = [piece[:NORMAL_BLOCK] for piece in pieces if len(piece) >= NORMAL_BLOCK]
        assert all(not torch.equal(a, b) for i, a in enumerate(heads) for b in heads[i + 1:]), name
    assert chunk == len(engine.chunks)


def test_per_chunk_z_depends_on_the_seed():
    engine = per_chunk(make_params())
    first, again, other = whole_noise(engine, 1), whole_noise(engine, 1), whole_noise(engine, 2)
    for name in SHAPES:
        assert torch.equal(first[name], again[name]), name
        assert not torch.equal(first[name], other[name]), name


def test_per_chunk_z_is_standard_normal():
    engine = MeZO([("w", torch.zeros(100_000))], lr=0.0, eps=1.0, weight_decay=0.0, z_stream="per-chunk",
                  chunk_elements=1024)
    assert len(engine.chunks) == len(chunk_bounds(100_000, 1024)) == 98
    z = next(engine.noise(seed=17))[1]
    assert abs(float(z.mean())) < 0.015       # standard errors about 0.003
    assert abs(float(z.std()) - 1.0) < 0.015
    assert 0.945 < float((z.abs() < 1.96).float().mean()) < 0.955

    def correlation(a, b):
        return abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))

    assert correlation(z[:-1], z[1:]) < 0.015               # neighbours, within and across chunks
    rows = z[: 96 * 1024].view(96, 1024)                    # the same position in consecutive chunks
    assert correlation(rows[:-1].flatten(), rows[1:].flatten()) < 0.015


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_per_chunk_step_applies_the_closed_form(weight_decay):
    named, lr, eps, seed = make_params(seed=2), 1e-2, 1e-3, 1234
    engine = per_chunk(named, lr=lr, eps=eps, weight_decay=weight_decay)
    p0, z = snapshot(named), whole_noise(engine, seed)
    losses = iter([0.75, 0.5])
    g = engine.step(lambda: next(losses), seed).projected_grad
    assert g == pytest.approx(0.25 / (2 * eps))
    for (name, param), decays in zip(named, engine.decays):
        assert decays == (name in ("encoder.weight", "head.weight", "head.dense.weight"))
        expected = p0[name] - lr * (g * z[name] + (weight_decay * p0[name] if decays else 0.0))
        torch.testing.assert_close(param, expected, rtol=0, atol=2e-6)


class NewStorages(TorchDispatchMode):
    """Bytes of every storage an op returns that was not there before (an allocation)."""

    def __init__(self, existing):
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in existing}
        self.allocated = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() not in self.known:
                self.known.add(value.untyped_storage().data_ptr())
                self.allocated.append(value.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_chunk_stream_allocates_one_chunk_buffer_per_dtype(monkeypatch, dtype):
    named = make_params(dtype=dtype) + [("big.weight", torch.randn(64, 100, dtype=dtype))]
    engine = per_chunk(named, weight_decay=0.1)

    def no_whole_tensors(*args, **kwargs):
        raise AssertionError("torch.randn called: a whole-tensor draw")

    monkeypatch.setattr(torch, "randn", no_whole_tensors)
    with NewStorages([param for _, param in named]) as mode:
        losses = iter([0.7, 0.6, 0.5, 0.4])
        engine.step(lambda: next(losses), seed=1)
        engine.step(lambda: next(losses), seed=2)
    largest = max(chunk.stop - chunk.start for chunk in engine.chunks)
    assert largest < CHUNK + NORMAL_BLOCK                   # chunk_bounds' last chunk takes a <16 tail
    assert mode.allocated == [largest * dtype.itemsize]     # the scratch buffer, once
    assert [tuple(buffer.shape) for buffer in engine.stream._scratch.values()] == [(largest,)]


def test_cpu_default_is_the_sequential_stream_of_whole_randn_draws():
    named = make_params(zero=True)
    engine = MeZO(named, lr=0.0, eps=1.0, weight_decay=0.0, chunk_elements=CHUNK)
    assert engine.z_stream == "sequential"
    assert MeZO(named, lr=0.0, eps=1.0, weight_decay=0.0, z_stream="sequential").z_stream == "sequential"
    engine.perturb(4, 1.0)
    generator = torch.Generator().manual_seed(4)
    for name, param in named:
        assert torch.equal(param, torch.randn(param.shape, generator=generator)), name


def test_z_stream_option_is_checked():
    with pytest.raises(ValueError, match="z_stream must be one of auto, sequential, per-chunk; got 'philox'"):
        MeZO(make_params(), lr=0.0, eps=1.0, weight_decay=0.0, z_stream="philox")


@pytest.mark.gpu
def test_cuda_steps_draw_per_chunk_into_one_buffer():
    device = torch.device("cuda")
    big = torch.zeros(50_000, 1024, device=device)
    named = [("embeddings.weight", big), ("embeddings.bias", torch.zeros(1024, device=device))]
    engine = MeZO(named, lr=0.0, eps=1.0, weight_decay=0.1)
    assert engine.z_stream == "per-chunk" and engine.workers == 1
    buffer_bytes = max(chunk.stop - chunk.start for chunk in engine.chunks) * 4
    assert buffer_bytes <= 4 * (engine.chunk_elements + NORMAL_BLOCK)

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    engine.step(lambda: 0.5, seed=22)          # the first step: it allocates the chunk buffer
    torch.cuda.synchronize()
    assert buffer_bytes <= torch.cuda.max_memory_allocated() - baseline <= 1.1 * buffer_bytes

    seen = []
    engine.step(lambda: seen.append([p.cpu() for _, p in named]) or 0.5, seed=21)   # g = 0
    for _, param in named:   # from 0 with eps = 1: z, -z, then exactly 0 again
        assert torch.equal(param, torch.zeros_like(param))
    z = [z.cpu() for _, z in engine.noise(21)]
    for index in range(len(named)):
        assert torch.equal(seen[0][index], z[index]) and torch.equal(seen[1][index], -z[index])
    flat = torch.cat([t.flatten() for t in z])
    assert abs(float(flat.mean())) < 0.01 and abs(float(flat.std()) - 1.0) < 0.01
