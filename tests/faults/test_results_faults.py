"""Fault injection in the results layer: the gate fails closed, report, claims and gate group
runs by protocol hash and data, and unreadable records, bad --out folders and inconsistent
records give one clear line each instead of a traceback."""

import json
import re
from pathlib import Path

import pytest

from harness.results.paper import load_paper
from harness.results.gate import gate, load_gate_config
from harness.results.report import summarize
from harness.results.store import write_record

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "benchmarks" / "gate.toml"
BENCH = REPO / "benchmarks" / "sst2"
PAPER = REPO / "benchmarks" / "paper.toml"
MEMORY_METRICS = ["memory_excess_first_order_step", "memory_excess_inference", "memory_excess_mezo_step"]


def save(root: Path, *records, version=3) -> list[Path]:
    """Store records where `record_paths` finds them: <root>/sst2/sst2-mezo-v<version>/<profile>/."""
    paths = []
    for index, record in enumerate(records):
        folder = root / "sst2" / f"sst2-mezo-v{version}" / record["protocol"]["profile"]
        paths.append(write_record(record, folder / f"run{index}_{record['run_id'].split('_')[0]}_{record['seed']}.json"))
    return paths


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def baseline(make_record, tmp_path) -> Path:
    save(tmp_path / "base", make_record(seed=13), make_record(seed=42))
    return tmp_path / "base"


def run_gate(cli, base, cand, out, *extra):
    code, out_text, err = cli("gate", "--baseline", base, "--candidate", cand, "--out", out, *extra)
    return code, out_text + err


# -- the gate fails closed ------------------------------------------------------------------------

def no_memory(record):
    record["memory"] = {"error": "not measured (--no-memory)"}    # as a `--no-memory` run records it
    return record


def test_a_candidate_without_memory_is_a_regression_naming_the_metrics(make_record, baseline, tmp_path, cli):
    save(tmp_path / "cand", no_memory(make_record(seed=13)), no_memory(make_record(seed=42)))
    code, text = run_gate(cli, baseline, tmp_path / "cand", tmp_path / "out")
    assert code == 1
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    regressed = sorted({r["metric"] for r in report["rows"] if r["verdict"] == "regressed"})
    assert regressed == MEMORY_METRICS
    assert all(r["delta"] == "missing in candidate" for r in report["rows"] if r["verdict"] == "regressed")
    assert "| memory_excess_inference | 10 | - | missing in candidate | **regressed** |" in text
    assert report["regressions"] == 2 * len(MEMORY_METRICS)


@pytest.mark.parametrize("optional, passes", [('{ profile = "smoke" }', True), ("true", True),
                                              ('{ profile = "paper" }', False), ('{ hardware = "cuda" }', False)])
def test_a_metric_marked_optional_may_be_missing(make_record, baseline, tmp_path, cli, optional, passes):
    config = tmp_path / "gate.toml"
    text = CONFIG.read_text()
    for name in MEMORY_METRICS:
        text = text.replace(f"[metrics.{name}]\n", f"[metrics.{name}]\noptional = {optional}\n")
    config.write_text(text)
    assert [m.optional is not None for m in load_gate_config(config) if m.name in MEMORY_METRICS] == [True] * 3
    save(tmp_path / "cand", no_memory(make_record(seed=13)), no_memory(make_record(seed=42)))
    code, text = run_gate(cli, baseline, tmp_path / "cand", tmp_path / "out", "--config", config)
    assert code == (0 if passes else 1)
    if passes:
        assert ("Missing in the candidate but optional for these runs in the gate config (not a regression): "
                + ", ".join(MEMORY_METRICS) + ".") in text
        assert "| missing in candidate (optional) | missing (optional) |" in text
    else:
        assert "missing (optional)" not in text and "but optional" not in text


@pytest.mark.parametrize("optional, message", [
    ('"yes"', r"optional: must be a table of conditions \(profile, hardware, linear_probe\) or true/false, got 'yes'"),
    ('{ gpu = "h100" }', r"optional: unknown key 'gpu'"),
])
def test_a_bad_optional_names_the_metric(tmp_path, cli, baseline, optional, message):
    config = tmp_path / "gate.toml"
    config.write_text(CONFIG.read_text().replace("[metrics.test_accuracy]\n",
                                                 f"[metrics.test_accuracy]\noptional = {optional}\n"))
    code, text = run_gate(cli, baseline, baseline, tmp_path / "out", "--config", config)
    assert code == 2 and "mezo-bench: error:" in text and "[metrics.test_accuracy] " in text
    assert re.search(message, text)
    assert not (tmp_path / "out").exists()


def test_a_candidate_without_metrics_is_a_regression_not_a_key_error(make_record, baseline, tmp_path, cli):
    bare = make_record(seed=13)
    del bare["metrics"]
    # in memory (no reader in between): every metric the baseline has is missing in the candidate
    result = gate([make_record(seed=13)], [bare], load_gate_config(CONFIG))
    assert not result["passed"]
    assert {r["metric"] for r in result["rows"] if r["delta"] == "missing in candidate"} == {
        "test_accuracy", "best_dev_accuracy", "zero_shot_test_accuracy"}
    # from disk: an incomplete record, a regression listed with why
    [path] = save(tmp_path / "cand", bare)
    save(tmp_path / "cand", make_record(seed=42))
    code, text = run_gate(cli, baseline, tmp_path / "cand", tmp_path / "out")
    assert code == 1 and "KeyError" not in text
    assert f"- candidate {path}: lacks required field(s) metrics " in text
    assert "## Unreadable or incomplete records (regression)" in text


@pytest.mark.parametrize("change, says", [
    ({"protocol_hash": "9" * 64}, "protocol hash 999999999999 here but hhhhhhhhhhhh in the baseline"),
    ("data", "data test:bbbbbbbb,train:99999999 here but test:bbbbbbbb,train:aaaaaaaa in the baseline"),
    ({"hardware": "cuda:NVIDIA H100"}, "device kind cuda here but cpu in the baseline"),
    ({"variant": "hf-mlm-acc"}, ("the baseline has no run of hf-mlm-acc k=16 at this grid point (no run of "
                                 "hf-mlm-acc at all)")),
    ({"lr": 1e-4}, "the baseline has no run of hf-mlm k=16 at this grid point"),
])
def test_a_candidate_matching_nothing_says_exactly_why(make_record, baseline, tmp_path, cli, change, says):
    def candidate(seed):
        record = make_record(seed=seed, **(change if isinstance(change, dict) else {}))
        if change == "data":
            record["data"]["source_sha256"]["train"] = "9" * 64
        return record
    save(tmp_path / "cand", candidate(13), candidate(42))
    code, text = run_gate(cli, baseline, tmp_path / "cand", tmp_path / "out")
    assert code == 1
    assert "0 run(s) compared" in text and "each run below says what differs" in text
    added = text.split("## Added")[1]
    assert added.count(says) == 2, added     # for each candidate run
    removed = [line for line in text.split("## Removed (regression)")[1].split("##")[0].splitlines()
               if line.startswith("- ")]
    assert len(removed) == 2 and all("in the candidate" in line or "the candidate has no run" in line
                                     for line in removed)   # and each baseline run, from its side


def test_the_gate_counts_unreadable_records_on_either_side(make_record, baseline, tmp_path, cli):
    save(tmp_path / "cand", make_record(seed=13), make_record(seed=42))
    folder = tmp_path / "cand" / "sst2" / "sst2-mezo-v3" / "smoke"
    (folder / "torn.json").write_text('{"schema_version": 3, "status": "compl')
    (baseline / "sst2" / "sst2-mezo-v3" / "smoke" / "list.json").write_text("[]")
    code, text = run_gate(cli, baseline, tmp_path / "cand", tmp_path / "out")
    assert code == 1
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert report["regressions"] == 2 and report["compared_runs"] == 2
    assert [line.split(":")[0].split(" ")[0] for line in report["unreadable"]] == ["baseline", "candidate"]
    assert "list.json: not a run record (a JSON list, not an object)" in text
    assert "torn.json: not a readable run record" in text


def test_a_baseline_of_two_hashes_under_one_name_is_an_error(make_record, tmp_path, cli):
    paths = save(tmp_path / "base", make_record(seed=13), make_record(seed=42, protocol_hash="9" * 64))
    code, text = run_gate(cli, tmp_path / "base", tmp_path / "base", tmp_path / "out")
    assert code == 2 and "mezo-bench: error: protocol sst2-mezo v3 profile smoke variant hf-mlm has two" in text
    assert str(paths[0]) in text and str(paths[1]) in text
    assert not (tmp_path / "out").exists()


# -- report and claims group by hash and data ----------------------------------------------------

def test_report_refuses_two_hashes_under_one_name_naming_both_records(make_record, tmp_path, cli):
    paths = save(tmp_path / "results", make_record(seed=13), make_record(seed=42, protocol_hash="9" * 64))
    code, _, err = cli("report", "--results", tmp_path / "results", "--paper", PAPER,
                       "--out", tmp_path / "report")
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("mezo-bench: error: protocol sst2-mezo v3 profile smoke variant hf-mlm has two "
                           "protocol hashes: ")
    assert f"{'h' * 64} ({paths[0]})" in line and f"{'9' * 64} ({paths[1]})" in line
    assert not (tmp_path / "report").exists()
    code, _, err = cli("claims", "--results", tmp_path / "results", "--claims", BENCH / "claims.toml",
                       "--paper", PAPER)
    assert code == 2 and "has two protocol hashes" in err


def test_runs_of_one_point_with_different_splits_are_refused(make_record, tmp_path, cli):
    other = make_record(variant="hf-mlm-acc", seed=13)
    same = make_record(seed=13)
    other["data"]["split_sha256"]["train"] = "9" * 64
    save(tmp_path / "results", same, dict(same, run_id="x", created_utc="2026-02-01T00:00:00+00:00", data=other["data"]))
    code, _, err = cli("report", "--results", tmp_path / "results", "--paper", PAPER,
                       "--out", tmp_path / "report")
    assert code == 2 and "k=16 seed=13 on the same source data have different splits (data.split_sha256)" in err


def test_report_keeps_runs_of_different_data_apart(make_record):
    other_data = [make_record(seed=seed, test=0.9) for seed in (13, 42)]
    for record in other_data:
        record["data"]["source_sha256"]["train"] = "9" * 64
    records = [make_record(seed=13, test=0.5), make_record(seed=42, test=0.5)] + other_data
    table = summarize(records, load_paper(PAPER)).sort_values("test_acc_mean")
    assert list(table["test_acc_mean"]) == pytest.approx([50.0, 90.0])
    assert [data.split(",")[1][:14] for data in table["data"]] == ["train:aaaaaaaa", "train:99999999"]
    assert list(table["seeds"]) == [2, 2] and list(table["hash"]) == ["h" * 64] * 2


def test_report_shows_a_short_hash_and_data_beside_the_name(make_record, tmp_path, cli):
    save(tmp_path / "results", make_record(seed=13, protocol_hash="0123456789" + "f" * 54))
    code, _, _ = cli("report", "--results", tmp_path / "results", "--paper", PAPER,
                     "--out", tmp_path / "report")
    assert code == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| sst2-mezo " in summary and "| smoke " in summary
    assert "| 01234567 | test:bbbbbbbb,train:aaaaaaaa |" in summary
    assert "0123456789" + "f" * 54 in (tmp_path / "report" / "summary.csv").read_text()   # exact in the CSV


def test_a_claim_never_mixes_data(make_record):
    from harness.results.claims import Claim, judge

    records = [make_record(seed=seed) for seed in (13, 42)]
    other = [make_record(seed=seed) for seed in (13, 42)]
    for record in other:
        record["data"]["source_sha256"]["test"] = "9" * 64
    claim = Claim(id="c", source="s", statement="t", task="sst2", metric="zero_gradient_percent", variant="hf-mlm",
                  expected=0.0, tolerance=1.0, k=16, conditions={"protocol_version": 3})
    assert judge(claim, records).outcome == "reproduced"
    verdict = judge(claim, records + other)
    assert verdict.outcome == "not measured"
    assert "complete grids of several source data match (data.source_sha256: test:99999999,train:aaaaaaaa; " \
           "test:bbbbbbbb,train:aaaaaaaa)" in verdict.detail


# -- unreadable records are skipped, one line each ------------------------------------------------

@pytest.fixture
def results_with_bad_records(make_record, tmp_path) -> tuple[Path, Path, Path]:
    root = tmp_path / "results"
    save(root, make_record(variant="hf-mlm-acc", seed=13, zero_fraction=0.99),
         make_record(variant="hf-mlm-acc", seed=42, zero_fraction=0.99))
    folder = root / "sst2" / "sst2-mezo-v3" / "smoke"
    incomplete = make_record(seed=13)
    del incomplete["protocol"]["hash"], incomplete["timing"]
    (folder / "incomplete.json").write_text(json.dumps(incomplete))
    (folder / "garbage.json").write_text("not json at all")
    return root, folder / "incomplete.json", folder / "garbage.json"


@pytest.mark.parametrize("command", ["report", "claims"])
def test_report_and_claims_skip_bad_records_one_line_each(results_with_bad_records, tmp_path, cli, command):
    root, incomplete, garbage = results_with_bad_records
    argv = [command, "--results", root, "--paper", PAPER, "--out", tmp_path / "out"]
    if command == "claims":
        argv += ["--claims", BENCH / "claims.toml"]
    code, out, err = cli(*argv)
    assert code == 0 and "Traceback" not in err and "KeyError" not in err
    assert err.splitlines() == [
        f"mezo-bench: skipped {garbage}: not a readable run record (Expecting value: line 1 column 1 (char 0))",
        (f"mezo-bench: skipped {incomplete}: lacks required field(s) protocol.hash, timing "
         f"(status 'completed', schema_version 3)")]
    if command == "claims":
        assert "seed003-accuracy-zero-gradients    reproduced" in out     # the good records still count
    else:
        assert "| hf-mlm-acc " in (tmp_path / "out" / "summary.md").read_text()
        assert "| hf-mlm " not in (tmp_path / "out" / "summary.md").read_text()
    code, _, err = cli(*argv, "--strict")
    assert code == 1 and err.count("mezo-bench: skipped ") == 2


def test_nothing_readable_is_an_error(tmp_path, cli):
    folder = tmp_path / "results" / "sst2" / "sst2-mezo-v3" / "smoke"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text('{"schema_version": 7}')
    code, _, err = cli("report", "--results", tmp_path / "results", "--paper", PAPER,
                       "--out", tmp_path / "out")
    assert code == 2
    assert err.splitlines() == [f"mezo-bench: skipped {folder / 'a.json'}: unknown schema_version 7 (this code reads 1..3)",
                                f"mezo-bench: error: no run records under {tmp_path / 'results'} (1 skipped)"]
    assert not (tmp_path / "out").exists()


def test_an_old_record_that_cannot_be_upgraded_is_skipped(make_record, tmp_path, cli):
    root = tmp_path / "results"
    save(root, make_record(seed=13))
    broken = json.loads((REPO / "tests" / "results" / "fixtures" / "record_v1.json").read_text())
    del broken["variant"]["backend"]
    path = root / "sst2" / "sst2-mezo-v3" / "smoke" / "old.json"
    path.write_text(json.dumps(broken))
    code, _, err = cli("report", "--results", root, "--paper", PAPER, "--out", tmp_path / "out")
    assert code == 0
    assert f"mezo-bench: skipped {path}: cannot upgrade from schema_version 1: a field is missing" in err


# -- --out that cannot be written: an error before anything is read or written -----------------

@pytest.mark.parametrize("command", ["report", "claims", "gate"])
@pytest.mark.parametrize("out", ["file", "/proc/nope/x"])
def test_an_unwritable_out_is_an_error_and_nothing_is_written(make_record, baseline, tmp_path, cli, command, out):
    if out == "file":
        out = tmp_path / "taken"
        out.write_text("keep me")
    argv = {"report": ["report", "--results", baseline, "--paper", PAPER],
            "claims": ["claims", "--results", baseline, "--claims", BENCH / "claims.toml",
                       "--paper", PAPER],
            "gate": ["gate", "--baseline", baseline, "--candidate", baseline]}[command]
    before = files_under(tmp_path)
    code, out_text, err = cli(*argv, "--out", out)
    assert code == 2 and out_text == ""
    [line] = err.splitlines()
    assert line.startswith(f"mezo-bench: error: --out {out} ")
    assert files_under(tmp_path) == before
    if isinstance(out, Path):
        assert out.read_text() == "keep me"
