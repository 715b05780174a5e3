"""`mezo-bench bench` on a shared results root: done points are skipped, failed ones re-run only
when asked, and two processes on one root run every point exactly once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.run_state import record_run_key
from harness.results.schema import missing_fields

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_grid(short_protocol):
    """The smoke profile cut to 4 steps: hf-mlm's 2 seeds and hf-ft's 2 seeds."""
    return short_protocol(4, 2)


def bench(protocol, sst2_dir, out, *extra):
    return ["bench", "--protocol", str(protocol), "--profile", "smoke", "--variant", "hf-mlm", "--variant", "hf-ft",
            "--data-dir", str(sst2_dir), "--out", str(out), "--device", "cpu", "--no-progress", "--no-memory", *extra]


def records(out):
    return [json.loads(path.read_text()) for path in sorted(Path(out).rglob("*.json")) if ".locks" not in path.parts]


@pytest.mark.slow
def test_done_points_are_skipped_and_failed_ones_rerun_only_when_asked(tiny_grid, sst2_dir, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(bench(tiny_grid, sst2_dir, out)) == 0
    first = records(out)
    assert len(first) == 4 and all(r["status"] == "completed" for r in first)
    assert main(bench(tiny_grid, sst2_dir, out)) == 0
    assert len(records(out)) == 4 and capsys.readouterr().err.count("completed (") == 4

    # a point whose latest record failed: skipped, then re-run with --retry-failed
    failed = dict(first[0], status="failed", error="RuntimeError: injected", created_utc="2099-01-01T00:00:00+00:00",
                  run_id=first[0]["run_id"] + "-failed")
    folder = next(out.rglob("smoke"))
    (folder / f"{failed['run_id']}.json").write_text(json.dumps(failed))
    assert main(bench(tiny_grid, sst2_dir, out)) == 0
    assert "failed before (RuntimeError: injected): skipped" in capsys.readouterr().err
    assert main(bench(tiny_grid, sst2_dir, out, "--retry-failed")) == 0
    again = [r for r in records(out) if record_run_key(r) == record_run_key(failed) and r["status"] == "completed"]
    assert len(again) == 2 and again[0]["loss_curve"] == again[1]["loss_curve"]
    assert main(["status", "--protocol", str(tiny_grid), "--profile", "smoke", "--variant", "hf-mlm",
                 "--results", str(out)]) == 0
    assert "2 completed (of 2)" in capsys.readouterr().out


@pytest.mark.slow
def test_two_processes_on_one_root_run_each_point_once(tiny_grid, sst2_dir, tmp_path):
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "harness.cli", *bench(tiny_grid, sst2_dir, out)]
    processes = [subprocess.Popen(argv, cwd=REPO, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    written = records(out)
    keys = [record_run_key(r) for r in written]
    assert len(keys) == 4 and len(set(keys)) == 4               # every point once, none twice
    assert all(r["status"] == "completed" and not missing_fields(r) for r in written)
    assert not list((out / ".locks").iterdir())                 # every claim released
