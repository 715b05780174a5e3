"""Checkpoints of a run in progress: an interrupted run (even by SIGKILL) resumes where its last
checkpoint stopped and ends with the record an uninterrupted run writes, timing aside.

Folder `<results root>/.runs/<run key>/` (harness.results.run_state.run_key):
- `state.json`: the step, the step-seed and sampler RNG states, the run's id and start time, dev
  history, curves, best-dev step and accuracy, throughput counters, the last finite losses, and
  the names of the files below it goes with, plus a fingerprint (run key -- protocol hash
  included --, device type, torch version, a hash of the code that can change results,
  checkpoint format) that a resume must match;
- `trajectory-<step>.safetensors`: the steps so far (harness.zo.trajectory);
- `snapshot-<step>.safetensors`: the weights at a coarser interval (none before the first: the
  run's setup rebuilds the step-0 model exactly);
- `best-<step>.safetensors`: the best-dev weights.
A MeZO resume = the latest snapshot (or the rebuilt model) + replay of the trajectory's steps
after it, no forward pass (bit-identical on CPU). A first-order run saves `weights-<step>` and
`optimizer-<step>` (AdamW's moments) at every checkpoint, its scheduler and the dropout RNG in
`state.json`. New files are written first, each atomically, then
`state.json` (atomically), then files no state names are removed: a kill at any point leaves a
consistent checkpoint. safetensors and JSON only, never pickle.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_bytes, atomic_write_text

FORMAT = 1


@dataclass
class RunCheckpoint:
    folder: Path
    fingerprint: dict             # what a resume must match: run key, device type, torch, format
    every: int                    # intervals: harness.protocol.settings.CheckpointPolicy
    every_seconds: float
    snapshot_every: int
    identity: dict = field(default_factory=dict)   # the run's id and start time, kept so a resumed run keeps them
    _saved_at: float = field(default_factory=time.monotonic)
    _snapshot_step: int = 0
    _loaded: dict | None = None   # the state `load` read

    def load(self) -> dict | None:
        """The saved state (with the tensors it names), or None if there is none; read and checked
        once, then the same state is returned (the run and its training loop both ask)."""
        if self._loaded is not None:
            return self._loaded
        path = self.folder / "state.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise HarnessError(f"{path}: not a readable checkpoint ({error}); --restart discards it") from None
        theirs = state.get("fingerprint", {})
        if theirs != self.fingerprint:
            differ = sorted(key for key in {*theirs, *self.fingerprint} if theirs.get(key) != self.fingerprint.get(key))
            raise HarnessError(f"{path}: a checkpoint of another run setup ({', '.join(differ)}: "
                               f"{[theirs.get(key) for key in differ]} here {[self.fingerprint.get(key) for key in differ]}); "
                               f"--restart discards it")
        for leftover in self.folder.glob(".*.tmp"):   # a write a kill interrupted
            leftover.unlink(missing_ok=True)
        for name in (name for name in state["files"].values() if name is not None):
            self._check_file(name)
        self._snapshot_step = state["snapshot_step"]
        self._loaded = state
        return state

    def _check_file(self, name: str) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.folder / name), framework="pt") as handle:
                handle.keys()
        except Exception as error:   # missing, truncated or not safetensors
            raise self._damaged(name, error) from None

    def tensors(self, name: str | None) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        if name is None:
            return None
        try:
            return load_file(str(self.folder / name))
        except Exception as error:
            raise self._damaged(name, error) from None

    def _damaged(self, name: str, error: Exception) -> HarnessError:
        return HarnessError(f"{self.folder / name}: a damaged checkpoint file ({type(error).__name__}: {error}); "
                            f"--restart discards the checkpoint")

    def due(self, step: int, steps: int) -> bool:
        return step < steps and (step % self.every == 0 or time.monotonic() - self._saved_at >= self.every_seconds)

    def save(self, state: dict, *, files: dict[str, bytes | dict[str, torch.Tensor] | None],
             model: torch.nn.Module | None = None) -> None:
        """state (JSON) with the files it goes with: bytes (a trajectory) or tensors, by kind;
        `best` is written once per best step. model: snapshot its weights on the snapshot schedule."""
        from safetensors.torch import save

        step = state["step"]
        self.folder.mkdir(parents=True, exist_ok=True)
        names: dict[str, str | None] = {}
        for kind, content in files.items():
            if content is None:
                names[kind] = None
                continue
            names[kind] = f"{kind}-{state['best_step'] if kind == 'best' else step}.safetensors"
            if kind != "best" or not (self.folder / names[kind]).is_file():
                atomic_write_bytes(self.folder / names[kind], content if isinstance(content, bytes)
                                   else save(_contiguous(content)))
        if model is not None and step - self._snapshot_step >= self.snapshot_every:
            self._snapshot_step = step
            atomic_write_bytes(self.folder / f"snapshot-{step}.safetensors", save(_contiguous(model.state_dict())))
        names["snapshot"] = f"snapshot-{self._snapshot_step}.safetensors" if self._snapshot_step else None
        state = {**state, "fingerprint": self.fingerprint, "identity": self.identity,
                 "snapshot_step": self._snapshot_step, "files": names}
        atomic_write_text(self.folder / "state.json", json.dumps(state) + "\n")
        for path in self.folder.glob("*.safetensors"):
            if path.name not in names.values():
                path.unlink(missing_ok=True)
        self._saved_at = time.monotonic()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._loaded = None


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors stores each storage once: shared (tied) tensors are copied apart."""
    seen, out = set(), {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        key = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone().contiguous() if key in seen or not tensor.is_contiguous() else tensor
        seen.add(key)
    return out
