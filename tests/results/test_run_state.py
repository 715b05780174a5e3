"""Run state on a shared results root: run keys, the latest record of a key, and claims (a lock
created with O_EXCL, kept alive by a heartbeat, taken over once stale)."""

import json
import os
import time
from pathlib import Path

from harness.results.run_state import (
    RunLock,
    latest_status,
    read_lock,
    record_run_key,
    run_key,
    running,
)


def test_a_key_names_the_point_and_the_protocol_hash(make_record):
    record = make_record(seed=42, lr=1e-4)
    assert record_run_key(record) == run_key(record["protocol"]["hash"], "hf-mlm", 16, 42, 1e-4, 64, 1e-3, 0.0)
    assert record_run_key(record).startswith("hf-mlm_k16_seed42_lr0.0001_bs64_eps0.001_wd0_")


def test_the_latest_record_of_a_key_wins(make_record):
    failed = dict(make_record(), status="failed", created_utc="2026-01-01T00:00:00+00:00")
    completed = dict(make_record(), created_utc="2026-01-02T00:00:00+00:00")
    assert latest_status([completed, failed])[record_run_key(failed)]["status"] == "completed"


def test_one_claim_per_key_while_its_holder_lives(tmp_path):
    first, second = RunLock(tmp_path, "k1", heartbeat_every=0.05), RunLock(tmp_path, "k1")
    assert first.acquire()
    assert not second.acquire()
    holder = read_lock(first.path)
    assert holder["pid"] == os.getpid() and set(running(tmp_path)) == {"k1"}
    old = first.path.stat().st_mtime
    time.sleep(0.2)
    assert first.path.stat().st_mtime > old          # the heartbeat keeps it alive
    first.release()
    assert not first.path.exists() and running(tmp_path) == {}
    assert second.acquire() and second.took_over is None
    second.release()


def test_a_stale_claim_is_taken_over_and_said_so(tmp_path):
    dead = RunLock(tmp_path, "k2")
    dead.path.parent.mkdir(parents=True)
    assert dead._create()                             # a claim whose process died: no heartbeat
    os.utime(dead.path, (time.time() - 1000, time.time() - 1000))
    taker = RunLock(tmp_path, "k2", stale_after=600)
    assert taker.acquire()
    assert taker.took_over["pid"] == os.getpid() and taker.took_over["age_seconds"] >= 1000
    taker.release()
    assert list((tmp_path / ".locks").iterdir()) == []


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)                      # a process that has ended
    lock = RunLock(tmp_path, "k3")
    lock.path.parent.mkdir(parents=True)
    assert lock._create()
    holder = read_lock(lock.path)
    lock.path.write_text(json.dumps({**{k: v for k, v in holder.items() if k != "age_seconds"}, "pid": dead_pid}))
    taker = RunLock(tmp_path, "k3")
    assert taker.acquire() and taker.took_over["pid"] == dead_pid
    taker.release()


def test_a_taker_that_finds_another_takers_fresh_claim_puts_it_back(tmp_path, monkeypatch):
    import harness.results.run_state as run_state

    stale = RunLock(tmp_path, "k4")
    stale.path.parent.mkdir(parents=True)
    assert stale._create()
    os.utime(stale.path, (time.time() - 1000, time.time() - 1000))
    fresh = {"host": "other-host", "pid": 1, "started_utc": "2099-01-01T00:00:00+00:00"}
    real_rename = os.rename

    def another_taker_first(source, target):   # B took over between C's look and C's rename
        Path(source).write_text(json.dumps(fresh))
        real_rename(source, target)

    monkeypatch.setattr(run_state.os, "rename", another_taker_first)
    taker = RunLock(tmp_path, "k4")
    assert not taker.acquire()
    holder = read_lock(taker.path)
    assert (holder["host"], holder["pid"]) == ("other-host", 1)           # B's claim is back in place
    assert [p.name for p in (tmp_path / ".locks").iterdir()] == ["k4.lock"]
