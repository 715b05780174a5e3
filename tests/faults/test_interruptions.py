"""Fault injection, interruptions (README: What we promise under faults). Resumable runs (MeZO and
FT): a run killed with SIGKILL at arbitrary steps and resumed (several times) writes the record an
uninterrupted run writes, timing aside, and the same trajectory; a checkpoint of another setup is
refused; --restart discards it; a failure after a checkpoint is retried under a new identity; a
crash during training leaves a failed record and no temporary file. Ctrl-C: test_processes.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.protocol.loading import load_protocol

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def thirty_steps(short_protocol):
    return short_protocol(30, 10)


def run_argv(protocol, sst2_dir, out, *extra, variant="hf-mlm"):
    return ["run", "--protocol", str(protocol), "--profile", "smoke", "--variant", variant, "--seed", "13",
            "--data-dir", str(sst2_dir), "--out", str(out), "--device", "cpu", "--no-progress", "--no-memory",
            "--checkpoint-every", "4", "--snapshot-every", "8", *extra]


def killed_at(step, argv, script):
    """SIGKILL right after the dev evaluation of `step` (script: the signal_at_step fixture)."""
    child = subprocess.run([sys.executable, str(script), "SIGKILL", str(step), *argv], cwd=REPO, env={**os.environ},
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-2000:]


def the_record(out):
    [path] = [p for p in Path(out).rglob("*.json") if ".runs" not in p.parts]
    return path, json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["hf-mlm", "hf-ft"])
def test_killed_and_resumed_runs_write_the_uninterrupted_record(variant, thirty_steps, sst2_dir, tmp_path, signal_at_step,
                                                                 without_timing):
    plain, resumed = tmp_path / "plain", tmp_path / "resumed"
    assert main(run_argv(thirty_steps, sst2_dir, plain, variant=variant)) == 0
    for step in (7, 13, 22):   # after checkpoints 4, 12 (snapshot 8) and 20 (snapshot 16)
        killed_at(step, run_argv(thirty_steps, sst2_dir, resumed, variant=variant), signal_at_step)
    [state] = (resumed / ".runs").rglob("state.json")
    saved = json.loads(state.read_text())
    assert saved["step"] == 20
    assert main(run_argv(thirty_steps, sst2_dir, resumed, variant=variant)) == 0
    (plain_path, a), (resumed_path, b) = the_record(plain), the_record(resumed)
    assert without_timing(a) == without_timing(b)
    assert b["run_id"] == saved["identity"]["run_id"]          # the interrupted run's identity
    if variant == "hf-mlm":   # resumed from the step-16 snapshot plus 4 replayed steps
        assert saved["snapshot_step"] == 16
        trajectories = [(path.parent / r["trajectory"]["file"]).read_bytes()
                        for path, r in ((plain_path, a), (resumed_path, b))]
        assert trajectories[0] == trajectories[1]
    assert not list((resumed / ".runs").iterdir())              # the checkpoint is gone once the record is written


@pytest.mark.slow
def test_a_foreign_checkpoint_is_refused_and_restart_discards_it(thirty_steps, sst2_dir, tmp_path, signal_at_step, capsys):
    out = tmp_path / "r"
    killed_at(6, run_argv(thirty_steps, sst2_dir, out), signal_at_step)
    [state] = (out / ".runs").rglob("state.json")
    saved = json.loads(state.read_text())
    saved["fingerprint"]["device_type"] = "cuda"
    state.write_text(json.dumps(saved))
    assert main(run_argv(thirty_steps, sst2_dir, out)) == 2
    err = capsys.readouterr().err
    assert "a checkpoint of another run setup (device_type: ['cuda'] here ['cpu'])" in err and "--restart" in err
    saved["fingerprint"]["device_type"] = "cpu"
    trajectory = state.parent / saved["files"]["trajectory"]
    trajectory.write_bytes(trajectory.read_bytes()[:-50])
    state.write_text(json.dumps(saved))
    assert main(run_argv(thirty_steps, sst2_dir, out)) == 2
    assert "a damaged checkpoint file" in capsys.readouterr().err
    state.write_text("{not json")
    assert main(run_argv(thirty_steps, sst2_dir, out)) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(run_argv(thirty_steps, sst2_dir, out, "--restart")) == 0
    assert the_record(out)[1]["status"] == "completed"


@pytest.mark.slow
def test_status_shows_a_running_point_with_its_checkpointed_step(thirty_steps, sst2_dir, tmp_path, signal_at_step):
    from harness.results.run_state import RunLock, grid_status

    out = tmp_path / "r"
    killed_at(9, run_argv(thirty_steps, sst2_dir, out), signal_at_step)   # checkpoints at steps 4 and 8
    [folder] = (out / ".runs").iterdir()
    with RunLock(out, folder.name) as lock:
        assert lock.acquire()
        rows = grid_status(load_protocol(thirty_steps), "smoke", ["hf-mlm"], out)
    [running] = [row for row in rows if row["state"] == "running"]
    assert running["key"] == folder.name and "step 8/30 at its last checkpoint, ETA" in running["detail"]
    assert [row["state"] for row in rows].count("pending") == 1


def test_the_checkpoint_fingerprint_covers_the_code_that_changes_results(tmp_path):
    """A resume across a change of the training code is refused; one of the report code is not."""
    import harness
    from harness.recipes.provenance import code_fingerprint

    package = tmp_path / "harness"
    shutil.copytree(Path(harness.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    original = code_fingerprint(package)
    assert original == code_fingerprint()
    (package / "results" / "report.py").write_text("# another report\n")
    assert code_fingerprint(package) == original
    with (package / "zo" / "mezo.py").open("a") as source:
        source.write("# a change\n")
    assert code_fingerprint(package) != original


@pytest.mark.slow
def test_a_failure_after_a_checkpoint_is_retried_from_it_under_a_new_identity(thirty_steps, sst2_dir, tmp_path, signal_at_step):
    out = tmp_path / "r"
    killed_at(9, run_argv(thirty_steps, sst2_dir, out), signal_at_step)   # checkpoint at step 8
    [state] = (out / ".runs").rglob("state.json")
    identity = json.loads(state.read_text())["identity"]
    folder = out / "sst2" / "sst2-mezo-short-v3" / "smoke"
    folder.mkdir(parents=True)
    # what a failure after that checkpoint leaves: a failed record under the checkpoint's identity
    (folder / f"{identity['run_id']}.json").write_text(json.dumps({"run_id": identity["run_id"], "status": "failed"}))
    assert main(run_argv(thirty_steps, sst2_dir, out)) == 0
    [record] = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.stem != identity["run_id"]]
    assert record["status"] == "completed" and record["trajectory"]["steps"] == 30
    assert not list((out / ".runs").iterdir())


def test_a_crash_during_training_leaves_a_failed_record(sst2_protocol, sst2_dir, tmp_path, monkeypatch):
    import harness.recipes.run

    def crash(**kwargs):
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(harness.recipes.run, "train_mezo", crash)
    with pytest.raises(RuntimeError, match="simulated out of memory"):
        main(["run", "--protocol", str(sst2_protocol), "--profile", "smoke", "--seed", "13", "--data-dir", str(sst2_dir),
              "--out", str(tmp_path / "r"), "--no-progress"])
    [path] = (tmp_path / "r").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "simulated out of memory" in record["error"]
    assert "metrics" not in record
    assert not list((tmp_path / "r").rglob("*.tmp"))
