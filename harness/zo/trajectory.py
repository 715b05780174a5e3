"""A MeZO run's trajectory: what replaying it needs, and the replay (MeZO paper, section 2).

A MeZO step's update is fixed by three numbers: the step's seed (z is regenerated from it),
the projected gradient and the lr used. With the parameters MeZO perturbed, eps, weight
decay and how z was drawn, the fine-tuned weights follow from the base model by replaying
the step's three passes (+eps z, -2 eps z, restore + update) -- no forward pass. Replayed
on the same kind of device with the same torch, the passes run the same float operations
in the same order, so on CPU the weights are bit-identical to the run's (tested).

File: safetensors (never pickle) with tensors `seed` (int64), `projected_grad` and `lr`
(float64, the exact Python floats the run used) and a JSON header `replay`; 100,000 steps are
2 MB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_bytes
from harness.zo.mezo import MeZO

# The passes of one step as harness.zo.mezo.MeZO.step makes them; a trajectory from an engine
# with other passes cannot be replayed by this code.
PASS_STRUCTURE = "perturb(+eps); perturb(-2 eps); restore_and_update(projected_grad)"
TRAJECTORY_SUFFIX = ".trajectory.safetensors"   # beside the run record <run id>.json


@dataclass
class Trajectory:
    parameters: list[str]        # the perturbed parameters, in the engine's order (HF names)
    eps: float
    weight_decay: float
    dtype: str                   # the parameters' dtype
    device_type: str             # "cpu" or "cuda": replay elsewhere draws other numbers
    z_stream: str                # harness.zo.z_stream name ("sequential", "per-chunk")
    chunk_elements: int | None
    seeds: list[int] = field(default_factory=list)
    projected_grads: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)

    @classmethod
    def for_engine(cls, engine: MeZO) -> Trajectory:
        first = engine.params[0]
        return cls(parameters=list(engine.names), eps=engine.eps, weight_decay=engine.weight_decay,
                   dtype=str(first.dtype).removeprefix("torch."), device_type=first.device.type,
                   z_stream=engine.z_stream, chunk_elements=engine.chunk_elements)

    def append(self, seed: int, projected_grad: float, lr: float) -> None:
        self.seeds.append(seed)
        self.projected_grads.append(projected_grad)
        self.lrs.append(lr)

    @property
    def steps(self) -> int:
        return len(self.seeds)

    def header(self) -> dict:
        return {"pass_structure": PASS_STRUCTURE, "parameters": self.parameters, "eps": self.eps,
                "weight_decay": self.weight_decay, "dtype": self.dtype, "device_type": self.device_type,
                "z_stream": self.z_stream, "chunk_elements": self.chunk_elements}

    def save(self, path: Path, *, exclusive: bool = True) -> Path:
        """Write atomically; exclusive: an existing file is never replaced."""
        return atomic_write_bytes(path, self.to_bytes(), exclusive=exclusive)

    def to_bytes(self) -> bytes:
        import torch
        from safetensors.torch import save

        tensors = {"seed": torch.tensor(self.seeds, dtype=torch.int64),
                   "projected_grad": torch.tensor(self.projected_grads, dtype=torch.float64),
                   "lr": torch.tensor(self.lrs, dtype=torch.float64)}
        return save(tensors, metadata={"replay": json.dumps(self.header())})

    @classmethod
    def load(cls, path: Path) -> Trajectory:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads(handle.metadata()["replay"])
                tensors = {name: handle.get_tensor(name) for name in ("seed", "projected_grad", "lr")}
        except Exception as error:   # missing, truncated, not safetensors, no header
            raise HarnessError(f"{path}: not a readable MeZO trajectory ({type(error).__name__}: {error})") from None
        if header.get("pass_structure") != PASS_STRUCTURE:
            raise HarnessError(f"{path}: its steps were made with passes {header.get('pass_structure')!r}; "
                               f"this code replays {PASS_STRUCTURE!r}")
        header.pop("pass_structure")
        return cls(**header, seeds=tensors["seed"].tolist(), projected_grads=tensors["projected_grad"].tolist(),
                   lrs=tensors["lr"].tolist())


def replay(engine: MeZO, trajectory: Trajectory, steps: int, start: int = 0) -> None:
    """Apply the trajectory's updates of steps start+1..steps to the engine's parameters (which
    hold the weights after `start` steps), each with the passes MeZO.step makes, the projected
    gradients taken from the trajectory instead of forward passes."""
    if engine.names != trajectory.parameters:
        raise HarnessError("the trajectory perturbed other parameters than the model offers: "
                           f"{len(trajectory.parameters)} recorded, {len(engine.names)} here")
    if (engine.eps, engine.weight_decay, engine.z_stream, engine.chunk_elements) != (
            trajectory.eps, trajectory.weight_decay, trajectory.z_stream, trajectory.chunk_elements):
        raise HarnessError("the replay engine's eps, weight decay or z stream differ from the trajectory's")
    for seed, projected_grad, lr in zip(trajectory.seeds[start:steps], trajectory.projected_grads[start:steps],
                                        trajectory.lrs[start:steps]):
        engine.lr = lr
        engine.perturb(seed, +engine.eps)
        engine.perturb(seed, -2.0 * engine.eps)
        engine.restore_and_update(seed, projected_grad)
