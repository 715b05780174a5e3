"""Run state on a results root that several `bench` processes (or nodes) share: which grid
points are done, and who is running which.

A run key names one point of one protocol's grid: (protocol hash, variant, k, seed, lr, batch
size, eps, weight decay). A point is done when a record of its key says "completed" or
"diverged"; "failed" is re-run only when asked. Before running a point a process claims it with
a lock file `<root>/.locks/<key>.lock`, created with O_EXCL (so exactly one process wins),
holding its host, pid and start time; while the run lasts a thread touches the file every
`heartbeat_every` seconds. A lock whose heartbeat is older than `stale_after`, or whose process
on this host is gone, belongs to a process that died: it is taken over (renamed aside first, so
only one taker wins) and said so; the run then resumes from its checkpoint
(harness.recipes.checkpoint).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.selection import grid_point

LOCKS = ".locks"
RUNS = ".runs"             # checkpoints of runs in progress (harness.recipes.checkpoint)
HEARTBEAT_EVERY = 30.0      # seconds between heartbeats
STALE_AFTER = 600.0         # a heartbeat this old: the owner is gone
DONE = ("completed", "diverged")


def run_key(protocol_hash: str, variant: str, k: int, seed: int, lr: float, batch_size: int, eps: float,
            weight_decay: float) -> str:
    """A file-name-safe key for one grid point of one protocol (its settings hash)."""
    return f"{variant}_k{k}_seed{seed}_lr{lr:g}_bs{batch_size}_eps{eps:g}_wd{weight_decay:g}_{protocol_hash[:16]}"


def point_key(protocol, profile: str, variant: str, point) -> str:
    """The run key of a grid point (a harness.protocol.settings.GridPoint) of a loaded protocol."""
    return run_key(protocol.settings_hash(profile, variant), variant, point.k, point.seed, point.lr, point.batch_size,
                   point.eps, point.weight_decay)


def record_run_key(record: dict) -> str:
    seed, lr, batch_size, eps, weight_decay = grid_point(record)
    return run_key(record["protocol"]["hash"], record["variant"]["name"], record["k"], seed, lr, batch_size,
                   eps, weight_decay)


def latest_status(records: list[dict]) -> dict[str, dict]:
    """key -> the latest record of that key (by creation time)."""
    latest: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["created_utc"]):
        latest[record_run_key(record)] = record
    return latest


@dataclass
class RunLock:
    """The claim of one run key under a results root; a context manager once acquired."""

    root: Path
    key: str
    stale_after: float = STALE_AFTER
    heartbeat_every: float = HEARTBEAT_EVERY
    took_over: dict | None = None        # the stale lock's contents, when it was taken over
    _mine: dict = field(default_factory=dict, repr=False)    # what this claim wrote into the lock
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _beat: threading.Thread | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return Path(self.root) / LOCKS / f"{self.key}.lock"

    def acquire(self) -> bool:
        """Claim the key; False if a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder = read_lock(self.path)
            if holder is None or not (holder["age_seconds"] >= self.stale_after or _dead_here(holder)):
                return False
            aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.path, aside)   # only one taker can move it
            except FileNotFoundError:
                return False
            moved = read_lock(aside) or {}
            if _identity(moved) != _identity(holder):   # another taker's fresh claim: put it back
                try:
                    os.link(aside, self.path)
                finally:
                    aside.unlink(missing_ok=True)
                return False
            aside.unlink()
            if not self._create():
                return False
            self.took_over = holder
        self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.key}", daemon=True)
        self._beat.start()
        return True

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        self._mine = {"host": socket.gethostname(), "pid": os.getpid(),
                      "started_utc": dt.datetime.now(dt.timezone.utc).isoformat()}
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self._mine, handle)
        return True

    def owned(self) -> bool:
        """Whether the lock file is still this claim (not taken over after a stall)."""
        return _identity(read_lock(self.path) or {}) == _identity(self._mine)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            if not self.owned():   # taken over after a stall: never keep another's claim alive
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.owned():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _identity(holder: dict) -> tuple:
    return holder.get("host"), holder.get("pid"), holder.get("started_utc")


def _progress(root: Path, key: str, steps: int) -> str:
    """", step S/N (checkpoint), ETA ..." from the run's last checkpoint, if it has one."""
    try:
        saved = json.loads((Path(root) / RUNS / key / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    step, seconds = saved.get("step", 0), saved.get("throughput", {}).get("train_seconds", 0.0)
    eta = (steps - step) * seconds / step / 60 if step else None
    return f", step {step}/{steps} at its last checkpoint" + (f", ETA ~{eta:.0f} min of training" if eta else "")


def _dead_here(holder: dict) -> bool:
    """The holder ran on this host and its process is gone (no need to wait for staleness)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, another user's
        return False
    return False


def read_lock(path: Path) -> dict | None:
    """A lock's holder (host, pid, started_utc) and its heartbeat's age; None if it is gone."""
    try:
        age = time.time() - path.stat().st_mtime
        holder = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:   # caught between create and write: young, so live
        holder = {}
    return {**holder, "age_seconds": age}


def running(root: Path) -> dict[str, dict]:
    """key -> holder of every lock under the root."""
    folder = Path(root) / LOCKS
    locks = {path.name[: -len(".lock")]: read_lock(path) for path in sorted(folder.glob("*.lock"))} if folder.is_dir() else {}
    return {key: holder for key, holder in locks.items() if holder is not None}


def grid_status(protocol, profile: str, variants: list[str], root: Path) -> list[dict]:
    """Every point of a profile's grid with its state under `root`: completed, diverged, failed
    (with its error), running (host, pid, heartbeat age), stale (a lock nobody keeps alive) or
    pending."""
    from harness.results.store import read_records, records_folder

    folder = records_folder(root, protocol.task, protocol.name, protocol.version, profile)
    latest = latest_status(read_records(folder)) if folder.is_dir() else {}
    locks = running(root)
    rows = []
    for variant in variants or protocol.profile_variants[profile]:
        settings = protocol.run_settings(profile, variant)
        for point in settings.grid():
            key = point_key(protocol, profile, variant, point)
            record, holder = latest.get(key), locks.get(key)
            if holder is not None:
                state = "stale" if holder["age_seconds"] >= STALE_AFTER else "running"
                detail = (f"{holder.get('host', '?')} pid {holder.get('pid', '?')}, heartbeat "
                          f"{holder['age_seconds']:.0f} s ago{_progress(root, key, settings.steps)}")
            elif record is not None:
                state = record["status"]
                detail = record.get("error", "") if state == "failed" else record["run_id"]
            else:
                state, detail = "pending", ""
            rows.append({"variant": variant, "point": point, "key": key, "state": state, "detail": detail})
    return rows
