"""What produced a run, for its record: package versions, the device, the git checkout."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from harness.results import schema

RECORDED_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "numpy", "peft", "sglang", "mezo-bench")


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


def device_info(device: torch.device) -> schema.Device:
    cpu = _cpu_name()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        extra = dict(name=name, cuda=torch.version.cuda, hardware_class=f"cuda:{name}")
    else:
        extra = dict(name=cpu, hardware_class="cpu")
    return schema.Device(type=device.type, platform=platform.platform(), cpu=cpu, cpu_count=os.cpu_count(),
                         torch_threads=torch.get_num_threads(), **extra)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def git_state() -> schema.Git:
    """Commit and dirty flag of the checkout the code runs from (package dir, then cwd)."""
    for directory in (Path(__file__).resolve().parent, Path.cwd()):
        commit = _git(["rev-parse", "HEAD"], directory)
        if commit:
            status = _git(["status", "--porcelain", "--untracked-files=no"], directory)
            return schema.Git(commit=commit, dirty=bool(status), root=_git(["rev-parse", "--show-toplevel"], directory))
    return schema.Git(commit=None, dirty=None, root=None)


# Modules that only orchestrate or read runs: editing them cannot change a run's numbers.
NOT_RESULT_CODE = ("cli.py", "recipes/grid.py", "recipes/ray_executor.py", "recipes/reconstruct.py",
                   "recipes/provenance.py")


def code_fingerprint(package: Path | None = None) -> str:
    """sha256 over the sources that can change a run's numbers: every module of the package
    (default: this one) except the results layer and NOT_RESULT_CODE."""
    import hashlib

    package = package or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("results/") or relative in NOT_RESULT_CODE:
            continue
        digest.update(relative.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
