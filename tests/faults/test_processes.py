"""Fault injection: processes and temporary files. A memory child dies with its parent (SIGKILL
or Ctrl-C of the parent) and no payload file outlives them; payload folders earlier versions left
behind are removed at the next measurement; Ctrl-C of a run prints one line, exits 130, writes no
record, releases its lock and says whether (and from where) the same command resumes it."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import harness.recipes.train as train
from harness.cli import main
from harness.measure import memory

REPO = Path(__file__).resolve().parents[2]

# A parent that measures memory on a pickled objective (argv[1]). Its children are the real
# `python -m harness.measure.memory` whose torch.load is slowed: once loaded (its guard set up) a
# child writes its pid to $CHILD_WAITING and waits 120 s, so only its parent's death ends it soon.
PARENT = """
import os, subprocess, sys
import torch
from harness.measure.memory import measure_memory

SLOW_CHILD = '''
import os, runpy, time
import torch
load = torch.load
def load_then_wait(*args, **kwargs):
    loaded = load(*args, **kwargs)
    with open(os.environ["CHILD_WAITING"], "w") as marker:
        marker.write(str(os.getpid()))
    time.sleep(120)
    return loaded
torch.load = load_then_wait
runpy.run_module("harness.measure.memory", run_name="__main__", alter_sys=True)
'''
run = subprocess.run
def slow_child(command, **options):
    assert command[1:3] == ["-m", "harness.measure.memory"], command
    return run([command[0], "-c", SLOW_CHILD, *command[3:]], **options)
subprocess.run = slow_child
payload = torch.load(sys.argv[1], weights_only=False)
parameters = dict(payload["objective"].model.named_parameters())
print(measure_memory(payload["objective"], [(name, parameters[name]) for name in payload["trainable"]],
                     payload["batch"], lr=1e-3, eps=1e-3, weight_decay=0.0, dropout=False))
"""


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def payloads(folder: Path) -> list[Path]:
    return list(folder.glob(f"{memory.PAYLOAD_PREFIX}*"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")   # a zombie has ended (an orphan waits for init to reap it)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


@pytest.fixture
def pickled_objective(tmp_path, micro_tokenizer, build_micro_model, micro_objective, micro_batch):
    model = build_micro_model(micro_tokenizer)
    objective, _ = micro_objective(micro_tokenizer, model)
    _, batch = micro_batch(micro_tokenizer)
    path = tmp_path / "objective.pt"
    torch.save({"objective": objective, "trainable": [name for name, _ in model.named_parameters()],
                "batch": batch}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fault, when", [(signal.SIGKILL, "child loaded"), (signal.SIGKILL, "child started"),
                                         (signal.SIGINT, "child loaded")])
def test_a_memory_child_dies_with_its_parent_and_leaves_no_payload(fault, when, pickled_objective, tmp_path):
    """SIGKILL of the parent once the child is set up (the kernel's parent-death signal), or as soon
    as it starts (it finds its parent gone), or Ctrl-C of the parent (subprocess.run kills it)."""
    temp, waiting = tmp_path / "temp", tmp_path / "waiting"
    temp.mkdir()
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pickled_objective)], cwd=REPO,
                              env={**os.environ, "TMPDIR": str(temp), "CHILD_WAITING": str(waiting)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child = None
    try:
        found = wait_for(lambda: children(parent.pid) or parent.poll() is not None, 60, "memory child")
        assert parent.poll() is None, parent.stderr.read().decode()[-2000:]
        [child] = found
        if when == "child loaded":
            wait_for(waiting.exists, 60, "loaded child")
            assert not payloads(temp)   # the payload never has a name
        parent.send_signal(fault)
        parent.wait(timeout=30)
        wait_for(lambda: not alive(child), 15, "end of the memory child")
        if when == "child started":
            assert not waiting.exists()   # it ended before loading anything
        assert not payloads(temp)
    finally:
        parent.kill()
        parent.wait()
        parent.stderr.close()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


def test_payload_folders_of_dead_measurements_are_removed_at_the_next_start(tmp_path, monkeypatch, micro_tokenizer,
                                                                            build_micro_model, micro_objective,
                                                                            micro_batch):
    """Earlier versions' <temp>/mezo-bench-memory-*/payload.pt: removed once nothing changed them for
    memory.STALE_AFTER and no process names them; a fresh one or one a live child names is kept."""
    def payload_folder(name: str, age: float) -> Path:
        folder = tmp_path / f"{memory.PAYLOAD_PREFIX}{name}"
        folder.mkdir()
        (folder / "payload.pt").write_bytes(b"x" * 1000)
        for path in (folder / "payload.pt", folder):
            os.utime(path, (time.time() - age,) * 2)
        return folder

    dead = payload_folder("dead", 2 * memory.STALE_AFTER)
    fresh = payload_folder("fresh", 10)
    in_use = payload_folder("inuse", 2 * memory.STALE_AFTER)
    other = tmp_path / "unrelated"
    other.mkdir()
    os.utime(other, (time.time() - 2 * memory.STALE_AFTER,) * 2)
    # what an old version's child looks like: its command line names the payload
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(in_use / "payload.pt")])
    try:
        wait_for(lambda: str(in_use) in Path(f"/proc/{child.pid}/cmdline").read_bytes().decode(), 10,
                 "command line")
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        model = build_micro_model(micro_tokenizer)
        objective, _ = micro_objective(micro_tokenizer, model)
        _, batch = micro_batch(micro_tokenizer, n=2)
        result = memory.measure_memory(objective, list(model.named_parameters()), batch, lr=1e-3, eps=1e-3,
                                       weight_decay=0.0, dropout=False, phases=())   # no child: the start only
        assert "error" not in result and not dead.exists()
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted([fresh.name, in_use.name, other.name])
    finally:
        child.kill()
        child.wait()
    assert memory.remove_stale_payload_folders(tmp_path) == [in_use]   # its child is gone now
    assert fresh.exists()


@pytest.fixture(scope="module")
def ten_steps(short_protocol):
    return short_protocol(10, 5)


def run_argv(protocol, sst2_dir, out, command="run"):
    return [command, "--protocol", str(protocol), "--profile", "smoke", "--variant", "hf-mlm",
            *(["--seed", "13"] if command == "run" else []),
            "--data-dir", str(sst2_dir), "--out", str(out), "--device", "cpu", "--no-progress", "--no-memory",
            "--checkpoint-every", "4", "--snapshot-every", "8"]


def records(out: Path) -> list[Path]:
    return [path for path in out.rglob("*.json") if ".runs" not in path.parts]


@pytest.mark.slow
def test_ctrl_c_prints_one_line_exits_130_and_the_same_command_resumes(ten_steps, sst2_dir, tmp_path, capsys,
                                                                      signal_at_step):
    out = tmp_path / "r"
    argv = run_argv(ten_steps, sst2_dir, out)
    interrupted = subprocess.run([sys.executable, str(signal_at_step), "SIGINT", "6", *argv], cwd=REPO, capture_output=True, text=True,
                                 timeout=600)   # a checkpoint at step 4
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    [line] = interrupted.stderr.splitlines()
    [folder] = (out / ".runs").iterdir()
    assert line == (f"mezo-bench: interrupted at step 6/10 of hf-mlm k=16 seed=13 lr=0.001 batch=64 eps=0.001 wd=0; "
                    f"resumable: run the same command again (checkpoint at step 4 in {folder})")
    assert not records(out)   # an interrupted run is not a failed one
    assert main(argv) == 0
    [record] = [json.loads(path.read_text()) for path in records(out)]
    assert record["status"] == "completed" and record["trajectory"]["steps"] == 10
    assert not list((out / ".runs").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "bench"])
def test_ctrl_c_before_a_checkpoint_says_nothing_to_resume(command, ten_steps, sst2_dir, tmp_path, capsys,
                                                            monkeypatch):
    """And `bench` releases the interrupted point's lock."""
    original = train._end_of_step

    def end_of_step(result, objective, dev_batches, step, *rest):
        original(result, objective, dev_batches, step, *rest)
        if step == 2:
            raise KeyboardInterrupt   # what Python's SIGINT handler raises

    monkeypatch.setattr(train, "_end_of_step", end_of_step)
    out = tmp_path / "r"
    assert main(run_argv(ten_steps, sst2_dir, out, command)) == 130
    lines = capsys.readouterr().err.splitlines()
    if command == "bench":   # its progress lines, then the interrupt
        assert lines[0].startswith("bench: protocol") and lines[1].startswith("[1/")
        lines = lines[2:]
    assert lines == ["mezo-bench: interrupted at step 2/10 of hf-mlm k=16 seed=13 lr=0.001 batch=64 eps=0.001 wd=0; "
                     "nothing to resume (no checkpoint yet)"]
    assert not records(out) and not list((out / ".runs").glob("*/state.json"))
    assert not list(out.glob(".locks/*.lock"))


def test_ctrl_c_outside_a_run_is_one_line_too(monkeypatch, capsys):
    import harness.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "plan", interrupted)
    assert main(["plan"]) == 130
    assert capsys.readouterr().err == "mezo-bench: interrupted\n"
