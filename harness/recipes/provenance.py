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


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break   # the end of the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


# Environment variables that change which kernels run (and so floats) without changing the hardware:
# torch's ATen dispatch (its effect is also in cpu_capability), MKL's and oneDNN's instruction-set caps and
# MKL's conditional reproducibility, OpenBLAS's kernel family (numpy: the linear probe), OpenMP's threads.
FLOAT_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
             "OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def _numpy_blas() -> str | None:
    """numpy's BLAS as threadpoolctl reports it: "openblas 0.3.31 Haswell" (None without threadpoolctl).
    numpy's own library (its path names numpy) first: torch's MKL is covered by the torch build."""
    try:
        import numpy  # noqa: F401  (loads its BLAS, so threadpoolctl sees it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    pools = [pool for pool in pools if "numpy" in str(pool.get("filepath", ""))] or pools
    if not pools:
        return None
    return " ".join(str(pools[0][key]) for key in ("internal_api", "version", "architecture") if pools[0].get(key))


def machine_identity(device: torch.device) -> schema.Machine:
    """What can change a run's floats on the same code and data (schema.Machine): the CPU (vendor, model,
    family/model/stepping), the instruction set torch dispatches to, core and thread counts, the torch
    build, numpy's BLAS, the kernel-changing environment variables; on CUDA also the GPU, its compute
    capability and the CUDA and cuDNN versions. No host name: two machines of one kind share an identity."""
    info = _cpuinfo()
    signature = (f"family {info['cpu family']} model {info['model']} stepping {info.get('stepping', '?')}"
                 if "cpu family" in info and "model" in info else None)
    machine = schema.Machine(
        kind=device.type, cpu_vendor=info.get("vendor_id"), cpu_model=_cpu_name(), cpu_signature=signature,
        cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), torch=f"{torch.__version__} ({torch.version.git_version[:12]})",
        numpy_blas=_numpy_blas(), float_env={name: os.environ[name] for name in FLOAT_ENV if name in os.environ})
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        machine.update(gpu=torch.cuda.get_device_name(index), gpu_capability=f"{major}.{minor}",
                       cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return machine


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
