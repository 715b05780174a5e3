"""Self-describing run records: what produced a number travels with it."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import uuid
from importlib import metadata
from pathlib import Path

import torch

from harness.errors import HarnessError

SCHEMA_VERSION = 3
RECORDED_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "numpy", "peft", "sglang", "mezo-bench")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id(variant: str, point, started: dt.datetime) -> str:
    """A readable, unique name: variant, grid point (a harness.protocol.GridPoint), start time."""
    return (f"{variant}_k{point.k}_seed{point.seed}_lr{point.lr:g}_bs{point.batch_size}_eps{point.eps:g}"
            f"_wd{point.weight_decay:g}_{started:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:6]}")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "platform": platform.platform(), "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(name=torch.cuda.get_device_name(index), cuda=torch.version.cuda,
                    hardware_class=f"cuda:{torch.cuda.get_device_name(index)}")
    else:
        info.update(name=info["cpu"], hardware_class="cpu")
    return info


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def git_state() -> dict:
    """Commit and dirty flag of the checkout the code runs from (package dir, then cwd)."""
    for directory in (Path(__file__).resolve().parent, Path.cwd()):
        commit = _git(["rev-parse", "HEAD"], directory)
        if commit:
            status = _git(["status", "--porcelain", "--untracked-files=no"], directory)
            return {"commit": commit, "dirty": bool(status), "root": _git(["rev-parse", "--show-toplevel"], directory)}
    return {"commit": None, "dirty": None, "root": None}


def write_record(record: dict, path: Path) -> Path:
    """Write atomically and append-only: a crash never leaves a partial record, and an
    existing record is never rewritten (the hard link fails if the name is taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise HarnessError(f"record {path} already exists; records are append-only") from None
    finally:
        tmp.unlink()
    return path


def record_path(out_dir: Path, task: str, protocol_name: str, version: int, profile: str, run_id: str) -> Path:
    return Path(out_dir) / task / f"{protocol_name}-v{version}" / profile / f"{run_id}.json"
