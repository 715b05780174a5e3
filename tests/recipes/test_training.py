"""The training loops' reference behaviours: FT clips gradients as HF's Trainer does, and a run
whose loss stops being finite is recorded as diverged instead of training on NaN."""

import math

import pytest
import torch

from harness.recipes.train import train_first_order, train_mezo
from harness.tasks.batching import EpochSampler, eval_batches

CPU = torch.device("cpu")


def _setup(micro_objective, model, tokenizer, batch_size=4):
    objective, encoded = micro_objective(tokenizer, model)
    sampler = EpochSampler(encoded, batch_size, 13, tokenizer.pad_token_id, CPU)
    return model, objective, sampler, eval_batches(encoded, 8, tokenizer.pad_token_id, CPU)


def _grad_norms_at_optimizer_step(monkeypatch, micro_objective, build_micro_model, tokenizer, max_grad_norm):
    """The global gradient norm each AdamW step sees, over 6 FT steps at a large lr."""
    norms, original = [], torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    model, objective, sampler, dev = _setup(micro_objective, build_micro_model(tokenizer), tokenizer)
    train_first_order(objective=objective, trainable=list(model.named_parameters()), sampler=sampler,
                      dev_batches=dev, steps=6, lr=0.05, weight_decay=0.0, lr_schedule="linear", dropout=True,
                      eval_every=3, seed=13, max_grad_norm=max_grad_norm, progress=False)
    return norms


def test_first_order_clips_the_global_gradient_norm_before_each_step(micro_objective, monkeypatch, build_micro_model, micro_tokenizer):
    unclipped = _grad_norms_at_optimizer_step(monkeypatch, micro_objective, build_micro_model, micro_tokenizer, None)
    clipped = _grad_norms_at_optimizer_step(monkeypatch, micro_objective, build_micro_model, micro_tokenizer, 1.0)
    assert len(clipped) == 6
    assert max(unclipped) > 1.0                       # the setting matters on this model...
    assert all(norm <= 1.0 + 1e-5 for norm in clipped)  # ...and every step saw a norm of at most 1.0


def test_first_order_refuses_a_non_positive_clip(micro_objective, build_micro_model, micro_tokenizer):
    model, objective, sampler, dev = _setup(micro_objective, build_micro_model(micro_tokenizer), micro_tokenizer)
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        train_first_order(objective=objective, trainable=list(model.named_parameters()), sampler=sampler,
                          dev_batches=dev, steps=2, lr=1e-3, weight_decay=0.0, lr_schedule="linear", dropout=False,
                          eval_every=1, seed=13, max_grad_norm=0.0, progress=False)


def test_mezo_stops_at_the_first_non_finite_loss_and_keeps_the_best_checkpoint(micro_objective, build_micro_model, micro_tokenizer):
    model, objective, sampler, dev = _setup(micro_objective, build_micro_model(micro_tokenizer), micro_tokenizer, batch_size=64)
    calls = {"n": 0}
    loss = objective.loss

    def loss_that_breaks(batch):   # finite for 4 steps (8 forwards), then NaN
        calls["n"] += 1
        return loss(batch) if calls["n"] <= 8 else torch.tensor(float("nan"))

    objective.loss = loss_that_breaks
    result = train_mezo(objective=objective, trainable=list(model.named_parameters()), sampler=sampler,
                        dev_batches=dev, steps=20, lr=1e-3, eps=1e-3, weight_decay=0.0, lr_schedule="constant",
                        eval_every=2, seed=13, progress=False)
    assert result.diverged_at == 5 and result.steps_done == 5
    assert len(result.projected_grads) == 5 and math.isnan(result.projected_grads[-1])
    assert [h["step"] for h in result.dev_history] == [2, 4]      # no evaluation after the divergence
    assert result.best_state is not None and result.best_step in (2, 4)
    assert all(torch.isfinite(t).all() for t in result.best_state.values())
