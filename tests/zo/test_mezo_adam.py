"""MeZO-Adam (harness.zo.mezo_adam) against its definition written out: MeZO's two losses, the
estimate projected_grad * z in .grad, then torch's AdamW with the reference's groups."""

import torch

from harness.zo.mezo_adam import ADAM_BETAS, ADAM_EPS, MeZOAdam


def named_parameters():
    generator = torch.Generator().manual_seed(0)
    return [("encoder.weight", torch.randn(6, 5, generator=generator)),
            ("encoder.bias", torch.randn(6, generator=generator)),
            ("LayerNorm.weight", torch.randn(6, generator=generator))]


def loss_of(params):
    x = torch.linspace(-1, 1, 5)
    return lambda: float(((params[0][1] @ x + params[1][1]) * params[2][1]).pow(2).sum())


def test_mezo_adam_steps_equal_the_written_out_algorithm():
    ours, theirs = named_parameters(), named_parameters()
    lr, eps, wd = 1e-2, 1e-3, 0.1
    optimizer = torch.optim.AdamW([{"params": [theirs[0][1]], "weight_decay": wd},
                                   {"params": [theirs[1][1], theirs[2][1]], "weight_decay": 0.0}],
                                  lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    with MeZOAdam(ours, lr=lr, eps=eps, weight_decay=wd) as engine:
        assert engine.engine.z_stream == "sequential"
        for seed in (5, 6, 7):
            out = engine.step(loss_of(ours), seed=seed)
            generator = torch.Generator().manual_seed(seed)
            zs = [torch.randn(p.shape, generator=generator) for _, p in theirs]
            with torch.no_grad():
                for (_, p), z in zip(theirs, zs):
                    p.add_(z, alpha=eps)
                plus = loss_of(theirs)()
                for (_, p), z in zip(theirs, zs):
                    p.add_(z, alpha=-2 * eps)
                minus = loss_of(theirs)()
                for (_, p), z in zip(theirs, zs):
                    p.add_(z, alpha=eps)
            projected = (plus - minus) / (2 * eps)
            assert (out.loss_plus, out.loss_minus, out.projected_grad) == (plus, minus, projected)
            for (_, p), z in zip(theirs, zs):
                p.grad = projected * z
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for (name, mine), (_, reference) in zip(ours, theirs):
                torch.testing.assert_close(mine, reference, atol=0, rtol=0, msg=name)
        assert all(p.grad is None for _, p in ours)   # no gradient buffer outlives a step


def test_learning_rate_reaches_every_group():
    with MeZOAdam(named_parameters(), lr=1e-2, eps=1e-3, weight_decay=0.1) as engine:
        engine.lr = 5e-3
        assert [group["lr"] for group in engine.optimizer.param_groups] == [5e-3, 5e-3]
        assert [group["weight_decay"] for group in engine.optimizer.param_groups] == [0.1, 0.0]
