"""`mezo-bench plan`: the grid's runs, steps and forward passes, and device-hours only where a
stored performance run measured the same model, dtype and device."""

from pathlib import Path

import pytest

from harness.cli import main
from harness.protocol.loading import load_protocol
from harness.results.plan import architecture, plan

PERF = Path(__file__).resolve().parents[2] / "results" / "perf"


def test_smoke_on_cpu_is_estimated_from_the_tiny_benchmark(sst2_protocol):
    rows = {row.variant: row for row in plan(load_protocol(sst2_protocol), "smoke", [], PERF, "cpu")}
    mezo = rows["hf-mlm"]
    # 2 seeds x 400 steps, two forwards a step; 4 dev evaluations of one 32-example batch per run
    assert (mezo.runs, mezo.steps, mezo.train_forwards, mezo.eval_forwards) == (2, 800, 1600, 8)
    assert mezo.hours > 0 and "tiny-float32-cpu" in mezo.basis
    assert rows["hf-ft"].hours is None and rows["hf-ft"].basis == "first-order steps are not benchmarked"
    assert rows["sglang-mlm"].hours is None and "not sglang" in rows["sglang-mlm"].basis


def test_nothing_measured_is_said_not_guessed(sst2_protocol, tmp_path, capsys):
    rows = plan(load_protocol(sst2_protocol), "paper", ["hf-mlm"], PERF, "cuda")
    assert rows[0].runs == 30 and rows[0].steps == 3_000_000 and rows[0].hours is None
    assert "no stored performance run of roberta-large float32 on cuda" in rows[0].basis
    assert main(["plan", "--protocol", str(sst2_protocol), "--variant", "hf-mlm", "--perf", str(tmp_path)]) == 0
    assert "total: 30 runs, 3,000,000 steps (not estimated: hf-mlm)" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["roberta-large", "FacebookAI/roberta-large", "random-init:roberta-large"])
def test_hub_ids_and_stand_ins_share_an_architecture(spec):
    assert architecture(spec) == "roberta-large"
