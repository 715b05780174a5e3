"""The MeZO engine: restore, closed-form update, unbiased gradient estimate, determinism."""

import pytest
import torch

from harness.recipes.train import train_mezo
from harness.tasks.batching import EpochSampler, collate, eval_batches
from harness.zo.mezo import MeZO


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def reference_noise(model, seed):
    """z drawn independently of the engine: one generator stream over the parameters."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=generator, dtype=p.dtype) for name, p in model.named_parameters()}


def test_plus_minus_plus_restores_the_parameters(micro_model):
    before = snapshot(micro_model)
    engine = MeZO(list(micro_model.named_parameters()), lr=1e-3, eps=1e-3, weight_decay=0.0)
    engine.perturb(seed=7, scale=1e-3)
    assert any(not torch.equal(p, before[n]) for n, p in micro_model.named_parameters())
    engine.perturb(seed=7, scale=-2e-3)
    engine.perturb(seed=7, scale=1e-3)
    for name, param in micro_model.named_parameters():
        torch.testing.assert_close(param, before[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_step_evaluates_at_plus_minus_eps_and_applies_the_closed_form(micro_model, weight_decay):
    lr, eps, seed = 1e-2, 1e-3, 1234
    named = list(micro_model.named_parameters())
    p0, z = snapshot(micro_model), reference_noise(micro_model, seed)
    probe_name, probe = named[3]
    seen, losses = [], iter([0.75, 0.5])

    def loss_fn():
        seen.append(probe.detach().clone())
        return next(losses)

    result = MeZO(named, lr=lr, eps=eps, weight_decay=weight_decay).step(loss_fn, seed)
    torch.testing.assert_close(seen[0], p0[probe_name] + eps * z[probe_name], rtol=0, atol=1e-6)
    torch.testing.assert_close(seen[1], p0[probe_name] - eps * z[probe_name], rtol=0, atol=1e-6)
    assert result.projected_grad == pytest.approx(0.25 / (2 * eps))

    g = result.projected_grad
    for name, param in micro_model.named_parameters():
        decayed = not any(part in name for part in ("bias", "layer_norm", "layernorm"))
        expected = p0[name] - lr * (g * z[name] + (weight_decay * p0[name] if decayed else 0.0))
        torch.testing.assert_close(param, expected, rtol=0, atol=2e-6)


def test_weight_decay_follows_the_reference_name_rule(micro_model):
    engine = MeZO(list(micro_model.named_parameters()), lr=1e-3, eps=1e-3, weight_decay=0.1)
    decays = dict(zip(engine.names, engine.decays))
    assert decays["lm_head.dense.weight"] and not decays["lm_head.dense.bias"]
    assert not decays["lm_head.layer_norm.weight"]
    assert decays["roberta.embeddings.LayerNorm.weight"]   # case-sensitive, as in the reference


def test_estimator_is_unbiased_for_the_autograd_gradient(micro_objective, build_micro_model, micro_tokenizer):
    model = build_micro_model(micro_tokenizer, dtype=torch.float64)
    objective, encoded = micro_objective(micro_tokenizer, model)
    batch = collate(encoded, micro_tokenizer.pad_token_id, torch.device("cpu"))
    subset = [(n, p) for n, p in model.named_parameters() if "LayerNorm" in n or "layer_norm" in n or n == "lm_head.dense.bias"]
    assert sum(p.numel() for _, p in subset) == 144

    loss = objective.loss(batch)
    grads = torch.autograd.grad(loss, [p for _, p in subset])
    true_grad = torch.cat([g.flatten() for g in grads])

    engine = MeZO(subset, lr=0.0, eps=1e-3, weight_decay=0.0)   # lr 0: estimate, never move
    estimate = torch.zeros_like(true_grad)
    n_seeds = 2000
    for seed in range(n_seeds):
        g = engine.step(lambda: float(objective.loss(batch)), seed).projected_grad
        estimate += g * torch.cat([z.flatten() for _, z in engine.noise(seed)])
    cosine = torch.nn.functional.cosine_similarity(estimate / n_seeds, true_grad, dim=0)
    assert cosine > 0.9


@pytest.fixture
def run_loop(micro_objective, build_micro_model, micro_tokenizer):
    """run_loop(seed, steps=15, length_buckets=1): train_mezo on a fresh micro model."""
    def run(seed, steps=15, length_buckets=1):
        model = build_micro_model(micro_tokenizer)
        objective, encoded = micro_objective(micro_tokenizer, model)
        device, pad_id = torch.device("cpu"), micro_tokenizer.pad_token_id
        return train_mezo(objective=objective, trainable=list(model.named_parameters()),
                          sampler=EpochSampler(encoded, 3, seed, pad_id, device),
                          dev_batches=eval_batches(encoded, 8, pad_id, device), steps=steps, lr=1e-3, eps=1e-3,
                          weight_decay=0.0, lr_schedule="constant", eval_every=5, seed=seed,
                          length_buckets=length_buckets, progress=False)
    return run


def test_length_buckets_keep_the_losses_and_pad_less(run_loop):
    plain, bucketed = run_loop(13, steps=3), run_loop(13, steps=3, length_buckets=2)
    # The first step sees the same parameters: its losses agree to float rounding.
    assert bucketed.curve["loss_plus"][0] == pytest.approx(plain.curve["loss_plus"][0], abs=1e-6)
    assert bucketed.curve["loss_minus"][0] == pytest.approx(plain.curve["loss_minus"][0], abs=1e-6)
    assert bucketed.throughput.real_tokens == plain.throughput.real_tokens
    assert bucketed.throughput.padded_tokens < plain.throughput.padded_tokens


def test_same_seed_same_losses_other_seed_other_losses(run_loop):
    first, again, other = run_loop(13), run_loop(13), run_loop(21)
    assert first.curve["loss_plus"] == again.curve["loss_plus"] and first.projected_grads == again.projected_grads
    assert first.curve["loss_plus"] != other.curve["loss_plus"]
    assert len(first.curve["loss_plus"]) == 15 and len(first.projected_grads) == 15 and [h["step"] for h in first.dev_history] == [5, 10, 15]
    assert first.best_step in (5, 10, 15) and first.best_state is not None
    assert first.best_state["lm_head.dense.weight"].device.type == "cpu"

