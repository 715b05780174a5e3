"""The report's readable tables (summary.md, sparsity.md, throughput.md, memory.md, memory.csv) and
summary.csv's columns, pinned on synthetic records of two settings, two tasks and runs whose
memory was not (fully) measured."""

import csv
from pathlib import Path

import pytest

from harness.results.paper import load_paper
from harness.results.report import memory_summary, summarize, write_report
from harness.results.tables import write_tables

PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "paper.toml"
MIB = 2**20
PEAKS = (90 + 2 * MIB, 90 + 3 * MIB, 90 + 10 * MIB)   # excess over the 90-byte baseline: 2, 3 and 10 MiB
# summary.csv's columns before the readable tables (machines read them: none may go), then the ones added with them
CSV_COLUMNS = [
    "task", "protocol", "version", "profile", "hardware", "model", "variant", "k", "hash", "data", "seeds", "runs",
    "diverged", "test_acc_mean", "test_acc_std", "zero_shot_acc_mean", "zero_grad_pct", "tiny_grad_pct",
    "mean_abs_grad", "mem_inference_excess_mib", "mem_mezo_excess_mib", "mem_first_order_excess_mib",
    "mem_peak_mezo_over_inference", "mem_peak_first_order_over_mezo", "steps_per_s", "tokens_per_s", "padding_pct",
    "backend", "method", "paper_test_acc", "paper_test_std", "paper_zero_shot_acc",
    "mem_mezo_adam_excess_mib", "optimizer", "steps", "sparsity_seeds", "tiny_threshold", "memory_seeds", "throughput_seeds", "grid_seeds",
    "grid_points", "missing_points"]
SST2 = "### SST-2 · protocol sst2-mezo v3 · data test:bbbbbbbb,train:aaaaaaaa"
SST5 = "### SST-5 · protocol sst5-mezo v1 · data test:bbbbbbbb,train:aaaaaaaa"
PAPER_SECTION = "## 1. profile paper · model roberta-large · hardware cuda"
PAPER_SETTING = "The paper's setting (profile paper, the paper's pretrained model): comparable with the paper."
SMOKE_SECTION = "## 2. profile smoke · model random-init:tiny · hardware cpu"
SMOKE_CAVEAT = "**† random-init weights (random-init:tiny): a pipeline check, not comparable with the paper's numbers.**"


@pytest.fixture(scope="module")
def report(make_record, tmp_path_factory) -> Path:
    """The report of: the paper's setting (hf-mlm, one seed without a sparsity summary); random-init
    SST-2 runs of hf-mlm, hf-ft (one seed) and hf-mlm-acc (one seed run with --no-memory, the other
    without a first-order phase, as on SGLang); random-init SST-5 hf-mlm."""
    paper = dict(model="roberta-large", profile="paper", hardware="cuda", protocol_hash="p" * 64)
    runs = [make_record(seed=13, test=0.90, zero_fraction=0.005, steps_per_second=2.0, **paper),
            make_record(seed=42, test=0.92, zero_fraction=0.0, steps_per_second=3.0, **paper)]
    runs[1]["sparsity"] = None     # no finite projected gradient: no sparsity summary
    runs += [make_record(seed=seed, test=test, zero_fraction=zero, steps_per_second=speed, memory_peak=PEAKS,
                         protocol_hash="a" * 64)
             for seed, test, zero, speed in ((13, 0.6, 0.1, 50.0), (42, 0.7, 0.2, 40.0))]
    runs.append(make_record(variant="hf-ft", seed=13, test=0.55, memory_peak=PEAKS, protocol_hash="b" * 64))
    no_memory, no_first_order = (make_record(variant="hf-mlm-acc", seed=seed, zero_fraction=0.99, memory_peak=PEAKS,
                                             protocol_hash="c" * 64) for seed in (13, 42))
    no_memory["memory"] = {"error": "not measured (--no-memory)"}
    del no_first_order["memory"]["phases"]["first_order_step"]
    no_first_order["memory"]["ratios"]["first_order_over_mezo"] = None
    runs += [no_memory, no_first_order]
    runs += [make_record(task="sst5", seed=seed, test=0.3, version=1, protocol_hash="d" * 64) for seed in (13, 42)]
    out = tmp_path_factory.mktemp("tables") / "report"
    write_report(runs, load_paper(PAPER), out)
    return out


def body(path: Path) -> list[str]:
    """The file's lines from its first section on (after the introduction)."""
    lines = path.read_text().splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("## ")):]


def test_sparsity_table_is_zeroth_order_only_grouped_by_setting_task_protocol_and_data(report):
    header = "| method | variant | k | n | zero grad % | tiny grad % | tiny threshold | protocol hash |"
    rule = "|---|---|---|---|---|---|---|---|"
    assert body(report / "sparsity.md") == [
        PAPER_SECTION, "", PAPER_SETTING, "", SST2, "", header, rule,
        "| MeZO | hf-mlm | 16 | 1 of 2 | 0.50 | 0.50 | 1e-06 | pppppppp |",    # only seed 13 has a sparsity summary
        "", SMOKE_SECTION, "", SMOKE_CAVEAT, "", SST2, "", header, rule,
        "| MeZO | hf-mlm | 16 | 2 | 15.00 | 15.00 | 1e-06 | aaaaaaaa |",
        "| MeZO (accuracy objective) | hf-mlm-acc | 16 | 2 | 99.00 | 99.00 | 1e-06 | cccccccc |",   # not hf-ft
        "", SST5, "", header, rule,
        "| MeZO | hf-mlm | 16 | 2 | 0.00 | 0.00 | 1e-06 | dddddddd |"]        # measured 0 stays 0
    text = (report / "sparsity.md").read_text()
    assert text.startswith("# Gradient sparsity of MeZO's projected gradients\n")
    assert "–: not measured." in text and "hf-ft" not in text


def test_memory_table_per_batch_with_the_papers_row_and_what_was_not_measured_as_a_dash(report):
    header = ("| method | variant | batch | n | inference MiB | MeZO step MiB | MeZO-Adam step MiB | first-order step MiB "
              "| protocol hash |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    lines = body(report / "memory.md")
    assert lines[:10] == [PAPER_SECTION, "", PAPER_SETTING, "", SST2, "", header, rule,
                          "| MeZO | hf-mlm | 32 | 2 | 0.0 | **0.0** | – | 0.0 | pppppppp |",
                          "| paper (Table 12; MB) | – | 16 | – | 327.5 | 327.5 | – | 24,156.0 | – |"]
    smoke = lines[lines.index(SMOKE_SECTION):]
    # the batch is the run's first training batch: batch size 64 of 2 x 16 examples; bold: the variant's own phase
    assert smoke[:11] == [
        SMOKE_SECTION, "", SMOKE_CAVEAT, "", SST2, "", header, rule,
        "| MeZO | hf-mlm | 32 | 2 | 2.0 | **3.0** | – | 10.0 | aaaaaaaa |",
        "| FT | hf-ft | 32 | 1 | 2.0 | 3.0 | – | **10.0** | bbbbbbbb |",
        # seed 13 ran with --no-memory (not a run of this row), seed 42 had no first-order phase: never 0
        "| MeZO (accuracy objective) | hf-mlm-acc | 32 | 1 | 2.0 | **3.0** | – | – | cccccccc |"]
    assert smoke[12] == SST5
    assert "paper (Table 12" not in "\n".join(smoke)     # only in the paper's setting
    assert (report / "memory.md").read_text().startswith("# Memory per phase\n")


def test_memory_csv_has_the_rows_in_full(report):
    with open(report / "memory.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    acc = next(line for line in lines if line["variant"] == "hf-mlm-acc")
    assert (acc["batch"], acc["runs"], acc["phase"], acc["mezo_step_mib"], acc["first_order_step_mib"]) == (
        "32", "1", "mezo_step", "3.0", "")
    assert float(acc["peak_mib"]) == pytest.approx(3 + 90 / MIB)
    assert acc["hash"] == "c" * 64 and acc["data"] == f"test:{'b' * 64},train:{'a' * 64}"


def test_the_papers_memory_numbers_are_shown_where_nothing_of_its_setting_ran(make_record, tmp_path):
    paper = load_paper(PAPER)
    records = [make_record(seed=13)]
    write_tables(summarize(records, paper), memory_summary(records), paper, tmp_path, [])
    lines = body(tmp_path / "memory.md")
    assert lines[:8] == ["## 1. profile paper · model roberta-large · hardware any", "", PAPER_SETTING, "",
                         "### SST-2 · not measured in this setting", "",
                         "| method | variant | batch | n | inference MiB | MeZO step MiB | MeZO-Adam step MiB "
                         "| first-order step MiB | protocol hash |", "|---|---|---|---|---|---|---|---|---|"]
    assert lines[8:11] == ["| paper (Table 12; MB) | – | 16 | – | 327.5 | 327.5 | – | 24,156.0 | – |", "",
                           "## 2. profile smoke · model random-init:tiny · hardware cpu"]


def test_throughput_table(report):
    lines = body(report / "throughput.md")
    header = "| method | variant | k | n | backend | steps/s | tokens/s | padding % | protocol hash |"
    assert [line for line in lines if line.startswith("| ")] == [
        header, "| MeZO | hf-mlm | 16 | 2 | hf | 2.50 | 1,000 | 50.0 | pppppppp |",
        header, "| MeZO | hf-mlm | 16 | 2 | hf | 45.00 | 1,000 | 50.0 | aaaaaaaa |",
        "| FT | hf-ft | 16 | 1 | hf | 50.00 | 1,000 | 50.0 | bbbbbbbb |",
        "| MeZO (accuracy objective) | hf-mlm-acc | 16 | 2 | hf | 50.00 | 1,000 | 50.0 | cccccccc |",
        header, "| MeZO | hf-mlm | 16 | 2 | hf | 50.00 | 1,000 | 50.0 | dddddddd |"]
    assert [line for line in lines if line.startswith("#")] == [PAPER_SECTION, SST2, SMOKE_SECTION, SST2, SST5]


def test_summary_md_has_identity_and_accuracy_only(report):
    text = (report / "summary.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    data = "test:bbbbbbbb,train:aaaaaaaa"
    assert rows == [
        "| task | protocol | profile | hardware | model | variant | k | hash | data | n | test acc % | zero-shot % "
        "| paper test % | paper zero-shot % |",
        f"| sst2 | sst2-mezo v3 | paper | cuda | roberta-large | hf-mlm | 16 | pppppppp | {data} | 2 | 91.0 (1.0) "
        "| 50.0 | 90.5 (1.2) | 79.0 |",
        f"| sst2 | sst2-mezo v3 | smoke | cpu | random-init:tiny † | hf-ft | 16 | bbbbbbbb | {data} | 1 | 55.0 (0.0) "
        "| 50.0 | 91.9 (1.8) | – |",
        f"| sst2 | sst2-mezo v3 | smoke | cpu | random-init:tiny † | hf-mlm | 16 | aaaaaaaa | {data} | 2 | 65.0 (5.0) "
        "| 50.0 | 90.5 (1.2) | 79.0 |",
        f"| sst2 | sst2-mezo v3 | smoke | cpu | random-init:tiny † | hf-mlm-acc | 16 | cccccccc | {data} | 2 "
        "| 50.0 (0.0) | 50.0 | – | – |",
        f"| sst5 | sst5-mezo v1 | smoke | cpu | random-init:tiny † | hf-mlm | 16 | dddddddd | {data} | 2 | 30.0 (0.0) "
        "| 50.0 | 45.5 (2.0) | 35.5 |"]
    for name in ("table18.md", "sparsity.md", "memory.md", "throughput.md", "summary.csv"):
        assert name in text


def test_summary_csv_keeps_every_column_in_full(report):
    with open(report / "summary.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == CSV_COLUMNS
    acc = next(line for line in lines if line["variant"] == "hf-mlm-acc")
    assert (acc["hash"], acc["data"]) == ("c" * 64, f"test:{'b' * 64},train:{'a' * 64}")
    assert (acc["memory_seeds"], acc["mem_first_order_excess_mib"], acc["mem_mezo_excess_mib"]) == ("1", "", "3.0")
    assert (acc["optimizer"], acc["sparsity_seeds"], acc["tiny_threshold"], acc["zero_grad_pct"]) == (
        "mezo", "2", "1e-06", "99.0")
    # make_record's grid: seeds 13 and 42 at the run's point; each seed ran: complete
    assert (acc["steps"], acc["grid_seeds"], acc["grid_points"], acc["missing_points"]) == ("400", "2", "2", "0")
    ft = next(line for line in lines if line["variant"] == "hf-ft")
    assert (ft["optimizer"], ft["sparsity_seeds"], ft["zero_grad_pct"], ft["throughput_seeds"]) == ("adamw", "0", "", "1")
    assert (ft["grid_points"], ft["missing_points"]) == ("2", "1")    # seed 42 never ran
    assert float(ft["mem_peak_first_order_over_mezo"]) == pytest.approx((90 + 10 * MIB) / (90 + 3 * MIB))


def test_no_zeroth_order_run_says_so(make_record, tmp_path):
    records, paper = [make_record(variant="hf-ft", seed=13)], load_paper(PAPER)
    write_tables(summarize(records, paper), memory_summary(records), paper, tmp_path, [])
    assert (tmp_path / "sparsity.md").read_text().endswith("\nNo zeroth-order run in the records.\n")
    assert "| FT | hf-ft | 16 | 1 | hf | 50.00 | 1,000 | 50.0 | hhhhhhhh |" in (tmp_path / "throughput.md").read_text()


def test_variants_that_train_nothing_have_no_throughput_row(make_record, tmp_path):
    zero_shot = make_record(variant="hf-zero-shot", seed=13, protocol_hash="z" * 64)
    zero_shot["variant"].update(parameters="none", optimizer="none")
    zero_shot.update(throughput=None, sparsity=None, loss_curve={"stride": 1, "steps": []})   # as such a run writes
    records, paper = [make_record(seed=13), zero_shot], load_paper(PAPER)
    write_tables(summarize(records, paper), memory_summary(records), paper, tmp_path, [])
    rows = [line for line in (tmp_path / "throughput.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[1] for row in rows] == ["variant", "hf-mlm"]
    assert "| zero-shot | hf-zero-shot | 32 | 1 | **0.0** |" in (tmp_path / "memory.md").read_text()
