"""The regression gate: directions, tolerances, exact trajectories, added/removed/failing runs."""

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.results.gate import GateMetric, compare_metric, gate, load_gate_config
from harness.results.store import write_record

CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "gate.toml"


def metric(direction="up", kind="abs", tolerance=0.01, noise_floor=0.0):
    return GateMetric("m", ("x",), direction, kind, tolerance, {}, noise_floor)


@pytest.mark.parametrize(
    "m, base, cand, verdict",
    [
        (metric("up", "abs", 0.01), 0.90, 0.895, "ok"),
        (metric("up", "abs", 0.01), 0.90, 0.88, "regressed"),
        (metric("up", "abs", 0.01), 0.90, 0.92, "improved"),
        (metric("down", "rel", 0.10), 100.0, 109.0, "ok"),
        (metric("down", "rel", 0.10), 100.0, 111.0, "regressed"),
        (metric("down", "rel", 0.10), 100.0, 80.0, "improved"),
        (metric("up", "rel", 0.5), 10.0, 4.0, "regressed"),
        (metric("down", "exact", 0.0), {"steps": [1, 2], "l": [0.5, 0.4]}, {"steps": [1, 2], "l": [0.5, 0.4]}, "ok"),
        (metric("down", "exact", 0.0), {"steps": [1, 2], "l": [0.5, 0.4]}, {"steps": [1, 2], "l": [0.5, 0.41]}, "regressed"),
        (metric(), None, 0.5, "n/a"),
        # a noise floor: changes below it never regress, above it the relative tolerance rules
        (metric("down", "rel", 0.10, noise_floor=2.0), 4.0, 5.5, "ok"),
        (metric("down", "rel", 0.10, noise_floor=2.0), 4.0, 6.5, "regressed"),
        (metric("down", "rel", 0.10, noise_floor=2.0), 100.0, 111.0, "regressed"),
    ],
)
def test_compare_metric(m, base, cand, verdict):
    assert compare_metric(m, base, cand)[0] == verdict


def test_trajectory_difference_names_the_first_step():
    _, delta = compare_metric(metric("down", "exact"), {"steps": [1, 2, 3], "loss": [0.7, 0.6, 0.5]},
                              {"steps": [1, 2, 3], "loss": [0.7, 0.6, 0.55]})
    assert delta == "loss differs first at step 3: 0.5 -> 0.55"


def test_committed_config_loads():
    names = {m.name: m for m in load_gate_config(CONFIG)}
    assert names["test_accuracy"].direction == "up" and names["test_accuracy"].kind == "abs"
    assert names["loss_trajectory"].kind == "exact" and names["loss_trajectory"].only == {"profile": "smoke", "hardware": "cpu"}
    mezo_memory = names["memory_excess_mezo_step"]
    assert mezo_memory.path == ("memory", "phases", "mezo_step", "excess_bytes")
    assert mezo_memory.direction == "down" and mezo_memory.kind == "rel" and mezo_memory.noise_floor == 2 * 2**20


def test_bad_config_names_the_field(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text('[metrics.a]\npath = "x"\ndirection = "sideways"\nkind = "abs"\ntolerance = 1\n')
    with pytest.raises(HarnessError, match=r"\[metrics.a\]: field 'direction' must be 'up' or 'down'"):
        load_gate_config(path)
    path.write_text('[metrics.a]\npath = "x"\ndirection = "down"\nkind = "rel"\ntolerance = 0.1\nnoise_floor = -1\n')
    with pytest.raises(HarnessError, match=r"\[metrics.a\]: field 'noise_floor' must be a number >= 0, got -1"):
        load_gate_config(path)


def test_identical_runs_pass_and_regressions_fail(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(seed=13), make_record(seed=42)]
    assert gate(base, base, metrics)["passed"]

    worse = [make_record(seed=13, test=0.40), make_record(seed=42, loss_plus=(0.7, 0.61))]
    result = gate(base, worse, metrics)
    assert not result["passed"] and result["regressions"] == 2
    assert {(r["metric"], r["verdict"]) for r in result["rows"] if r["verdict"] == "regressed"} == \
        {("test_accuracy", "regressed"), ("loss_trajectory", "regressed")}


def test_added_removed_and_newly_failing_runs(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(seed=13), make_record(seed=42)]
    cand = [make_record(seed=13, status="failed"), make_record(seed=87)]
    result = gate(base, cand, metrics)
    assert not result["passed"]
    assert len(result["removed"]) == 1 and "seed=42" in result["removed"][0]
    assert len(result["added"]) == 1 and "seed=87" in result["added"][0]
    assert len(result["newly_failing"]) == 1 and "RuntimeError: boom" in result["newly_failing"][0]


def test_a_run_that_newly_diverges_is_a_regression(make_record):
    diverged = dict(make_record(seed=13), status="diverged", diverged_at=3)
    result = gate([make_record(seed=13)], [diverged], load_gate_config(CONFIG))
    assert not result["passed"] and result["newly_failing"] == [result["newly_failing"][0]]
    assert "diverged" in result["newly_failing"][0]


def test_nothing_comparable_fails(make_record):
    result = gate([make_record(protocol_hash="a" * 64)], [make_record(protocol_hash="b" * 64)], load_gate_config(CONFIG))
    assert not result["passed"] and result["compared_runs"] == 0


def test_exact_trajectory_applies_only_to_smoke_on_cpu(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(profile="quick", hardware="cuda:NVIDIA H100")]
    cand = [make_record(profile="quick", hardware="cuda:NVIDIA H100", loss_plus=(0.7, 0.59))]
    assert gate(base, cand, metrics)["passed"]


def test_cli_exit_codes_and_reports(make_record, tmp_path, capsys):
    def save(folder, records):
        for i, record in enumerate(records):
            write_record(record, tmp_path / folder / "sst2" / "sst2-mezo-v2" / "smoke" / f"{i}.json")
    save("base", [make_record(seed=13)])
    save("same", [make_record(seed=13)])
    # a MeZO step that adds 4 MB more (say, a parameter-sized z): past the 2 MiB noise floor
    save("worse", [make_record(seed=13, memory_peak=(100, 4_000_150, 150))])
    save("noise", [make_record(seed=13, memory_peak=(100, 1_000_101, 1_000_150))])   # +1 MB: RSS noise
    assert main(["gate", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "same"),
                 "--out", str(tmp_path / "ok")]) == 0
    assert main(["gate", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "worse"),
                 "--out", str(tmp_path / "bad")]) == 1
    report = json.loads((tmp_path / "bad" / "gate.json").read_text())
    assert [r["metric"] for r in report["rows"] if r["verdict"] == "regressed"] == ["memory_excess_mezo_step"]
    assert main(["gate", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "noise"),
                 "--out", str(tmp_path / "noise-report")]) == 0
    assert "| **regressed** |" in (tmp_path / "bad" / "gate.md").read_text()
    assert main(["gate", "--baseline", str(tmp_path / "nowhere"), "--candidate", str(tmp_path / "same")]) == 2
    assert "results not found" in capsys.readouterr().err
