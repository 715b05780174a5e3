"""nox sessions: `nox -s tests` (the test suite, CPU) and `nox -s bench-sst2` (the main job).

Torch: on a machine without an NVIDIA GPU (no `nvidia-smi`), or with MEZO_BENCH_TORCH=cpu,
installs are constrained by .ci/constraints-cpu.txt so pip takes the CPU build of torch
and never pulls CUDA wheels. On GPU machines (or MEZO_BENCH_TORCH=cuda) torch is left to
pip, so users get their normal CUDA build. The package metadata never pins torch.
"""

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.3"
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent
CPU_CONSTRAINTS = ROOT / ".ci" / "constraints-cpu.txt"
# Where this project's CI machines keep the GLUE data (used only if MEZO_BENCH_DATA_DIR is unset).
SHARED_SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"


def _constraints() -> list[str]:
    choice = os.environ.get("MEZO_BENCH_TORCH", "auto")
    if choice not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"MEZO_BENCH_TORCH must be auto, cpu or cuda, got {choice!r}")
    cpu_only = choice == "cpu" or (choice == "auto" and shutil.which("nvidia-smi") is None)
    return ["-c", str(CPU_CONSTRAINTS)] if cpu_only else []


def _install(session: nox.Session, extras: str) -> None:
    constraints = _constraints()
    if constraints:
        session.install(*constraints, "torch")   # first, so no dependency can pull a CUDA build
    session.install(*constraints, "-e", f".[{extras}]")


def _data_env() -> dict[str, str]:
    if "MEZO_BENCH_DATA_DIR" not in os.environ and SHARED_SST2.is_dir():
        return {"MEZO_BENCH_DATA_DIR": str(SHARED_SST2)}
    return {}


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on CPU (gpu-marked tests skip themselves without CUDA)."""
    _install(session, "dev,peft")
    session.run("pytest", *session.posargs, env=_data_env())


@nox.session(name="bench-sst2")
def bench_sst2(session: nox.Session) -> None:
    """The SST-2 protocol: the machine's default profile (smoke on CPU, quick on GPU).

    Pass CLI options after `--`, e.g. `nox -s bench-sst2 -- --profile paper --data-dir D`.
    """
    _install(session, "dev,peft")
    session.run("mezo-bench", "bench", "--protocol", "benchmarks/sst2/protocol.toml", "--out", "results",
                *session.posargs, env=_data_env())


@nox.session
def gate(session: nox.Session) -> None:
    """Run the smoke profile on CPU and gate it against the committed baseline.

    `nox -s gate -- --record-baseline` instead runs it into results/baselines (a new
    baseline: the gate uses the latest record of each run, so nothing is rewritten).
    """
    _install(session, "dev,peft")
    bench = ["mezo-bench", "bench", "--protocol", "benchmarks/sst2/protocol.toml", "--profile", "smoke",
             "--device", "cpu", "--no-progress"]
    if "--record-baseline" in session.posargs:
        session.run(*bench, "--out", "results/baselines", env=_data_env())
        return
    tmp = Path(session.create_tmp())
    candidate = tmp / "gate-candidate"
    shutil.rmtree(candidate, ignore_errors=True)
    session.run(*bench, "--out", str(candidate), env=_data_env())
    session.run("mezo-bench", "gate", "--baseline", "results/baselines", "--candidate", str(candidate),
                "--out", str(tmp / "gate-report"), *session.posargs)
