"""The fast MeZO engine draws exactly the z of one torch.randn per parameter, whether it
draws whole tensors, chunks, or chunks on several threads; and the reference-style step
(the performance baseline) computes the same update."""

import pytest
import torch

from harness.backends.hf import MaskedLMLabelWordHead
from harness.measure.memory import measure_memory
from harness.tasks.batching import collate
from harness.tasks.objective import Objective
from harness.tasks.prompt import PromptEncoder, label_word_ids
from harness.tasks.spec import Example
from harness.zo.mezo import MeZO
from harness.zo.reference_step import reference_style_step
from harness.zo.z_stream import chunk_bounds, chunked_draws_match

TEMPLATE = ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")


def test_chunk_bounds_are_multiples_of_16_and_the_last_is_never_short():
    assert chunk_bounds(100, 32) == [(0, 32), (32, 64), (64, 100)]
    assert chunk_bounds(47, 32) == [(0, 47)]          # a 15-element tail would change the draws
    assert chunk_bounds(48, 32) == [(0, 32), (32, 48)]
    assert chunk_bounds(5, 32) == [(0, 5)]
    with pytest.raises(ValueError, match="multiple of 16"):
        chunk_bounds(100, 24)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_this_torch_draws_chunks_as_one_tensor(dtype):
    # The engine checks this itself and falls back to whole tensors; failing here means a
    # torch upgrade changed its CPU normal_ and the fast path is off.
    assert chunked_draws_match(dtype)


def _zeroed(model):
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    return list(model.named_parameters())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_pass_applies_exactly_the_whole_tensor_draws(build_micro_model, micro_tokenizer, workers):
    model = build_micro_model(micro_tokenizer)
    engine = MeZO(_zeroed(model), lr=0.0, eps=1.0, weight_decay=0.0, workers=workers, chunk_elements=64)
    assert len(engine.chunks) > len(engine.params)   # the embedding matrix is split
    expected = {name: z.clone() for name, (_, z) in zip(engine.names, engine.noise(seed=11))}
    engine.perturb(11, 1.0)                # first pass: in order, states noted
    engine.perturb(11, 1.0)                # again: redrawn from the noted states (threads if workers > 1)
    for name, param in model.named_parameters():
        assert torch.equal(param, 2 * expected[name]), name


def test_engine_options_are_checked(micro_model):
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        MeZO(list(micro_model.named_parameters()), lr=0.0, eps=1.0, weight_decay=0.0, workers=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        MeZO(list(micro_model.named_parameters()), lr=0.0, eps=1.0, weight_decay=0.0, chunk_elements=100)


def test_chunked_threaded_steps_equal_whole_tensor_steps_bitwise(build_micro_model, micro_tokenizer):
    def run(**engine_options):
        model = build_micro_model(micro_tokenizer, seed=3)
        engine = MeZO(list(model.named_parameters()), lr=1e-2, eps=1e-3, weight_decay=0.1, **engine_options)
        losses = iter([0.7, 0.5, 0.6, 0.65, 0.4, 0.45])
        for seed in (5, 6, 5):
            engine.step(lambda: next(losses), seed)
        return dict(model.named_parameters())

    whole = run(workers=1, chunk_elements=1 << 30)
    chunked = run(workers=2, chunk_elements=32)
    for name, param in whole.items():
        assert torch.equal(param, chunked[name]), name


def test_reference_style_step_matches_the_engine(build_micro_model, micro_tokenizer):
    batch_model = build_micro_model(micro_tokenizer, seed=1)
    encoded = PromptEncoder(micro_tokenizer, TEMPLATE, 32).encode_all(
        [Example("a great movie", 1), Example("a terrible movie", 0), Example("great film", 1)])
    batch = collate(encoded, micro_tokenizer.pad_token_id, torch.device("cpu"))
    label_ids = label_word_ids(micro_tokenizer, (" terrible", " great"))

    results, params = [], []
    for use_reference in (False, True):
        model = build_micro_model(micro_tokenizer, seed=1)
        objective = Objective(MaskedLMLabelWordHead(model, label_ids))
        named = list(model.named_parameters())
        with torch.random.fork_rng(devices=[]):   # the reference reseeds the global generator
            if use_reference:
                result = reference_style_step(named, lambda: float(objective.loss(batch)), seed=77, lr=1e-2,
                                              eps=1e-3, weight_decay=0.1)
            else:
                result = MeZO(named, lr=1e-2, eps=1e-3, weight_decay=0.1).step(
                    lambda: float(objective.loss(batch)), seed=77)
        results.append(result)
        params.append(dict(model.named_parameters()))
    del batch_model
    assert results[1].loss_plus == pytest.approx(results[0].loss_plus, abs=1e-6)
    assert results[1].loss_minus == pytest.approx(results[0].loss_minus, abs=1e-6)
    assert results[1].projected_grad == pytest.approx(results[0].projected_grad, rel=1e-2)
    for name, param in params[0].items():
        torch.testing.assert_close(params[1][name], param, rtol=0, atol=1e-5)


def test_memory_can_measure_the_reference_step_in_process(build_micro_model, micro_tokenizer):
    model = build_micro_model(micro_tokenizer)
    encoded = PromptEncoder(micro_tokenizer, TEMPLATE, 32).encode_all([Example("a great movie", 1)])
    batch = collate(encoded, micro_tokenizer.pad_token_id, torch.device("cpu"))
    objective = Objective(MaskedLMLabelWordHead(model, label_word_ids(micro_tokenizer, (" terrible", " great"))))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.random.fork_rng(devices=[]):
        memory = measure_memory(objective, list(model.named_parameters()), batch, lr=1e-3, eps=1e-3,
                                weight_decay=0.0, dropout=False,
                                phases=("inference", "mezo_step", "reference_mezo_step"), in_process=True)
    assert set(memory["phases"]) == {"inference", "mezo_step", "reference_mezo_step"}
    assert memory["ratios"]["reference_mezo_over_inference"] > 0
    for name, param in model.named_parameters():   # measuring never changes the model
        assert torch.equal(param, before[name]), name
