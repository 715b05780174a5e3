"""`mezo-bench bench`: every point of a profile's grid, idempotently, on a results root that
several processes or nodes may share (harness.results.run_state): a done point is skipped, a
failed one re-run only with `retry_failed`, a point another live process runs is left to it, and
a point is claimed (a lock with a heartbeat) before it runs and checked again once claimed."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from harness.core.errors import HarnessError
from harness.protocol.loading import Protocol
from harness.protocol.settings import GridPoint
from harness.protocol.variants import get_variant
from harness.recipes.run import RunRequest, execute_run
from harness.results.run_state import (
    DONE,
    RUNS,
    RunLock,
    latest_status,
    point_key,
    read_lock,
)
from harness.results.store import read_records, records_folder


def grid_points(protocol: Protocol, profile: str, variants: list[str]) -> list[tuple[str, GridPoint]]:
    """The (variant, point) pairs to run; variants whose packages are missing are skipped, saying so."""
    points = []
    for name in variants or protocol.profile_variants[profile]:
        missing = get_variant(name).missing_packages()
        if missing:
            log(f"bench: skipping {name}: needs {', '.join(missing)} (pip install 'mezo-bench[{','.join(missing)}]')")
            continue
        points += [(name, point) for point in protocol.run_settings(profile, name).grid()]
    if not points:
        raise HarnessError(f"no variant of profile {profile!r} can run on this machine")
    return points


def run_grid(request: RunRequest, points: list[tuple[str, GridPoint]], retry_failed: bool = False,
             rerun_done: bool = False, wait: bool = False) -> list[Path]:
    """Run the points not done yet (every point: `rerun_done`) with `request`'s protocol, profile
    and options; returns the records written by this process. A point another live process holds
    is skipped, or with `wait` (a Ray task retried after its worker was lost) waited for until it
    is done or its claim turns stale and is taken over."""
    protocol, profile, root = request.protocol, request.profile, Path(request.out_dir)
    folder = records_folder(root, protocol.task, protocol.name, protocol.version, profile)
    written = []
    for index, (variant, point) in enumerate(points, start=1):
        key = point_key(protocol, profile, variant, point)
        prefix = (f"[{index}/{len(points)}] {variant} k={point.k} seed={point.seed} lr={point.lr:g} "
                  f"batch={point.batch_size} eps={point.eps:g} wd={point.weight_decay:g}")
        latest = _latest(folder, key)
        if not rerun_done and _skip(prefix, latest, retry_failed):
            if latest["status"] in DONE:   # a kill between its record and its cleanup may have left a checkpoint
                shutil.rmtree(root / RUNS / key, ignore_errors=True)
            continue
        lock = RunLock(root, key)
        while not lock.acquire():
            holder = read_lock(lock.path) or {}
            if not wait:
                log(f"{prefix}: running elsewhere ({holder.get('host', '?')} pid {holder.get('pid', '?')}): skipped")
                break
            time.sleep(lock.heartbeat_every)
        else:
            written += _claimed(lock, request, variant, point, prefix, folder, key, retry_failed, rerun_done)
    return written


def _claimed(lock: RunLock, request: RunRequest, variant: str, point: GridPoint, prefix: str, folder: Path, key: str,
             retry_failed: bool, rerun_done: bool) -> list[Path]:
    """Run a claimed point unless it turned out done meanwhile; release the claim."""
    with lock:
        if lock.took_over:
            log(f"{prefix}: took over the stale claim of {lock.took_over.get('host', '?')} pid "
                f"{lock.took_over.get('pid', '?')} (no heartbeat for {lock.took_over['age_seconds']:.0f} s)")
        if not rerun_done and _skip(prefix, _latest(folder, key), retry_failed):   # done while we claimed it
            return []
        log(prefix)
        return [execute_run(dataclasses.replace(
            request, variant=variant, k=point.k, seed=point.seed, lr=point.lr, batch_size=point.batch_size,
            eps=point.eps, weight_decay=point.weight_decay))]


def _latest(folder: Path, key: str) -> dict | None:
    return latest_status(read_records(folder)).get(key) if folder.is_dir() else None


def _skip(prefix: str, record: dict | None, retry_failed: bool) -> bool:
    if record is None:
        return False
    if record["status"] in DONE:
        log(f"{prefix}: {record['status']} ({record['run_id']}): skipped")
        return True
    if record["status"] == "failed" and not retry_failed:
        log(f"{prefix}: failed before ({record.get('error', '')}): skipped; --retry-failed runs it again")
        return True
    return False


def log(message: str) -> None:
    print(message, file=sys.stderr)
