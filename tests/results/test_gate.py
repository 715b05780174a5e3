"""The regression gate: directions, tolerances, exact trajectories, added/removed/failing runs."""

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.results.gate import (
    ACROSS_MACHINES,
    SAME_MACHINE,
    GateMetric,
    compare_metric,
    gate,
    load_gate_config,
    to_markdown,
)
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
    assert names["loss_trajectory"].kind == "exact"
    assert names["loss_trajectory"].only == {"profile": ["smoke", "standin-gate"], "hardware": "cpu"}
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


def test_exact_trajectory_applies_only_to_the_gate_profiles_on_cpu(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(profile="quick", hardware="cuda:NVIDIA H100")]
    cand = [make_record(profile="quick", hardware="cuda:NVIDIA H100", loss_plus=(0.7, 0.59))]
    assert gate(base, cand, metrics)["passed"]
    for profile in ("smoke", "standin-gate"):   # `only` lists both: a trajectory off by 1e-2 fails either
        base = [make_record(profile=profile, model="pretrained:bert-tiny-splade")]
        cand = [make_record(profile=profile, model="pretrained:bert-tiny-splade", loss_plus=(0.7, 0.59))]
        assert not gate(base, cand, metrics)["passed"]


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


# ---- machine identities: exact on one machine, measured tolerances across machines (issue 22) ----

def _mezo_curve(shift_plus=0.0, shift_minus=None, at=None, steps=4, eps=1e-3):
    """A MeZO loss curve whose loss_plus/loss_minus are moved by shift (from step `at` on, default all)."""
    shift_minus = shift_plus if shift_minus is None else shift_minus
    plus = [0.70 - 0.01 * i for i in range(steps)]
    minus = [0.69 - 0.01 * i for i in range(steps)]
    for i in range(steps):
        if at is None or i + 1 >= at:
            plus[i] += shift_plus
            minus[i] += shift_minus
    return {"stride": 1, "steps": list(range(1, steps + 1)), "loss_plus": plus, "loss_minus": minus,
            "projected_grad": [(p - m) / (2 * eps) for p, m in zip(plus, minus)]}


def test_the_committed_config_has_a_measured_rule_across_machines_for_every_metric():
    names = {m.name: m for m in load_gate_config(CONFIG)}
    trajectory = names["loss_trajectory"].across_machines
    # above the spread measured up to step 200 (5.1e-6), below a real change (1e-4)
    assert trajectory.kind == "abs" and 5.1e-6 < trajectory.tolerance < 1e-4 and trajectory.steps == 200
    assert 4.6e-2 < trajectory.late_tolerance < 1   # above the chaotic growth measured, below a broken run
    assert names["steps_per_second"].across_machines == "skip" and names["wall_seconds"].across_machines == "skip"
    for name in ("test_accuracy", "best_dev_accuracy", "zero_shot_test_accuracy"):
        assert names[name].across_machines is None   # accuracies were identical across machines: the same 1 point


def test_a_candidate_pairs_with_a_baseline_of_its_own_machine_when_there_is_one(make_record):
    metrics = load_gate_config(CONFIG)
    mine = make_record(machine="A", created="2026-01-01T00:00:00+00:00")
    other = make_record(machine="B", created="2026-02-01T00:00:00+00:00", curve=_mezo_curve(2e-6))
    result = gate([mine, other], [make_record(machine="A", created="2026-03-01T00:00:00+00:00")], metrics)
    assert result["passed"] and [run["comparison"] for run in result["runs"]] == [SAME_MACHINE]
    assert result["runs"][0]["baseline_machine"] == mine["environment"]["machine_id"]
    # on a third machine the latest baseline (B's) is used, tolerantly
    third = gate([mine, other], [make_record(machine="C", created="2026-03-01T00:00:00+00:00", curve=_mezo_curve(2e-6))],
                 metrics)
    assert third["passed"] and third["runs"][0]["comparison"] == ACROSS_MACHINES
    assert third["runs"][0]["baseline_machine"] == other["environment"]["machine_id"]


def test_float_noise_passes_across_machines_but_not_on_one_machine(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(seed=13, machine="AMD", curve=_mezo_curve())]
    noisy = [make_record(seed=13, machine="Intel", curve=_mezo_curve(3e-6, -2e-6, at=2), memory_peak=(100, 101, 150),
                         steps_per_second=5.0)]   # a busy machine: timings are not compared across machines
    across = gate(base, noisy, metrics)
    assert across["passed"], to_markdown(across)
    verdicts = {row["metric"]: row["verdict"] for row in across["rows"]}
    assert verdicts["loss_trajectory"] == "ok" and verdicts["steps_per_second"] == "skipped"
    assert "max |Δ| 3e-06" in next(r["delta"] for r in across["rows"] if r["metric"] == "loss_trajectory")
    report = to_markdown(across)
    assert "tolerant (across machines)" in report and "test CPU AMD" in report and "test CPU Intel" in report
    same = gate(base, [dict(noisy[0], environment=base[0]["environment"])], metrics)
    assert not same["passed"] and same["runs"][0]["comparison"] == SAME_MACHINE
    assert {row["metric"] for row in same["rows"] if row["verdict"] == "regressed"} == {"loss_trajectory", "steps_per_second"}


@pytest.mark.parametrize("change, metric", [
    (dict(curve=_mezo_curve(1e-4, at=3)), "loss_trajectory"),              # a 1e-4 loss change
    (dict(curve=_mezo_curve(float("nan"), at=4)), "loss_trajectory"),      # a NaN in the curve
    (dict(curve=_mezo_curve(steps=3)), "loss_trajectory"),                 # a shorter curve
    (dict(test=0.48), "test_accuracy"),                                    # -2 points of accuracy
    (dict(test=float("nan")), "test_accuracy"),                            # a NaN metric
    (dict(memory_peak=(100, 300, 150)), "memory_excess_mezo_step"),         # the MeZO step's excess doubled and more
])
def test_a_real_change_fails_across_machines(make_record, change, metric):
    metrics = load_gate_config(CONFIG)
    base = [make_record(seed=13, machine="AMD", curve=_mezo_curve(), memory_peak=(100, 2_000_000, 150))]
    if "memory_peak" in change:
        change = dict(memory_peak=(100, 2_000_000 + 2_300_000, 150))   # +115%, past 2 MiB and past the tolerance
    result = gate(base, [make_record(seed=13, machine="Intel", **{"curve": _mezo_curve(), **change})], metrics)
    assert not result["passed"]
    assert [row["metric"] for row in result["rows"] if row["verdict"] == "regressed"] == [metric]


def test_a_trajectory_is_compared_up_to_the_measured_window_across_machines(make_record):
    metrics = load_gate_config(CONFIG)
    base = [make_record(machine="AMD", curve=_mezo_curve(steps=300))]
    # float noise grown chaotically after step 200 (measured: 4.6e-2 by step 400 for LoRA at lr 1.0)
    grown = gate(base, [make_record(machine="Intel", curve=_mezo_curve(1e-3, at=250, steps=300))], metrics)
    assert grown["passed"], to_markdown(grown)
    assert "steps > 200 only checked to be finite" in next(r["delta"] for r in grown["rows"] if r["metric"] == "loss_trajectory")
    assert not gate(base, [make_record(machine="Intel", curve=_mezo_curve(float("inf"), at=250, steps=300))], metrics)["passed"]
    assert not gate(base, [make_record(machine="Intel", curve=_mezo_curve(1e-4, at=150, steps=300))], metrics)["passed"]
    assert not gate(base, [make_record(machine="AMD", curve=_mezo_curve(1e-3, at=250, steps=300))], metrics)["passed"]


def test_a_removed_run_fails_across_machines(make_record):
    base = [make_record(seed=13, machine="AMD"), make_record(seed=42, machine="AMD")]
    result = gate(base, [make_record(seed=13, machine="Intel")], load_gate_config(CONFIG))
    assert not result["passed"] and len(result["removed"]) == 1


def test_a_record_without_a_machine_is_of_an_unknown_machine(make_record):
    result = gate([make_record(machine=None)], [make_record(machine=None)], load_gate_config(CONFIG))
    assert result["passed"] and result["runs"][0]["comparison"] == ACROSS_MACHINES
    assert "unknown machine" in to_markdown(result)


def test_linear_probe_runs_have_their_own_rules_across_machines(make_record):
    config = load_gate_config(CONFIG)
    [lp] = [override for override in config.overrides if override.name == "linear_probe"]
    assert lp.when == {"linear_probe": True} and lp.rules["loss_trajectory"] == "skip"

    def lp_record(machine, **fields):
        record = make_record(variant="hf-lp-mezo", machine=machine, **fields)
        record["variant"]["linear_probe"] = True
        return record
    base = [lp_record("AMD", curve=_mezo_curve())]
    # measured with kernels capped at AVX2: another probe, 0.78 apart at step 2, 3.6 points of accuracy
    moved = gate(base, [lp_record("Intel", curve=_mezo_curve(0.78, at=2), test=0.464)], config)
    assert moved["passed"], to_markdown(moved)
    verdicts = {row["metric"]: row["verdict"] for row in moved["rows"]}
    assert verdicts["loss_trajectory"] == "skipped" and verdicts["test_accuracy"] == "ok"
    for change in (dict(test=0.44),                                    # -6 points: more than a probe's noise
                   dict(zero_shot=0.48),                               # measured before the probe: 1 point
                   dict(memory_peak=(100, 101, 4_000_150)),            # memory keeps its rule
                   dict(curve=_mezo_curve(float("nan"), at=3)), dict(test=float("nan")), dict(status="failed")):
        assert not gate(base, [lp_record("Intel", **change)], config)["passed"], change
    # on one machine the measured move fails
    assert not gate(base, [lp_record("AMD", curve=_mezo_curve(0.78, at=2), test=0.464)], config)["passed"]


def test_runs_on_another_gpu_are_checked_for_completion_and_finite_values_only(make_record):
    config = load_gate_config(CONFIG)
    base = [make_record(profile="quick", hardware="cuda:NVIDIA A100", machine="A100")]
    other = gate(base, [make_record(profile="quick", hardware="cuda:NVIDIA H100", machine="H100", test=0.3,
                                    steps_per_second=5.0)], config)
    assert other["passed"] and {row["verdict"] for row in other["rows"]} <= {"skipped", "n/a"}
    assert not gate(base, [make_record(profile="quick", hardware="cuda:NVIDIA H100", machine="H100",
                                       test=float("nan"))], config)["passed"]
    assert not gate(base, [make_record(profile="quick", hardware="cuda:NVIDIA A100", machine="A100", test=0.3)],
                    config)["passed"]


def test_projected_gradients_are_held_to_tolerance_over_eps_across_machines(make_record):
    config = load_gate_config(CONFIG)
    curve = _mezo_curve()
    base = [make_record(machine="AMD", curve=curve)]
    moved = dict(curve, projected_grad=[g + 0.05 for g in curve["projected_grad"]])   # > 2e-5 / 1e-3 = 0.02
    result = gate(base, [make_record(machine="Intel", curve=moved)], config)
    assert not result["passed"] and "projected_grad differs" in next(
        row["delta"] for row in result["rows"] if row["metric"] == "loss_trajectory")
    within = dict(curve, projected_grad=[g + 0.01 for g in curve["projected_grad"]])
    assert gate(base, [make_record(machine="Intel", curve=within)], config)["passed"]


def test_memory_within_the_measured_band_passes_across_machines_only(make_record):
    config = load_gate_config(CONFIG)
    base = [make_record(machine="AMD", memory_peak=(100, 101, 10_000_090))]
    grown = dict(memory_peak=(100, 101, 15_000_090))   # +50% first-order excess (Intel measured +54%)
    assert gate(base, [make_record(machine="Intel", **grown)], config)["passed"]
    assert not gate(base, [make_record(machine="AMD", **grown)], config)["passed"]


def test_late_trajectory_points_are_held_within_the_late_tolerance(make_record):
    config = load_gate_config(CONFIG)
    base = [make_record(machine="AMD", curve=_mezo_curve(steps=300))]
    assert gate(base, [make_record(machine="Intel", curve=_mezo_curve(0.05, at=250, steps=300))], config)["passed"]
    broken = gate(base, [make_record(machine="Intel", curve=_mezo_curve(0.2, at=250, steps=300))], config)
    assert not broken["passed"] and "after step 200: tolerance 0.1" in next(
        row["delta"] for row in broken["rows"] if row["metric"] == "loss_trajectory")


def test_a_non_finite_candidate_value_regresses(make_record):
    m = metric("up", "abs", 0.01)
    assert compare_metric(m, 0.5, float("nan"))[0] == "regressed"
    assert compare_metric(m, 0.5, float("inf"))[0] == "regressed"
    assert compare_metric(m, 0.5, "0.5")[0] == "regressed"


METRIC_A = '[metrics.a]\npath = "x"\ndirection = "down"\nkind = "exact"\n'


@pytest.mark.parametrize("text, message", [
    (METRIC_A + 'across_machines = "sometimes"\n', r"\[metrics.a\]: field 'across_machines' must be a table"),
    (METRIC_A + 'across_machines = { kind = "abs", tolerance = -1 }\n',
     r"\[metrics.a\] across_machines: field 'tolerance' must be a number >= 0"),
    (METRIC_A + 'across_machines = { kind = "abs", tolerance = 1, steps = 0 }\n',
     r"across_machines: field 'steps' must be an integer >= 1, got 0"),
    ('[across_machines.x]\nwhen = { variant = "x" }\nrules = "skip"\n' + METRIC_A, r"\[across_machines.x\] when: unknown key 'variant'"),
    ('[across_machines.x]\nwhen = { linear_probe = true }\nrules = { b = "skip" }\n' + METRIC_A,
     r"\[across_machines.x\] rules: unknown metric 'b'; metrics: a"),
    ('[across_machines.x]\nrules = "skip"\n' + METRIC_A, r"\[across_machines.x\]: needs 'when'"),
    (METRIC_A + 'across_machines = { kind = "abs", tolerance = 1, late_tolerance = 2 }\n',
     r"field 'late_tolerance' must be a number >= 0 and needs 'steps'"),
])
def test_bad_across_machines_rule_names_the_field(tmp_path, text, message):
    path = tmp_path / "gate.toml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=message):
        load_gate_config(path)
