"""The performance table: ratios from a pytest-benchmark JSON (pinned values), target checks,
storage per machine, and clear errors for files that are not benchmark runs."""

import json

import pytest

from harness.core.errors import HarnessError
from harness.results.perf import (
    case_rows,
    latest_runs,
    store_run,
    target_checks,
    write_perf_report,
)

INFO = {"perf_version": 1, "case": "roberta-base-float32-cpu", "model": "random-init:roberta-base", "dtype": "float32",
        "device": "cpu", "num_parameters": 1000, "parameter_bytes": 4_000_000_000, "real_tokens": 1000,
        "padded_tokens": 3000}


def bench(kind, median, **extra):
    info = {**INFO, "kind": kind, **extra}
    return {"name": f"test_{kind}", "extra_info": info, "stats": {"median": median}}


def benchmark_run(dirty=False):
    memory = {"ratios": {"mezo_over_inference": 1.01, "reference_mezo_over_inference": 1.3}}
    return {
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "mezo_bench": {"cuda_device": None}},
        "commit_info": {"id": "abcdef1234567890", "dirty": dirty},
        "datetime": "2026-11-21T07:00:00.000000+00:00",
        "version": "5.2.3",
        "benchmarks": [
            bench("forward", 2.0), bench("forward_bucketed", 0.8), bench("mezo_step", 4.4), bench("mezo_step_bucketed", 2.0),
            bench("reference_step", 5.6), bench("perturb_first", 0.4, bytes_per_pass=8_000_000_000),
            bench("perturb_repeat", 0.2, bytes_per_pass=8_000_000_000),
            bench("peak_memory", 30.0, memory=memory),
            {"name": "test_memory_bandwidth[cpu]", "stats": {"median": 0.1},
             "extra_info": {"kind": "bandwidth", "device": "cpu", "bytes_per_round": 2_000_000_000}},
        ],
    }


def test_ratios_come_from_the_medians_of_one_run():
    (row,) = case_rows(benchmark_run())
    assert row["machine"] == "Test CPU (2 cores)"
    assert row["forward_ms"] == pytest.approx(2000.0)
    assert row["overhead_factor"] == pytest.approx(1.1)             # 4.4 / (2 * 2.0)
    assert row["speedup_vs_reference"] == pytest.approx(5.6 / 4.4)
    assert row["non_forward_speedup"] == pytest.approx(1.6 / 0.4)   # time outside the two forwards
    assert row["bucketed_speedup_vs_reference"] == pytest.approx(2.8)
    assert row["perturb_first_gbps"] == pytest.approx(20.0)         # 2 x 4 GB / 0.4 s
    assert row["perturb_repeat_gbps"] == pytest.approx(40.0)
    assert row["bandwidth_gbps"] == pytest.approx(20.0)
    assert row["tokens_per_s_padded"] == pytest.approx(500.0)
    assert row["tokens_per_s_bucketed"] == pytest.approx(1250.0)
    assert row["mezo_peak_over_inference"] == pytest.approx(1.01)
    assert row["reference_peak_over_inference"] == pytest.approx(1.3)


def test_targets_are_judged_on_measured_values_only():
    checks = {c["target"]: c["met"] for c in target_checks(case_rows(benchmark_run()))}
    assert checks == {"overhead factor <= 1.15": True, "step >= 2.0x faster than reference-style": False,
                      "MeZO step peak memory <= 1.05 x inference": True}


def test_missing_benchmarks_leave_empty_cells():
    run = benchmark_run()
    run["benchmarks"] = [b for b in run["benchmarks"] if b["extra_info"]["kind"] in ("forward", "bandwidth")]
    (row,) = case_rows(run)
    assert row["overhead_factor"] is None and row["speedup_vs_reference"] is None
    assert target_checks([row]) == []


def test_store_and_report(tmp_path):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(benchmark_run(dirty=True)))
    stored = store_run(source, tmp_path / "perf")
    assert stored.relative_to(tmp_path / "perf").as_posix() == "test-cpu-2-cores/20261121T070000Z_abcdef123456-dirty.json"
    assert [path for path, _ in latest_runs(tmp_path / "perf")] == [stored]
    md, csv, figure = write_perf_report(tmp_path / "perf", tmp_path / "report")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    text = md.read_text()
    assert "perf/test-cpu-2-cores/20261121T070000Z_abcdef123456-dirty.json" in text
    assert "uncommitted changes" in text
    assert "Not measured (no run on such a machine): overhead factor <= 1.1 for random-init:roberta-large on cuda" in text
    assert csv.read_text().startswith("machine,case,")
    assert "| 2,000.0 " in text and "| 1.100 " in text   # forward ms, overhead factor
    assert write_perf_report(tmp_path / "nothing", tmp_path / "report2") == []


@pytest.mark.parametrize("content, message", [
    ("{", "not a readable pytest-benchmark JSON"),
    (json.dumps({"machine_info": {}, "commit_info": {}, "datetime": "x"}), "field 'benchmarks' is missing"),
    (json.dumps({"machine_info": {}, "commit_info": {}, "datetime": "x", "benchmarks": []}), "holds no benchmarks"),
    (json.dumps({"machine_info": {}, "commit_info": {}, "datetime": "x",
                 "benchmarks": [{"name": "test_other", "extra_info": {}}]}), "has no extra_info 'kind'"),
])
def test_files_that_are_not_perf_runs_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HarnessError, match=message) as error:
        store_run(path, tmp_path / "perf")
    assert "bad.json" in str(error.value)
    assert not (tmp_path / "perf").exists()
