"""The report's Table 18 across tasks (table18.md, table18.csv, table18_accuracy.png), pinned on
synthetic records of two tasks."""

import csv
from pathlib import Path

import pytest

from harness.results.paper import load_paper
from harness.results.report import summarize, write_report
from harness.results.table18 import TABLE_ROWS, build, panel_slots, shown_k, to_markdown, unmet_conditions

PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "paper.toml"
GRID = {"seeds": [13, 42], "lr": [1e-5, 1e-6], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
HEADER = "| method | variant | SST-2 | SST-5 | SNLI | MNLI | RTE | TREC |"
NR = "– / "   # a cell not run here, before the paper's number


def paper_run(make_record, task, seed, best, other=0.10, lrs=(1e-5, 1e-6), **kw):
    """The grid points of one seed on the paper's setting: lr 1e-5 has the best dev (test `best`),
    lr 1e-6 a worse dev and test `other` (never selected)."""
    base = dict(task=task, seed=seed, model="roberta-large", profile="paper", hardware="cuda", grid=GRID,
                version=3 if task == "sst2" else 1, protocol_hash=f"{task}-{kw.get('variant', 'hf-mlm')}".ljust(64, "0"))
    return [make_record(**base, lr=lr, dev=0.8 if lr == 1e-5 else 0.7, test=best if lr == 1e-5 else other, **kw)
            for lr in lrs]


@pytest.fixture
def records(make_record):
    runs = []
    for seed, sst2, sst5, sst5_ft in ((13, 0.90, 0.45, 0.41), (42, 0.92, 0.47, 0.44)):
        runs += paper_run(make_record, "sst2", seed, sst2, zero_shot=0.79)
        runs += paper_run(make_record, "sst5", seed, sst5, zero_shot=0.36)
        runs += paper_run(make_record, "sst5", seed, sst5_ft, variant="hf-ft", k=512)
        zero_shot = paper_run(make_record, "sst2", seed, 0.79, lrs=(1e-5,), variant="hf-zero-shot", zero_shot=0.79)
        zero_shot[0]["protocol"]["grid"] = dict(GRID, lr=[1e-5])
        runs += zero_shot
    # SST-2 hf-mlm k=16 on other source data: its own entry, never averaged with the first
    for seed in (13, 42):
        for run in paper_run(make_record, "sst2", seed, 0.50, zero_shot=0.79):
            run["data"]["source_sha256"]["train"] = "f" * 64
            runs.append(run)
    # conditions not met: an incomplete grid (1 of 4 points: seed 13 at lr 1e-5); a renamed protocol
    runs += paper_run(make_record, "sst2", 13, 0.91, lrs=(1e-5,), variant="hf-ft")
    runs += [run for seed in (13, 42) for run in paper_run(make_record, "sst5", seed, 0.43, variant="hf-mlm-lora-ref",
                                                             protocol_name="sst5-mine")]
    # random-init pipeline checks
    runs += [make_record(task="sst5", seed=seed, test=0.3, protocol_hash="s" * 64) for seed in (13, 42)]
    return runs


def tables(markdown: str, section: int) -> dict[int, dict[str, str]]:
    """A section's tables by k: each line by 'method | variant' (sub-rows by their own label)."""
    part = markdown.split("\n## ")[section]
    out = {}
    for block in part.split("\n### k = ")[1:]:
        k, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if line.startswith("| ")]
        assert lines[0] == HEADER
        out[int(k)] = {" | ".join(line.split(" | ")[:2])[2:]: line for line in lines[1:]}   # after the header
    return out


def test_table18_markdown_pins_cells_of_two_tasks(records):
    paper = load_paper(PAPER)
    markdown = to_markdown(build(summarize(records, paper), paper))
    assert markdown.count("\n## ") == 2
    assert ("–: not run here (ours), or no published number recorded in benchmarks/paper.toml (the paper's: "
            "MeZO-Adam, FT (prefix), LP-then-MeZO, and Table 3 where the paper has no number)") in markdown
    paper_part, smoke_part = markdown.split("\n## ")[1:]
    assert paper_part.startswith("1. profile paper · model roberta-large · hardware cuda\n\nThe paper's setting")
    assert smoke_part.startswith("2. profile smoke · model random-init:tiny · hardware cpu\n\n**† random-init weights "
                                 "(random-init:tiny): a pipeline check, not comparable with the paper's numbers.**")
    k16, k512 = tables(markdown, 1)[16], tables(markdown, 1)[512]
    # rows: the paper's methods in order, a row per variant, sub-rows where a cell has two entries
    assert [row for row in k16 if row != "MeZO (measurement 2) | hf-mlm"] == list(k512) == [
        "zero-shot | hf-zero-shot", "zero-shot | hf-mlm", "zero-shot (measurement 2) | hf-mlm", "LP | hf-lp",
        "MeZO | hf-mlm", "MeZO (LoRA) | hf-mlm-lora-ref", "MeZO (LoRA) | hf-mlm-lora-ref-merged",
        "MeZO (prefix) | hf-mlm-prefix", "MeZO-Adam | hf-mlm-adam", "FT | hf-ft", "FT (LoRA) | hf-ft-lora",
        "FT (prefix) | hf-ft-prefix", "LP-then-MeZO, Table 19 | hf-lp-mezo",
        "MeZO (accuracy objective), Table 3 | hf-mlm-acc"]
    # best-dev grid point per seed (lr 1e-5), mean (population std) over 2 seeds / the paper's; footnotes [1] SST-2
    # data a..., [2] SST-2 data f..., [3] SST-5
    assert k16["MeZO | hf-mlm"] == (f"| MeZO | hf-mlm | 91.0 (1.0) [1] / 90.5 (1.2) | 46.0 (1.0) [3] / 45.5 (2.0) "
                                    f"| {NR}68.5 (3.9) | {NR}58.7 (2.5) | {NR}64.0 (3.3) | {NR}76.9 (2.7) |")
    assert k16["MeZO (measurement 2) | hf-mlm"] == "| MeZO (measurement 2) | hf-mlm | 50.0 (0.0) [2] |  |  |  |  |  |"
    # zero-shot: before training, no std; hf-zero-shot and hf-mlm's runs, the same under both k
    assert k16["zero-shot | hf-zero-shot"] == k512["zero-shot | hf-zero-shot"] == (
        f"| zero-shot | hf-zero-shot | 79.0 [1] / 79.0 | {NR}35.5 | {NR}50.2 | {NR}48.8 | {NR}51.4 | {NR}32.0 |")
    assert k16["zero-shot | hf-mlm"] == (
        f"| zero-shot | hf-mlm | 79.0 [1] / 79.0 | 36.0 [3] / 35.5 | {NR}50.2 | {NR}48.8 | {NR}51.4 | {NR}32.0 |")
    # conditions: an incomplete grid, a renamed protocol: shown, marked ‡, said below
    assert k16["FT | hf-ft"] == (f"| FT | hf-ft | 91.0 (0.0) [1]‡ / 91.9 (1.8) | {NR}47.5 (1.9) | {NR}77.5 (2.6) "
                                 f"| {NR}70.0 (2.3) | {NR}66.4 (7.2) | {NR}85.0 (2.5) |")
    assert k16["MeZO (LoRA) | hf-mlm-lora-ref"].startswith(
        f"| MeZO (LoRA) | hf-mlm-lora-ref | {NR}91.4 (0.9) | 43.0 (0.0) [4]‡ / 43.0 (1.6) |")
    assert k512["FT | hf-ft"] == (f"| FT | hf-ft | {NR}93.9 (0.7) | 42.5 (1.5) [3] / 55.9 (0.9) | {NR}88.7 (0.8) "
                                  f"| {NR}84.4 (0.8) | {NR}82.7 (1.4) | {NR}97.3 (0.2) |")
    # no variant run, and no published number recorded (MeZO-Adam), or one only for some tasks (Table 3)
    assert k16["MeZO-Adam | hf-mlm-adam"] == "| MeZO-Adam | hf-mlm-adam |" + " – / – |" * 6
    assert k512["MeZO (accuracy objective), Table 3 | hf-mlm-acc"] == (
        f"| MeZO (accuracy objective), Table 3 | hf-mlm-acc | {NR}92.7 | {NR}48.9 | {NR}82.7 | – / – | – / – "
        f"| {NR}68.6 |")
    assert k16["LP | hf-lp"] == f"| LP | hf-lp | {NR}76.0 (2.8) | {NR}40.3 (1.9) | {NR}66.0 (2.7) | {NR}56.5 (2.5) " \
                                f"| {NR}59.4 (5.3) | {NR}51.3 (5.5) |"
    notes = [line for line in paper_part.splitlines() if line.startswith("- ")]
    assert notes == [
        "- [1] SST-2: protocol sst2-mezo v3, data test:bbbbbbbb,train:aaaaaaaa; protocol hash per variant: hf-ft "
        "sst2-hf- (400 steps), hf-mlm sst2-hf- (400 steps), hf-zero-shot sst2-hf- (no training).",
        "- [2] SST-2: protocol sst2-mezo v3, data test:bbbbbbbb,train:ffffffff; protocol hash per variant: hf-mlm "
        "sst2-hf- (400 steps).",
        "- [3] SST-5: protocol sst5-mezo v1, data test:bbbbbbbb,train:aaaaaaaa; protocol hash per variant: hf-ft "
        "sst5-hf- (400 steps), hf-mlm sst5-hf- (400 steps).",
        "- [4] SST-5: protocol sst5-mine v1, data test:bbbbbbbb,train:aaaaaaaa; protocol hash per variant: "
        "hf-mlm-lora-ref sst5-hf- (400 steps).",
        "- ‡ [4] SST-5 MeZO (LoRA) (hf-mlm-lora-ref), k=16: protocol sst5-mine is not the task's shipped protocol "
        "sst5-mezo (whose paper profile holds the published steps, grid and seeds).",
        "- ‡ [1] SST-2 FT (hf-ft), k=16: 3 of 4 grid points have no completed or diverged run; 1 of the grid's 2 seeds "
        "have an evaluated run."]
    # random-init runs: in their own section, every measured value marked †, only the k they ran, ours only
    # (the paper's numbers are of another model)
    smoke = tables(markdown, 2)
    assert list(smoke) == [16]
    assert smoke[16]["MeZO | hf-mlm"] == "| MeZO | hf-mlm | – | 30.0 (0.0) [1]† | – | – | – | – |"
    assert "30.0" not in paper_part and "‡" not in smoke_part


def test_unmet_conditions_of_a_group():
    group = {"task": "rte", "protocol": "rte-mezo", "seeds": 5, "grid_seeds": 5, "grid_points": 45,
             "missing_points": 0}
    assert unmet_conditions(group) == []
    assert unmet_conditions(dict(group, seeds=4, missing_points=9)) == [
        "9 of 45 grid points have no completed or diverged run", "4 of the grid's 5 seeds have an evaluated run"]
    assert unmet_conditions(dict(group, grid_seeds=None, grid_points=None, missing_points=None)) == [
        "its records do not say their grid (older schema)"]


def test_the_papers_setting_is_shown_even_when_nothing_of_it_ran(make_record):
    records = [make_record(seed=seed) for seed in (13, 42)]
    paper = load_paper(PAPER)
    table = build(summarize(records, paper), paper)
    markdown = to_markdown(table)
    first = markdown.split("\n## ")[1]
    assert first.startswith("1. profile paper · model roberta-large · hardware any\n")
    assert tables(markdown, 1)[512]["MeZO | hf-mlm"].startswith(f"| MeZO | hf-mlm | {NR}93.3 (0.7) | {NR}53.2 (1.4) |")
    assert "[1]" not in first
    assert tables(markdown, 2)[16]["MeZO | hf-mlm"].startswith("| MeZO | hf-mlm | 50.0 (0.0) [1]† | – |")
    assert [shown_k(part) for part in table["sections"]] == [[16, 512], [16]]


def test_report_writes_table18_csv_and_figure(records, tmp_path):
    written = write_report(records, load_paper(PAPER), tmp_path)
    assert [p.name for p in written if p.name.startswith("table18")] == [
        "table18.md", "table18.csv", "table18_accuracy.png"]
    assert (tmp_path / "table18_accuracy.png").stat().st_size > 10_000
    with open(tmp_path / "table18.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    # one line per cell entry: 2 sections x 14 rows x 2 k x 6 tasks, plus the second SST-2 data's entries (MeZO at
    # k=16; zero-shot of hf-mlm under both k)
    assert len(lines) == 2 * len(TABLE_ROWS) * 2 * 6 + 3
    mezo = [line for line in lines if (line["section"], line["method"], line["k"], line["variant"]) == (
        "1", "MeZO", "16", "hf-mlm")]
    assert [(m["task"], m["status"], m["seeds"], m["footnote"], m["conditions_met"]) for m in mezo] == [
        ("sst2", "measured", "2", "1", "True"), ("sst2", "measured", "2", "2", "True"),
        ("sst5", "measured", "2", "3", "True"), ("snli", "not run", "", "", ""), ("mnli", "not run", "", "", ""),
        ("rte", "not run", "", "", ""), ("trec", "not run", "", "", "")]
    assert [float(m["measured_mean"]) for m in mezo[:3]] == pytest.approx([91.0, 50.0, 46.0])
    assert [float(m["measured_std"]) for m in mezo[:3]] == pytest.approx([1.0, 0.0, 1.0])
    assert [m["data"].split(",")[1][:7] for m in mezo[:2]] == ["train:a", "train:f"]   # two data: two entries
    sst5 = mezo[2]
    assert (sst5["paper_id"], sst5["paper_mean"], sst5["paper_std"], sst5["steps"]) == (
        "sst5/mezo-k16", "45.5", "2.0", "400")
    assert (sst5["protocol"], sst5["version"], sst5["hash"], sst5["comparable"]) == (
        "sst5-mezo", "1", "sst5-hf-mlm".ljust(64, "0"), "True")
    assert sst5["data"] == f"test:{'b' * 64},train:{'a' * 64}"
    ft = next(line for line in lines if (line["section"], line["method"], line["k"], line["task"]) == (
        "1", "FT", "16", "sst2"))
    assert (ft["conditions_met"], ft["unmet"]) == ("False", "3 of 4 grid points have no completed or diverged run; "
                                                            "1 of the grid's 2 seeds have an evaluated run")
    assert {line["status"] for line in lines if line["method"] == "MeZO (prefix)"} == {"not run"}
    assert {line["paper_id"] for line in lines if line["method"] in ("MeZO-Adam", "FT (prefix)", "LP-then-MeZO")} == {""}
    smoke = [line for line in lines if line["section"] == "2" and line["status"] == "measured"]
    assert [(line["task"], line["method"], line["k"], line["comparable"], line["conditions_met"]) for line in smoke] == [
        ("sst5", "zero-shot", "16", "False", "False"), ("sst5", "MeZO", "16", "False", "False"),
        ("sst5", "zero-shot", "512", "False", "False")]
    assert smoke[0]["caveat"].startswith("random-init weights (random-init:tiny): a pipeline check, not comparable")
    zero_shot = [line for line in lines if line["method"] == "zero-shot" and line["section"] == "1" and line["k"] == "16"]
    assert [(z["variant"], z["task"], z["measured_mean"] and float(z["measured_mean"]), z["measured_k"])
            for z in zero_shot[:3] + zero_shot[6:9]] == [
        ("hf-zero-shot", "sst2", pytest.approx(79.0), "16"), ("hf-zero-shot", "sst5", "", ""),
        ("hf-zero-shot", "snli", "", ""), ("hf-mlm", "sst2", pytest.approx(79.0), "16"),
        ("hf-mlm", "sst2", pytest.approx(79.0), "16"), ("hf-mlm", "sst5", pytest.approx(36.0), "16")]


def test_the_figures_bars_per_task_are_the_tables_cells(records):
    paper = load_paper(PAPER)
    table = build(summarize(records, paper), paper)
    sst2, sst5 = panel_slots(table["sections"][0], 16)[:2]

    def bars(slots):
        return [(s["method"].name, s["item"] and s["item"]["mean"], s["paper"] and s["paper"]["mean"],
                 s["item"] and s["item"]["footnote"], s["hatch"]) for s in slots]

    # methods with a paper number or a measurement at k=16 (not MeZO-Adam, FT (prefix), LP-then-MeZO, Table 3);
    # a bar per measured entry of each variant, an empty slot (None) for a variant not run
    assert bars(sst2) == [
        ("zero-shot", 79.0, 79.0, 1, ""), ("zero-shot", 79.0, 79.0, 1, "////"), ("zero-shot", 79.0, 79.0, 2, "////"),
        ("LP", None, 76.0, None, ""), ("MeZO", 91.0, 90.5, 1, ""), ("MeZO", 50.0, 90.5, 2, ""),
        ("MeZO (LoRA)", None, 91.4, None, ""), ("MeZO (LoRA)", None, 91.4, None, "////"),
        ("MeZO (prefix)", None, 90.8, None, ""), ("FT", 91.0, 91.9, 1, ""), ("FT (LoRA)", None, 91.4, None, "")]
    assert [s["item"]["unmet"] != [] for s in sst2 if s["method"].name == "FT"] == [True]
    assert bars(sst5)[:6] == [("zero-shot", None, 35.5, None, ""), ("zero-shot", 36.0, 35.5, 3, "////"),
                              ("LP", None, 40.3, None, ""), ("MeZO", 46.0, 45.5, 3, ""),
                              ("MeZO (LoRA)", 43.0, 43.0, 4, ""), ("MeZO (LoRA)", None, 43.0, None, "////")]


def test_a_stand_in_section_shows_ours_only_and_says_what_the_model_is(make_record):
    from harness.results.table18 import to_frame

    records = [make_record(seed=seed, k=512, test=test, model="pretrained:bert-tiny-splade", profile="standin")
               for seed, test in ((13, 0.66), (42, 0.64))]
    paper = load_paper(PAPER)
    table = build(summarize(records, paper), paper)
    markdown = to_markdown(table)
    standin = markdown.split("\n## ")[2]
    assert standin.startswith("2. profile standin · model pretrained:bert-tiny-splade · hardware cpu\n")
    assert "real learning on the stand-in (BERT-Tiny, 4.4M), not the paper's RoBERTa-large" in standin
    assert tables(markdown, 2)[512]["MeZO | hf-mlm"] == "| MeZO | hf-mlm | 65.0 (1.0) [1]† | – | – | – | – | – |"
    frame = to_frame(table)
    rows = frame[frame["profile"] == "standin"]
    assert rows["paper_mean"].isna().all() and (rows["paper_id"] == "").all()
    assert not frame[frame["profile"] == "paper"]["paper_mean"].isna().all()   # the paper's section keeps them


def test_grid_search_shows_dev_accuracy_per_point_and_the_selected_one(make_record):
    from harness.results.report import grid_search_markdown

    grid = {"seeds": [13], "lr": [1e-4, 3e-5], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
    records = [make_record(seed=13, lr=lr, dev=dev, test=0.99, grid=grid, profile="standin-sweep", k=512)
               for lr, dev in ((1e-4, 0.615), (3e-5, 0.70))]
    text = grid_search_markdown(records)
    assert "profile standin-sweep" in text and "hf-mlm · k=512" in text
    assert "| 13 | 3e-05 | 64 | 0.001 | 0 | 400 | **70.00** | 400 | completed |" in text
    assert "| 13 | 0.0001 | 64 | 0.001 | 0 | 400 | 61.50 | 400 | completed |" in text
    assert "99" not in text   # test accuracy never shown
    assert "No group" in grid_search_markdown([make_record()])
