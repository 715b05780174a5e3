"""Peak memory of one inference forward, one MeZO step and one first-order step (backprop +
AdamW with its state), measured on the same model and batch within one run; MeZO-Adam runs also
measure its step (`mezo_adam_step`: MeZO's forwards, then a gradient buffer and AdamW's moments).

CUDA: in-process, torch.cuda's peak allocated and reserved bytes, the peak reset before each
phase; the trained parameters are restored afterwards, so measuring never changes a run.
CPU (models that can be pickled): each phase runs in a fresh child process
(`python -m harness.measure.memory`) that loads the same pickled model and batch, so no phase inherits another's allocator caches. The child
runs one warm-up forward (one-time runtime buffers are not the phase's cost), then resets
the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs resets VmHWM); peak =
VmHWM after the phase, excess = peak - RSS just before it. glibc's mmap threshold is fixed
at 64 KiB in the child so freed tensors leave RSS instead of staying in malloc's heap.
Peaks include the weights and the runtime; excess is what the phase itself added.
Nothing outlives the measuring process, even a SIGKILL of it: the pickle is an anonymous
temporary file (no name; the kernel frees it with its last descriptor) whose descriptor each
child inherits, and a child asks the kernel to kill it when its parent dies (`_die_with_parent`).
Payload folders that versions before this one left in the temp folder are removed at the next
CPU measurement (`remove_stale_payload_folders`).
CPU, in process (the SGLang backend: its ModelRunner is one per process and cannot be
pickled): the same warm-up and peak-RSS reset, phases one after another in this process.

A run measures after training, on its trained parameter set and one training batch; which
phases depends on the backend (harness.backends.base.Backend.memory_phases). On CPU the peaks
include about 400 MB of PyTorch runtime. A measurement that fails is recorded as
{"error": ...}, never estimated.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.tasks.batching import Batch
from harness.tasks.objective import Objective
from harness.zo.mezo import MeZO
from harness.zo.mezo_adam import MeZOAdam

PHASES = ("inference", "mezo_step", "first_order_step")
# Also measurable on request: the reference code's step (the performance benchmarks), and
# MeZO-Adam's step (MeZO-Adam runs: gradient buffer and AdamW's two moments).
EXTRA_PHASES = ("reference_mezo_step", "mezo_adam_step")
CPU_METHOD = "child process per phase: peak RSS (VmHWM after /proc/self/clear_refs reset) minus RSS before the phase"
CUDA_METHOD = "torch.cuda max_memory_allocated / max_memory_reserved, peak reset before each phase"
CPU_IN_PROCESS_METHOD = "in process, phase after phase: peak RSS (VmHWM after /proc/self/clear_refs reset) minus RSS before the phase"


class PeakMeter:
    """Peak memory over a block of code in this process: CUDA allocator peak, or on CPU the
    kernel's peak RSS (reset by writing 5 to /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> "PeakMeter":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline_bytes = _status_kib("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = _status_kib("VmHWM") * 1024
        self.excess_bytes = self.peak_bytes - self.baseline_bytes


def run_phase(phase: str, objective: Objective, trainable: list[tuple[str, torch.Tensor]], batch: Batch,
              *, lr: float, eps: float, weight_decay: float, dropout: bool):
    """Run one phase; returns what must stay alive until its peak has been read."""
    if phase == "inference":
        with torch.no_grad():
            return objective.loss(batch)
    if phase == "mezo_step":
        with MeZO(trainable, lr=lr, eps=eps, weight_decay=weight_decay) as engine:
            return engine.step(lambda: float(objective.loss(batch)), seed=0)
    if phase == "reference_mezo_step":
        from harness.zo.reference_step import reference_style_step

        return reference_style_step(trainable, lambda: float(objective.loss(batch)), seed=0, lr=lr, eps=eps,
                                    weight_decay=weight_decay)
    if phase == "mezo_adam_step":
        with MeZOAdam(trainable, lr=lr, eps=eps, weight_decay=weight_decay) as engine:
            engine.step(lambda: float(objective.loss(batch)), seed=0)
            return engine.optimizer   # its moments stay alive until the peak is read
    if phase == "first_order_step":
        params = [param for _, param in trainable]
        for param in params:
            param.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        objective.model.train(dropout)
        objective.cross_entropy(batch).backward()
        optimizer.step()
        objective.model.eval()
        return optimizer
    raise ValueError(f"unknown phase {phase!r}")


def _with_ratios(phases: dict, method: str) -> dict:
    peak = {name: phases.get(name, {}).get("peak_bytes") for name in PHASES + EXTRA_PHASES}
    excess = {name: phases.get(name, {}).get("excess_bytes") for name in PHASES + EXTRA_PHASES}

    def ratio(a, b):
        return a / b if a is not None and b else None

    return {
        "method": method,
        "phases": phases,
        "ratios": {
            "mezo_over_inference": ratio(peak["mezo_step"], peak["inference"]),
            "first_order_over_mezo": ratio(peak["first_order_step"], peak["mezo_step"]),
            "excess_mezo_over_inference": ratio(excess["mezo_step"], excess["inference"]),
            "excess_first_order_over_mezo": ratio(excess["first_order_step"], excess["mezo_step"]),
            **({"reference_mezo_over_inference": ratio(peak["reference_mezo_step"], peak["inference"])}
               if "reference_mezo_step" in phases else {}),
            **({"mezo_adam_over_inference": ratio(peak["mezo_adam_step"], peak["inference"])}
               if "mezo_adam_step" in phases else {}),
        },
    }


def measure_memory(objective: Objective, trainable: list[tuple[str, torch.Tensor]], batch: Batch, *,
                   lr: float, eps: float, weight_decay: float, dropout: bool,
                   phases: tuple[str, ...] = PHASES, in_process: bool = False) -> dict:
    """Memory per phase, or {"error": reason} when it could not be measured (never guessed)."""
    options = dict(lr=lr, eps=eps, weight_decay=weight_decay, dropout=dropout)
    try:
        if batch.input_ids.device.type == "cuda" or in_process:
            return _measure_in_process(objective, trainable, batch, options, phases)
        return _measure_cpu(objective, trainable, batch, options, phases)
    except Exception as error:   # a measurement failure must not lose the run's other results
        return {"error": f"{type(error).__name__}: {error}"}


def _measure_in_process(objective, trainable, batch, options, phases) -> dict:
    device = batch.input_ids.device
    saved = [param.detach().to("cpu", copy=True) for _, param in trainable]
    requires_grad = [param.requires_grad for _, param in trainable]
    with torch.no_grad():
        objective.loss(batch)   # warm-up
    results = {}
    for phase in phases:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with PeakMeter(device) as meter:
            keep = run_phase(phase, objective, trainable, batch, **options)
        results[phase] = {"peak_bytes": meter.peak_bytes, "excess_bytes": meter.excess_bytes,
                          "baseline_bytes": meter.baseline_bytes}
        if device.type == "cuda":
            results[phase]["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        del keep
        with torch.no_grad():
            for (_, param), original, flag in zip(trainable, saved, requires_grad):
                param.grad = None
                param.copy_(original)
                param.requires_grad_(flag)
    return _with_ratios(results, CUDA_METHOD if device.type == "cuda" else CPU_IN_PROCESS_METHOD)


PAYLOAD_PREFIX = "mezo-bench-memory-"
CHILD_TIMEOUT = 3600     # seconds one phase's child may take


def _measure_cpu(objective, trainable, batch, options, phases) -> dict:
    """The pickle goes to an anonymous file (O_TMPFILE on Linux: it never has a name, so no exit
    path, SIGKILL included, can leave it behind); each child opens it afresh as
    /proc/self/fd/<descriptor> (its own file offset) and torch.loads it as it would a named file."""
    remove_stale_payload_folders()
    with tempfile.TemporaryFile(prefix=PAYLOAD_PREFIX) as payload:
        torch.save({"objective": objective, "trainable": [name for name, _ in trainable], "batch": batch,
                    "options": options}, payload)
        payload.flush()
        results = {}
        for phase in phases:
            child = subprocess.run([sys.executable, "-m", "harness.measure.memory", f"/proc/self/fd/{payload.fileno()}",
                                    phase, str(os.getpid())],
                                   pass_fds=(payload.fileno(),), capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                                   env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            if child.returncode != 0:
                raise RuntimeError(f"memory child for {phase} failed: {child.stderr.strip()[-500:]}")
            results[phase] = json.loads(child.stdout.strip().splitlines()[-1])
    return _with_ratios(results, CPU_METHOD)


# Versions before the anonymous payload file saved it as <temp folder>/mezo-bench-memory-*/payload.pt,
# left behind (the model's size) when they were killed. Such a folder is in use while an old child
# measures a phase (its command line names the payload), while the old parent writes the payload
# (it changes), and for the milliseconds between two children: it is stale when no process names it,
# twice STALE_CHECK_GAP apart, and nothing in it changed for STALE_AFTER seconds.
STALE_AFTER = 600.0
STALE_CHECK_GAP = 0.5


def remove_stale_payload_folders(root: str | Path | None = None) -> list[Path]:
    """Remove the stale payload folders of earlier versions under `root` (default: the temp
    folder); returns those removed."""
    root = Path(root if root is not None else tempfile.gettempdir())
    now = time.time()
    candidates = [folder for folder in root.glob(f"{PAYLOAD_PREFIX}*")
                  if folder.is_dir() and not folder.is_symlink() and now - _last_change(folder) > STALE_AFTER]
    if not candidates:
        return []
    named = _command_lines()
    time.sleep(STALE_CHECK_GAP)
    named += _command_lines()
    stale = [folder for folder in candidates if not any(str(folder) in line for line in named)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _last_change(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(entry.stat().st_mtime for entry in folder.iterdir())])
    except OSError:   # removed meanwhile, or not ours to read
        return time.time()


def _command_lines() -> list[str]:
    """Every process's command line, arguments joined by spaces."""
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:   # the process ended meanwhile
            continue
    return lines


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere nothing is
    asked), then exit if the parent is already gone (it may have died before the request). The
    kernel sends the signal when the *thread* that started this child ends: the one blocked in
    subprocess.run, which ends only with its process."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):   # no prctl: not Linux
        pass
    if os.getppid() != parent_pid:
        sys.exit(f"memory child: parent process {parent_pid} is gone")


def _child(payload_path: str, phase: str, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    payload = torch.load(payload_path, weights_only=False)
    objective: Objective = payload["objective"]
    parameters = dict(objective.model.named_parameters())
    trainable = [(name, parameters[name]) for name in payload["trainable"]]
    batch, options = payload["batch"], payload["options"]
    del payload
    with torch.no_grad():
        objective.loss(batch)   # warm-up
    with PeakMeter(torch.device("cpu")) as meter:
        keep = run_phase(phase, objective, trainable, batch, **options)
    del keep
    print(json.dumps({"peak_bytes": meter.peak_bytes, "excess_bytes": meter.excess_bytes,
                      "baseline_bytes": meter.baseline_bytes}))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
