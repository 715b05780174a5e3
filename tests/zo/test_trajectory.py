"""The MeZO trajectory: replaying a run's seeds, projected gradients and lrs rebuilds its
weights bit for bit without a forward pass; the file round-trips exactly and a damaged or
foreign one is refused."""

import pytest
import torch

from harness.core.errors import HarnessError
from harness.recipes.train import train_mezo
from harness.tasks.batching import EpochSampler, eval_batches
from harness.zo.mezo import MeZO
from harness.zo.trajectory import Trajectory, replay

CPU = torch.device("cpu")


@pytest.fixture
def trained(micro_objective, build_micro_model, micro_tokenizer):
    """A 12-step MeZO run (linear lr decay, weight decay) on the micro model, and its start."""
    model = build_micro_model(micro_tokenizer, seed=3)
    start = {name: p.detach().clone() for name, p in model.state_dict().items()}
    objective, encoded = micro_objective(micro_tokenizer, model)
    pad_id = micro_tokenizer.pad_token_id
    result = train_mezo(objective=objective, trainable=list(model.named_parameters()),
                        sampler=EpochSampler(encoded, 3, 13, pad_id, CPU), dev_batches=eval_batches(encoded, 8, pad_id, CPU),
                        steps=12, lr=1e-2, eps=1e-3, weight_decay=0.1, lr_schedule="linear", eval_every=4, seed=13,
                        progress=False)
    return model, start, result


def rebuilt(build_micro_model, micro_tokenizer, start, trajectory, steps):
    model = build_micro_model(micro_tokenizer, seed=3)
    model.load_state_dict(start)
    parameters = dict(model.named_parameters())
    with MeZO([(name, parameters[name]) for name in trajectory.parameters], lr=0.0, eps=trajectory.eps,
              weight_decay=trajectory.weight_decay, z_stream=trajectory.z_stream) as engine:
        replay(engine, trajectory, steps)
    return model


def test_replay_rebuilds_the_final_and_the_best_weights_bit_for_bit(trained, build_micro_model, micro_tokenizer):
    model, start, result = trained
    trajectory = result.trajectory
    assert trajectory.steps == 12 and trajectory.projected_grads == result.projected_grads
    assert trajectory.lrs[0] == 1e-2 and trajectory.lrs[-1] < trajectory.lrs[0]   # the lr each step used
    final = rebuilt(build_micro_model, micro_tokenizer, start, trajectory, trajectory.steps)
    for name, tensor in model.state_dict().items():
        assert torch.equal(final.state_dict()[name], tensor), name
    best = rebuilt(build_micro_model, micro_tokenizer, start, trajectory, result.best_step)
    for name, tensor in result.best_state.items():
        assert torch.equal(best.state_dict()[name], tensor), name
    assert not torch.equal(best.state_dict()["lm_head.dense.weight"], start["lm_head.dense.weight"])


def test_the_file_round_trips_exactly(trained, tmp_path):
    trajectory = trained[2].trajectory
    path = trajectory.save(tmp_path / "run.trajectory.safetensors")
    again = Trajectory.load(path)
    assert again == trajectory
    with pytest.raises(FileExistsError):   # never replaced
        trajectory.save(path)


def test_a_damaged_or_foreign_file_is_refused(trained, tmp_path):
    path = trained[2].trajectory.save(tmp_path / "run.trajectory.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(HarnessError, match="not a readable MeZO trajectory"):
        Trajectory.load(damaged)
    foreign = Trajectory(**{**trained[2].trajectory.__dict__})
    foreign_path = tmp_path / "foreign.safetensors"
    foreign.save(foreign_path)
    text = foreign_path.read_bytes().replace(b"perturb(+eps); perturb(-2 eps)", b"perturb(+eps); perturb(-1 eps)")
    foreign_path.write_bytes(text)
    with pytest.raises(HarnessError, match="this code replays"):
        Trajectory.load(foreign_path)


def test_replay_refuses_an_engine_over_other_parameters(trained, build_micro_model, micro_tokenizer):
    trajectory = trained[2].trajectory
    model = build_micro_model(micro_tokenizer, seed=3)
    with MeZO(list(model.named_parameters())[:2], lr=0.0, eps=trajectory.eps,
              weight_decay=trajectory.weight_decay) as engine:
        with pytest.raises(HarnessError, match="other parameters"):
            replay(engine, trajectory, 1)
