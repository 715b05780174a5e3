"""The z streams behind MeZO: the fast CPU stream hands out exactly the whole-tensor
reference's numbers, streams with threads shut them down when closed, and MeZO over the
reference stream steps exactly as the default engine."""

import pytest
import torch

from harness.tasks.batching import collate
from harness.zo.mezo import MeZO
from harness.zo.z_stream import (
    CHUNK_ELEMENTS,
    PerChunkStream,
    SequentialChunkStream,
    WholeTensorStream,
    make_z_stream,
)

CHUNK = 32
# 323, 19, 300, 5 and 320 elements, and a non-contiguous (transposed) 12 x 40: ragged tails,
# single short chunks, and a parameter the chunked stream must draw whole.
SHAPES = {"encoder.weight": (17, 19), "encoder.bias": (19,), "head.weight": (300,),
          "head.layer_norm.weight": (5,), "head.dense.weight": (40, 8)}


def make_params(dtype=torch.float32):
    params = [torch.zeros(shape, dtype=dtype) for shape in SHAPES.values()]
    return params + [torch.zeros(40, 12, dtype=dtype).t()]


def applied(stream, seed):
    """What one pass of `stream` hands out, gathered into whole tensors (NaN where nothing came)."""
    gathered = [torch.full_like(param, float("nan")) for param in stream.params]

    def gather(index, target, z):
        param = stream.params[index]
        if target.shape == param.shape:
            gathered[index].copy_(z)
        else:   # a chunk, a view of the flattened parameter
            start = (target.data_ptr() - param.data_ptr()) // target.element_size()
            gathered[index].view(-1)[start:start + target.numel()] = z

    stream.apply(seed, gather)
    return gathered


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("workers", [1, 2])
def test_sequential_chunk_stream_is_the_whole_tensor_stream_bit_for_bit(workers, dtype):
    params = make_params(dtype)
    reference = WholeTensorStream(params)
    with SequentialChunkStream(params, workers=workers, chunk_elements=CHUNK) as stream:
        assert stream.workers == workers and len(stream.chunks) > len(params)
        assert stream.chunks[-1].whole and not any(chunk.whole for chunk in stream.chunks[:-1])
        for seed in (11, 11, 11, 12, 11):   # first pass notes states; repeats redraw (on threads if 2)
            expected = [z for _, z in reference.noise(seed)]
            for name, got, want in zip([*SHAPES, "transposed"], applied(stream, seed), expected):
                assert torch.equal(got, want), (seed, name)
            for (param, got), want in zip(stream.noise(seed), expected):
                assert torch.equal(got, want)


def test_whole_tensor_stream_is_one_generator_over_the_parameters():
    params = make_params()
    generator = torch.Generator().manual_seed(4)
    expected = [torch.randn(param.shape, generator=generator) for param in params]
    for got, want in zip(applied(WholeTensorStream(params), 4), expected):
        assert torch.equal(got, want)


def test_per_chunk_stream_applies_its_own_noise():
    params = make_params()
    stream = PerChunkStream(params, chunk_elements=CHUNK)
    for got, (_, want) in zip(applied(stream, 3), stream.noise(3)):
        assert torch.equal(got, want)


def test_make_z_stream_resolves_names_as_mezo_records_them():
    params = make_params()
    auto = make_z_stream(params)
    assert isinstance(auto, SequentialChunkStream) and auto.workers == 1   # small model: no threads
    assert (auto.name, auto.chunk_elements) == ("sequential", CHUNK_ELEMENTS)
    per_chunk = make_z_stream(params, "per-chunk", chunk_elements=CHUNK)
    assert isinstance(per_chunk, PerChunkStream)
    assert (per_chunk.name, per_chunk.chunk_elements, per_chunk.workers) == ("per-chunk", CHUNK, 1)
    engine = MeZO([(str(i), p) for i, p in enumerate(params)], lr=0.0, eps=1.0, weight_decay=0.0)
    assert (engine.z_stream, engine.chunk_elements, engine.workers) == ("sequential", CHUNK_ELEMENTS, 1)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        make_z_stream(params, workers=0)


def _pool_is_shut_down(stream):
    pool = stream._pool
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)
    return pool._shutdown and not any(thread.is_alive() for thread in pool._threads)


def test_closing_a_stream_shuts_its_pool_down():
    params = make_params()
    with SequentialChunkStream(params, workers=2, chunk_elements=CHUNK) as stream:
        stream.apply(1, lambda index, target, z: target.add_(z))
        stream.apply(1, lambda index, target, z: target.add_(z))   # the redraw runs on the pool
        assert not stream._pool._shutdown
    assert _pool_is_shut_down(stream)

    stream = SequentialChunkStream(params, workers=2, chunk_elements=CHUNK)
    stream.close()
    assert _pool_is_shut_down(stream)
    for poolless in (WholeTensorStream(params), PerChunkStream(params), SequentialChunkStream(params, workers=1)):
        poolless.close()   # nothing to shut down


def test_mezo_closes_its_stream():
    named = [(str(i), p) for i, p in enumerate(make_params())]
    with MeZO(named, lr=1e-2, eps=1e-3, weight_decay=0.1, workers=2, chunk_elements=CHUNK) as engine:
        assert engine.workers == 2
        engine.step(lambda: 0.5, seed=3)
    assert _pool_is_shut_down(engine.stream)
    engine = MeZO(named, lr=1e-2, eps=1e-3, weight_decay=0.1, workers=2, chunk_elements=CHUNK)
    engine.close()
    assert _pool_is_shut_down(engine.stream)


@pytest.mark.parametrize("options", [{}, {"workers": 2, "chunk_elements": 64}])
def test_mezo_over_the_whole_tensor_stream_steps_as_the_default_engine(options, build_micro_model, micro_tokenizer,
                                                                       micro_objective):
    runs = []
    for reference in (False, True):
        model = build_micro_model(micro_tokenizer, seed=3)
        objective, encoded = micro_objective(micro_tokenizer, model)
        batch = collate(encoded, micro_tokenizer.pad_token_id, torch.device("cpu"))
        named = list(model.named_parameters())
        z_stream = WholeTensorStream([param for _, param in named]) if reference else "auto"
        with MeZO(named, lr=1e-2, eps=1e-3, weight_decay=0.1, z_stream=z_stream, **options) as engine:
            assert engine.z_stream == "sequential"
            results = [engine.step(lambda: float(objective.loss(batch)), seed) for seed in (5, 6, 5)]
        runs.append((results, {name: param.detach().clone() for name, param in named}))
    (default_results, default_params), (reference_results, reference_params) = runs
    assert default_results == reference_results
    for name, param in default_params.items():
        assert torch.equal(param, reference_params[name]), name


def test_mezo_refuses_a_stream_over_other_parameters():
    named = [(str(i), p) for i, p in enumerate(make_params())]
    with pytest.raises(ValueError, match="other parameters"):
        MeZO(named, lr=0.0, eps=1.0, weight_decay=0.0, z_stream=WholeTensorStream(make_params()))
