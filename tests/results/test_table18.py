"""The report's Table 18 across tasks (table18.md, table18.csv, table18_accuracy.png), pinned on
synthetic records of two tasks."""

import csv
from pathlib import Path

import pytest

from harness.results.paper import load_paper
from harness.results.report import summarize, write_report
from harness.results.table18 import build, to_markdown

PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "paper.toml"
GRID = {"seeds": [13, 42], "lr": [1e-5, 1e-6], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
HEADER = ("| method | k | variant | SST-2 | SST-2 paper | SST-5 | SST-5 paper | SNLI | SNLI paper | MNLI | MNLI paper "
          "| RTE | RTE paper | TREC | TREC paper |")


def paper_run(make_record, task, seed, best, other=0.10, **kw):
    """Two grid points of one seed on the paper's setting: lr 1e-5 has the best dev (test `best`),
    lr 1e-6 a worse dev and test `other` (never selected)."""
    base = dict(task=task, seed=seed, model="roberta-large", profile="paper", hardware="cuda", grid=GRID,
                version=3 if task == "sst2" else 1, protocol_hash=f"{task}-{kw.get('variant', 'hf-mlm')}".ljust(64, "0"))
    return [make_record(**base, lr=1e-5, dev=0.8, test=best, **kw),
            make_record(**base, lr=1e-6, dev=0.7, test=other, **kw)]


@pytest.fixture
def records(make_record):
    runs = []
    for seed, sst2, sst5, sst5_ft in ((13, 0.90, 0.45, 0.41), (42, 0.92, 0.47, 0.44)):
        runs += paper_run(make_record, "sst2", seed, sst2, zero_shot=0.79)
        runs += paper_run(make_record, "sst5", seed, sst5, zero_shot=0.36)
        runs += paper_run(make_record, "sst5", seed, sst5_ft, variant="hf-ft", k=512)
    # SST-2 hf-mlm k=16 on other source data: its own entry, never averaged with the first
    for seed in (13, 42):
        for run in paper_run(make_record, "sst2", seed, 0.50, zero_shot=0.79):
            run["data"]["source_sha256"]["train"] = "f" * 64
            runs.append(run)
    # random-init pipeline checks
    runs += [make_record(task="sst5", seed=seed, test=0.3, protocol_hash="s" * 64) for seed in (13, 42)]
    return runs


def table_lines(markdown: str, section: int) -> list[str]:
    part = markdown.split("\n## ")[section]
    return [line for line in part.splitlines() if line.startswith("| ")]


def test_table18_markdown_pins_cells_of_two_tasks(records):
    markdown = to_markdown(build(summarize(records, load_paper(PAPER)), load_paper(PAPER)))
    assert markdown.count("\n## ") == 2
    paper_part, smoke_part = markdown.split("\n## ")[1:]
    assert paper_part.startswith("1. profile paper · model roberta-large · hardware cuda\n\nThe paper's setting")
    assert smoke_part.startswith("2. profile smoke · model random-init:tiny · hardware cpu\n\n**† random-init weights "
                                 "(random-init:tiny): a pipeline check, not comparable with the paper's numbers.**")
    lines = table_lines(markdown, 1)
    assert lines[0] == HEADER
    rows = {line.split(" | ")[0] + " | " + line.split(" | ")[1] + " | " + line.split(" | ")[2]: line for line in lines}
    nm = "not measured"
    # best-dev grid point per seed (lr 1e-5), mean (population std) over 2 seeds; footnotes [1] SST-2 data a..., [2]
    # SST-2 data f..., [3] SST-5
    assert rows["| MeZO | 16 | hf-mlm"] == (
        f"| MeZO | 16 | hf-mlm | 91.0 (1.0) n=2 [1] | 90.5 (1.2) | 46.0 (1.0) n=2 [3] | 45.5 (2.0) | {nm} | 68.5 (3.9) "
        f"| {nm} | 58.7 (2.5) | {nm} | 64.0 (3.3) | {nm} | 76.9 (2.7) |")
    assert rows["| MeZO (measurement 2) | 16 | hf-mlm"] == (
        "| MeZO (measurement 2) | 16 | hf-mlm | 50.0 (0.0) n=2 [2] |  |  |  |  |  |  |  |  |  |  |  |")
    assert rows["| zero-shot | - | hf-mlm"] == (
        f"| zero-shot | - | hf-mlm | 79.0 n=2 [1] | 79.0 | 36.0 n=2 [3] | 35.5 | {nm} | 50.2 | {nm} | 48.8 | {nm} | 51.4 "
        f"| {nm} | 32.0 |")
    assert rows["| zero-shot (measurement 2) | - | hf-mlm"].startswith("| zero-shot (measurement 2) | - | hf-mlm | 79.0 n=2 [2] |")
    assert rows["| FT | 512 | hf-ft"] == (
        f"| FT | 512 | hf-ft | {nm} | 93.9 (0.7) | 42.5 (1.5) n=2 [3] | 55.9 (0.9) | {nm} | 88.7 (0.8) | {nm} | 84.4 (0.8) "
        f"| {nm} | 82.7 (1.4) | {nm} | 97.3 (0.2) |")
    assert rows["| LP | 16 | no variant"] == (
        "| LP | 16 | no variant | no variant | 76.0 (2.8) | no variant | 40.3 (1.9) | no variant | 66.0 (2.7) "
        "| no variant | 56.5 (2.5) | no variant | 59.4 (5.3) | no variant | 51.3 (5.5) |")
    assert rows["| MeZO (LoRA) | 512 | hf-mlm-lora-ref-merged"] == (
        f"| MeZO (LoRA) | 512 | hf-mlm-lora-ref-merged | {nm} | 93.4 (0.4) | {nm} | 52.4 (0.8) | {nm} | 84.0 (0.8) "
        f"| {nm} | 77.9 (0.6) | {nm} | 77.6 (1.3) | {nm} | 95.0 (0.7) |")
    assert rows["| MeZO (accuracy objective) (Table 3) | 512 | hf-mlm-acc"] == (
        f"| MeZO (accuracy objective) (Table 3) | 512 | hf-mlm-acc | {nm} | 92.7 | {nm} | 48.9 | {nm} | 82.7 | {nm} | — "
        f"| {nm} | — | {nm} | 68.6 |")
    # the paper's row order: zero-shot, the six methods at k=16, at k=512, then Table 3
    order = [line.split(" | ")[0][2:] + "@" + line.split(" | ")[1] for line in lines[1:] if "measurement" not in line]
    assert order == ["zero-shot@-", "LP@16", "MeZO@16", "MeZO (LoRA)@16", "MeZO (LoRA)@16", "MeZO (prefix)@16", "FT@16",
                     "FT (LoRA)@16", "LP@512", "MeZO@512", "MeZO (LoRA)@512", "MeZO (LoRA)@512", "MeZO (prefix)@512",
                     "FT@512", "FT (LoRA)@512", "MeZO (accuracy objective) (Table 3)@512"]
    assert ("- [1] SST-2: protocol sst2-mezo v3, data test:bbbbbbbb,train:aaaaaaaa; protocol hash per variant: "
            "hf-mlm sst2-hf-; profile paper · model roberta-large · hardware cuda.") in paper_part
    assert "- [2] SST-2: protocol sst2-mezo v3, data test:bbbbbbbb,train:ffffffff;" in paper_part
    assert ("- [3] SST-5: protocol sst5-mezo v1, data test:bbbbbbbb,train:aaaaaaaa; protocol hash per variant: "
            "hf-ft sst5-hf-, hf-mlm sst5-hf-;") in paper_part
    # random-init runs: in their own section, every measured value marked
    smoke = {line.split(" | ")[0] + "@" + line.split(" | ")[1]: line for line in table_lines(markdown, 2)}
    assert smoke["| MeZO@16"].startswith(f"| MeZO | 16 | hf-mlm | {nm} | 90.5 (1.2) | 30.0 (0.0) n=2 [1] † | 45.5 (2.0) |")
    assert "30.0" not in paper_part


def test_the_papers_setting_is_shown_even_when_nothing_of_it_ran(make_record):
    records = [make_record(seed=seed) for seed in (13, 42)]
    markdown = to_markdown(build(summarize(records, load_paper(PAPER)), load_paper(PAPER)))
    first = markdown.split("\n## ")[1]
    assert first.startswith("1. profile paper · model roberta-large · hardware any\n")
    assert "| MeZO | 16 | hf-mlm | not measured | 90.5 (1.2) | not measured | 45.5 (2.0) |" in first
    assert "[1]" not in first
    assert "| MeZO | 16 | hf-mlm | 50.0 (0.0) n=2 [1] † | 90.5 (1.2) |" in markdown.split("\n## ")[2]


def test_report_writes_table18_csv_and_figure(records, tmp_path):
    written = write_report(records, load_paper(PAPER), tmp_path)
    assert [p.name for p in written[2:5]] == ["table18.md", "table18.csv", "table18_accuracy.png"]
    assert (tmp_path / "table18_accuracy.png").stat().st_size > 10_000
    with open(tmp_path / "table18.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    # one line per cell entry: 2 sections x 16 rows x 6 tasks, plus the second SST-2 data's two entries
    assert len(lines) == 2 * 16 * 6 + 2
    mezo = [line for line in lines if (line["section"], line["method"], line["k"], line["variant"]) == (
        "1", "MeZO", "16", "hf-mlm")]
    assert [(m["task"], m["status"], m["seeds"], m["footnote"]) for m in mezo] == [
        ("sst2", "measured", "2", "1"), ("sst2", "measured", "2", "2"), ("sst5", "measured", "2", "3"),
        ("snli", "not measured", "", ""), ("mnli", "not measured", "", ""), ("rte", "not measured", "", ""),
        ("trec", "not measured", "", "")]
    assert [float(m["measured_mean"]) for m in mezo[:3]] == pytest.approx([91.0, 50.0, 46.0])
    assert [float(m["measured_std"]) for m in mezo[:3]] == pytest.approx([1.0, 0.0, 1.0])
    assert [m["data"].split(",")[1][:7] for m in mezo[:2]] == ["train:a", "train:f"]   # two data: two entries
    sst5 = mezo[2]
    assert (sst5["paper_id"], sst5["paper_mean"], sst5["paper_std"]) == ("sst5/mezo-k16", "45.5", "2.0")
    assert (sst5["protocol"], sst5["version"], sst5["hash"], sst5["comparable"]) == (
        "sst5-mezo", "1", "sst5-hf-mlm".ljust(64, "0"), "True")
    assert sst5["data"] == f"test:{'b' * 64},train:{'a' * 64}"
    assert {line["status"] for line in lines if line["method"] == "MeZO (prefix)"} == {"no variant"}
    smoke = [line for line in lines if line["section"] == "2" and line["status"] == "measured"]
    assert [(line["task"], line["method"], line["comparable"], line["model"]) for line in smoke] == [
        ("sst5", "zero-shot", "False", "random-init:tiny"), ("sst5", "MeZO", "False", "random-init:tiny")]
    assert smoke[0]["caveat"].startswith("random-init weights (random-init:tiny): a pipeline check, not comparable")
    zero_shot = [line for line in lines if line["method"] == "zero-shot" and line["section"] == "1"]
    assert [(z["task"], float(z["measured_mean"]), z["measured_k"]) for z in zero_shot[:3]] == [
        ("sst2", pytest.approx(79.0), "16"), ("sst2", pytest.approx(79.0), "16"), ("sst5", pytest.approx(36.0), "16")]
