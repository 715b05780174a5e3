"""The report's figures across tasks: accuracy_vs_forward_passes.png and memory_per_method.png;
the data feeding each pinned on synthetic records, and the PNGs written."""

from pathlib import Path

import pytest

from harness.results.figures import (
    draw_accuracy_vs_forward_passes,
    draw_memory_per_method,
    forward_pass_panels,
    forward_passes,
    memory_bars,
    memory_panels,
)
from harness.results.paper import load_paper
from harness.results.report import dev_curve, memory_summary, summarize, with_dev_curves

PAPER = Path(__file__).resolve().parents[2] / "benchmarks" / "paper.toml"
MIB = 2**20
PAPER_SETTING = dict(model="roberta-large", profile="paper", hardware="cuda")


@pytest.fixture(scope="module")
def records(make_record):
    """The paper's setting on SST-2: MeZO (2 seeds), FT and zero-shot (trains nothing) at k=16, FT at
    batch 16 (k=512); random-init SST-5 MeZO."""
    runs = [make_record(seed=seed, dev=dev, protocol_hash="m" * 64, memory_peak=(90 + MIB, 90 + 2 * MIB, 90 + 9 * MIB),
                        **PAPER_SETTING)
            for seed, dev in ((13, 0.6), (42, 0.8))]
    runs.append(make_record(variant="hf-ft", seed=13, dev=0.7, protocol_hash="f" * 64, **PAPER_SETTING))
    runs.append(make_record(variant="hf-ft", k=512, batch_size=16, seed=13, dev=0.9, protocol_hash="f" * 64,
                            memory_peak=(90 + MIB, 90 + 2 * MIB, 90 + 20 * MIB), **PAPER_SETTING))
    zero_shot = make_record(variant="hf-zero-shot", seed=13, dev=0.55, protocol_hash="z" * 64, **PAPER_SETTING)
    zero_shot["variant"].update(parameters="none", optimizer="none")
    zero_shot["memory"]["phases"] = {"inference": zero_shot["memory"]["phases"]["inference"]}
    runs.append(zero_shot)
    runs += [make_record(task="sst5", seed=seed, version=1, protocol_hash="s" * 64) for seed in (13, 42)]
    return runs


def test_dev_curve_is_the_mean_over_the_runs_evaluated_at_each_step(make_record):
    diverged = make_record(seed=42, dev=0.9)
    diverged["metrics"]["dev_history"] = diverged["metrics"]["dev_history"][:1]    # stopped before step 400
    assert dev_curve([make_record(seed=13, dev=0.5), diverged]) == ([200, 400], [pytest.approx(70.0), 50.0])


def test_accuracy_vs_forward_passes_counts_two_passes_per_mezo_step_and_one_per_ft_step(records, tmp_path):
    paper = load_paper(PAPER)
    panels = forward_pass_panels(with_dev_curves(records, summarize(records, paper)), paper)
    # a panel per (setting, k, task): the paper's setting first; variants in the paper's method order
    assert [(setting.profile, k, task, [g["variant"] for g in groups]) for setting, k, task, groups in panels] == [
        ("paper", 16, "sst2", ["hf-zero-shot", "hf-mlm", "hf-ft"]), ("paper", 512, "sst2", ["hf-ft"]),
        ("smoke", 16, "sst5", ["hf-mlm"])]
    zero_shot, mezo, ft = panels[0][3]
    # make_record evaluates dev at steps 200 and 400; MeZO: mean over the best-dev run of each seed
    assert (forward_passes(mezo), mezo["dev_curve"]) == ([400, 800], ([200, 400], [70.0, 70.0]))
    assert (forward_passes(ft), ft["dev_curve"][1]) == ([200, 400], [70.0, 70.0])
    assert forward_passes(zero_shot) is None     # trains nothing: a dotted line at its dev accuracy
    path = draw_accuracy_vs_forward_passes(with_dev_curves(records, summarize(records, paper)), paper,
                                           tmp_path / "curves.png")
    assert path.stat().st_size > 10_000


def test_memory_per_method_shows_each_variants_own_phase_beside_the_papers_table_12(records, tmp_path):
    paper = load_paper(PAPER)
    panels = memory_panels(memory_summary(records).to_dict("records"), paper)
    assert [(setting.profile, task, [(r["variant"], r["batch"]) for r in rows], paper_row is not None)
            for setting, task, rows, paper_row in panels] == [
        ("paper", "sst2", [("hf-zero-shot", 32), ("hf-mlm", 32), ("hf-ft", 16), ("hf-ft", 32)], True),
        ("smoke", "sst5", [("hf-mlm", 32)], False)]
    bars = memory_bars(*panels[0][2:])
    assert [(bar["label"], bar["hatch"]) for bar in bars] == [
        ("hf-zero-shot · batch 32 · inference", ""), ("hf-mlm · batch 32 · MeZO step", ""),
        ("hf-ft · batch 16 · first-order step", ""),     # k=512, batch 16: the batch of the paper's Table 12
        ("hf-ft · batch 32 · first-order step", ""), ("paper (Table 12) · batch 16 · inference", "////"),
        ("paper (Table 12) · batch 16 · MeZO step", "////"), ("paper (Table 12) · batch 16 · first-order step", "////")]
    assert [bar["value"] for bar in bars] == pytest.approx([10 / MIB, 2.0, 20.0, 60 / MIB, 327.5, 327.5, 24156])
    assert bars[1]["color"] == "#1f77b4" and bars[2]["color"] == bars[3]["color"] == "#d62728"   # MeZO, FT
    path = draw_memory_per_method(memory_summary(records).to_dict("records"), paper, tmp_path / "memory.png")
    assert path.stat().st_size > 10_000
