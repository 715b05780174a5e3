"""The result store (schema upgrade, append-only writes, one-call loading) and the report."""

import json
import shutil
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.results.paper import load_paper
from harness.results.report import summarize, unevaluated_groups, write_report
from harness.results.schema import SCHEMA_VERSION
from harness.results.selection import best_dev_per_seed, reference_folder_name
from harness.results.store import load_records, read_records, upgrade, write_record

FIXTURES = Path(__file__).parent / "fixtures"
PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "paper.toml"


def store(tmp_path, records):
    for index, record in enumerate(records):
        write_record(record, tmp_path / "sst2" / "sst2-mezo-v2" / record["protocol"]["profile"] / f"run{index}.json")
    return tmp_path


def test_schema_1_record_is_upgraded(tmp_path):
    original = json.loads((FIXTURES / "record_v1.json").read_text())
    assert original["schema_version"] == 1
    record = upgrade(json.loads((FIXTURES / "record_v1.json").read_text()))
    assert record["schema_version"] == SCHEMA_VERSION == 3
    assert record["protocol"]["grid"] is None and record["z_stream"] is None   # not recorded before schema 3
    assert record["variant"] == {"name": "hf-mlm", "backend": "hf", "head": "mlm", "loss": "ce",
                                 "parameters": "full", "optimizer": "mezo"}
    assert record["sparsity"] is None and record["liveness"] is None
    assert record["memory"] == {"error": "not recorded (schema 1)"}
    assert record["throughput"]["steps_per_second"] == original["timing"]["steps_per_second"]
    assert record["metrics"] == original["metrics"]          # measurements are carried over untouched


def test_unknown_schema_is_an_error():
    with pytest.raises(HarnessError, match="unknown schema_version 99"):
        upgrade({"schema_version": 99})


def test_records_are_append_only_and_atomic(make_record, tmp_path):
    path = tmp_path / "sst2" / "p-v1" / "smoke" / "run.json"
    write_record(make_record(), path)
    with pytest.raises(HarnessError, match="already exists; records are append-only"):
        write_record(make_record(test=0.9), path)
    assert json.loads(path.read_text())["metrics"]["test_accuracy"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]   # no temporary file left behind


def test_load_records_is_one_call_and_skips_non_records(make_record, tmp_path):
    root = store(tmp_path, [make_record(seed=13), make_record(seed=42)])
    shutil.copy(FIXTURES / "record_v1.json", tmp_path / "sst2" / "sst2-mezo-v2" / "smoke" / "old.json")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "claims.json").write_text("[]")    # not a run record: ignored
    frame = load_records(root)
    assert len(frame) == 3 and set(frame["schema_version"]) == {3}
    assert sorted(frame["seed"]) == [13, 13, 42]
    assert "metrics.test_accuracy" in frame.columns


def test_unreadable_record_names_the_file(tmp_path):
    path = tmp_path / "sst2" / "p-v1" / "smoke" / "broken.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    with pytest.raises(HarnessError, match="broken.json: not a readable run record"):
        read_records(tmp_path)


def test_best_dev_per_seed_selects_like_the_reference_gather_result(make_record):
    records = [
        make_record(seed=13, lr=1e-3, dev=0.6, test=0.70),
        make_record(seed=13, lr=1e-4, dev=0.8, test=0.60),   # best dev for seed 13
        make_record(seed=42, lr=1e-4, dev=0.7, test=0.10),
        make_record(seed=42, lr=1e-3, dev=0.7, test=0.90),   # tie: folder "bs64-lr1e-3-..." sorts before "...lr1e-4"
        make_record(seed=42, lr=1e-2, dev=0.1, test=0.20),
        make_record(seed=42, lr=1e-2, dev=0.9, test=0.20, created="2025-12-01T00:00:00+00:00"),  # older run of a point
        make_record(seed=21, dev=0.9, test=0.9, status="failed"),
    ]
    assert [(r["seed"], r["hyperparameters"]["lr"]) for r in best_dev_per_seed(records)] == [(13, 1e-4), (42, 1e-3)]


@pytest.mark.parametrize("grid, winner", [
    # gather_result.py: max(sorted(runs, key=output_dir), key=dev) keeps the first of equal devs in string order
    ([dict(lr=1e-7), dict(lr=1e-6), dict(lr=1e-5)], dict(lr=1e-5)),          # "lr1e-5" < "lr1e-6" < "lr1e-7"
    ([dict(batch_size=8), dict(batch_size=16), dict(batch_size=32)], dict(batch_size=16)),   # "bs16" < "bs32" < "bs8"
    ([dict(eps=1e-5), dict(eps=1e-3)], dict(eps=1e-3)),
    ([dict(weight_decay=0.1), dict(weight_decay=0.0)], dict(weight_decay=0.0)),   # "wd0" < "wd0.1"
    ([dict(lr=5e-5), dict(lr=1e-4)], dict(lr=1e-4)),                          # "lr1e-4" < "lr5e-5"
])
def test_grid_ties_go_to_the_reference_folder_that_sorts_first(make_record, grid, winner):
    records = [make_record(seed=13, dev=0.75, **point) for point in grid]
    [best] = best_dev_per_seed(records)
    assert {key: best["hyperparameters"][key] for key in winner} == winner


def test_reference_folder_names_spell_numbers_as_the_run_scripts(make_record):
    assert reference_folder_name(make_record(lr=1e-4, batch_size=64, eps=1e-3, weight_decay=0.0)) == (
        "bs64-lr1e-4-eps1e-3-wd0")
    assert reference_folder_name(make_record(variant="hf-ft", lr=3e-5, batch_size=8)) == "bs8-lr3e-5"


def test_diverged_runs_take_part_with_the_dev_they_reached(make_record):
    diverged = dict(make_record(seed=13, lr=1e-3, dev=0.9, test=0.5), status="diverged", diverged_at=3)
    never_evaluated = make_record(seed=42, lr=1e-3)
    never_evaluated.update(status="diverged", diverged_at=1)
    never_evaluated["metrics"].update(best_dev_accuracy=None, test_accuracy=None)
    records = [diverged, make_record(seed=13, lr=1e-4, dev=0.8), never_evaluated]
    assert [(r["seed"], r["status"]) for r in best_dev_per_seed(records)] == [(13, "diverged")]



def test_the_report_counts_diverged_runs_and_names_groups_with_no_evaluated_run(make_record, tmp_path):
    diverged = dict(make_record(seed=13, lr=1e-3, dev=0.9, test=0.5), status="diverged", diverged_at=3)
    never_evaluated = make_record(variant="hf-mlm-acc", seed=42, lr=1e-3)
    never_evaluated.update(status="diverged", diverged_at=1)
    never_evaluated["metrics"].update(best_dev_accuracy=None, test_accuracy=None)
    records = [diverged, make_record(seed=13, lr=1e-4, dev=0.8), never_evaluated]
    table = summarize(records, load_paper(PAPER)).set_index("variant")
    assert table.loc["hf-mlm", "diverged"] == 1 and table.loc["hf-mlm", "runs"] == 2
    assert "hf-mlm-acc" not in table.index
    [group] = unevaluated_groups(records)
    assert "variant=hf-mlm-acc" in group and group.endswith("1 run(s) diverged")
    write_report(records, load_paper(PAPER), tmp_path)
    assert f"No evaluated run (not in the table): {group}" in (tmp_path / "summary.md").read_text()


def test_summary_reports_mean_and_population_std_over_seeds(make_record):
    records = [make_record(seed=13, test=0.80), make_record(seed=42, test=0.90),
               make_record(variant="hf-mlm-acc", seed=13, test=0.5, zero_fraction=0.98)]
    table = summarize(records, load_paper(PAPER)).set_index("variant")
    assert table.loc["hf-mlm", "test_acc_mean"] == pytest.approx(85.0)
    assert table.loc["hf-mlm", "test_acc_std"] == pytest.approx(5.0)      # ddof=0
    assert table.loc["hf-mlm", "seeds"] == 2
    assert table.loc["hf-mlm", "paper_test_acc"] == 90.5 and table.loc["hf-mlm", "paper_zero_shot_acc"] == 79.0
    assert table.loc["hf-mlm-acc", "zero_grad_pct"] == pytest.approx(98.0)
    assert table.loc["hf-mlm", "mem_peak_mezo_over_inference"] == pytest.approx(1.01)


def test_report_writes_tables_and_figures(make_record, tmp_path):
    records = [make_record(seed=s, test=t) for s, t in ((13, 0.6), (42, 0.7))] + [make_record(variant="hf-ft", seed=13)]
    written = write_report(records, load_paper(PAPER), tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names == sorted(["summary.csv", "summary.md", "sparsity.md", "throughput.md", "memory.md", "memory.csv",
                            "grid_search.md", "progress.md",
                            "table18.md", "table18.csv", "table18_accuracy.png", "accuracy_vs_forward_passes.png",
                            "memory_per_method.png", "accuracy_vs_step.png", "accuracy_vs_paper.png",
                            "sparsity.png", "memory.png", "throughput.png"])
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")
    assert "| hf-ft | 16 | hhhhhhhh |" in (tmp_path / "report" / "summary.md").read_text()
    assert "| hf-ft |" in (tmp_path / "report" / "memory.md").read_text()
    assert "hf-ft" not in (tmp_path / "report" / "sparsity.md").read_text()   # first-order: no projected gradient


def test_progress_lists_every_grid_point_with_or_without_a_record(make_record, sst2_protocol):
    from harness.protocol.loading import load_protocol
    from harness.results.progress import progress_rows, to_markdown

    protocol = load_protocol(sst2_protocol)
    smoke = protocol.run_settings("smoke", "hf-mlm")
    record = make_record(variant="hf-mlm", seed=13, lr=1e-3, protocol_hash=protocol.settings_hash("smoke", "hf-mlm"))
    rows = {(r["profile"], r["variant"]): r for r in progress_rows([protocol], [record])}
    assert rows[("smoke", "hf-mlm")]["points"] == len(list(smoke.grid())) == 2
    assert (rows[("smoke", "hf-mlm")]["completed"], rows[("smoke", "hf-mlm")]["not_run"]) == (1, 1)
    standin = rows[("standin", "hf-mlm")]   # listed before any record of it
    assert standin["points"] == 6 and standin["not_run"] == 6 and standin["k"] == [16, 512]
    assert ("paper", "hf-mlm") not in rows and ("standin-main", "hf-mlm") not in rows
    text = to_markdown(list(rows.values()))
    assert "| sst2 | sst2-mezo v3 | standin | hf-mlm | 16, 512 | 6 | 0 | 0 | 0 | **6** |" in text
