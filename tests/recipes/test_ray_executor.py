"""`bench --executor ray` on a local Ray cluster (2 CPUs, bound to 127.0.0.1): a 4-point grid whose
worker running one point is SIGKILLed mid-run; Ray retries the task, the retry takes over the dead
claim and resumes from the checkpoint, and every record equals a serial run's (timing aside)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.results.run_state import record_run_key

if os.environ.get("MEZO_BENCH_REQUIRE_RAY"):
    import ray  # noqa: F401  -- a broken install must fail, not skip
else:
    pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sixty_steps(short_protocol):
    return short_protocol(60, 20)


def bench(protocol, sst2_dir, out, *extra):
    argv = [sys.executable, "-m", "harness.cli", "bench", "--protocol", str(protocol), "--profile", "smoke",
            "--variant", "hf-mlm", "--variant", "hf-ft", "--data-dir", str(sst2_dir), "--out", str(out),
            "--device", "cpu", "--no-progress", "--no-memory", "--checkpoint-every", "4", *extra]
    # one torch thread everywhere: Ray gives each 1-CPU task one, and float sums depend on the split
    return subprocess.Popen(argv, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def by_key(out):
    records = [json.loads(p.read_text()) for p in Path(out).rglob("*.json") if not {".runs", ".locks"} & set(p.parts)]
    return {record_run_key(r): r for r in records}, len(records)


def kill_one_worker_mid_run(out, killed: list, stop: threading.Event):
    """SIGKILL the process holding a claim once its run has checkpointed step 8."""
    while not stop.is_set() and not killed:
        for state in (out / ".runs").glob("*/state.json") if (out / ".runs").is_dir() else []:
            try:
                saved = json.loads(state.read_text())
                step, run_id = saved["step"], saved["identity"]["run_id"]
                holder = json.loads((out / ".locks" / f"{state.parent.name}.lock").read_text())
            except (OSError, json.JSONDecodeError, KeyError):
                continue
            if step >= 8:
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append((state.parent.name, run_id))
                return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_and_resumes_to_the_serial_records(sixty_steps, sst2_dir, tmp_path, without_timing):
    serial, distributed = tmp_path / "serial", tmp_path / "ray"
    assert bench(sixty_steps, sst2_dir, serial).wait(timeout=600) == 0
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=kill_one_worker_mid_run, args=(distributed, killed, stop))
    watcher.start()
    process = bench(sixty_steps, sst2_dir, distributed, "--executor", "ray")
    try:
        _, err = process.communicate(timeout=900)
    finally:
        stop.set()
        watcher.join()
    assert process.returncode == 0, err[-3000:]
    assert killed, "no worker was killed: the runs finished before a checkpoint was seen"
    expected, _ = by_key(serial)
    got, count = by_key(distributed)
    assert count == 4 and set(got) == set(expected)
    for key in expected:
        assert without_timing(got[key], "environment") == without_timing(expected[key], "environment"), key
    assert "4/4" in err and not list((distributed / ".runs").iterdir())
    [(key, run_id)] = killed
    assert "took over the stale claim" in err and got[key]["run_id"] == run_id   # resumed, not restarted
