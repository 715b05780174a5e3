"""A smoke run of every task besides SST-2 (issue 14): its shipped protocol's smoke profile, cut to
20 MeZO steps, on the shared copies of the real data, through the CLI. Pinned: the split sizes, the
zero-shot test accuracy and the first and last losses (CPU fp32, torch 2.13: deterministic)."""

import json
import math
from pathlib import Path

import pytest

from harness.cli import main
from harness.protocol.loading import load_protocol

REPO = Path(__file__).resolve().parents[2]
# task -> (train, dev, test examples; zero-shot test accuracy; first and last loss_plus)
PINNED = {
    "sst5": ((80, 80, 1000), 0.17, (1.6124798, 1.5888330)),
    "trec": ((96, 96, 500), 0.276, (1.8090805, 1.8101243)),
    "rte": ((32, 32, 277), 148 / 277, (0.6969776, 0.6870243)),
    "mnli": ((48, 48, 1000), 0.301, (1.1062289, 1.0965958)),
    "snli": ((48, 48, 1000), 0.316, (1.1196463, 1.1050934)),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(PINNED))
def test_task_smoke_run(task, tmp_path, shared_data, short_protocol):
    data = shared_data(task)
    protocol = short_protocol(20, 10, task)
    out = tmp_path / "results"
    assert main(["run", "--protocol", str(protocol), "--profile", "smoke", "--variant", "hf-mlm", "--seed", "13",
                 "--data-dir", str(data), "--out", str(out), "--device", "cpu", "--no-progress", "--no-memory"]) == 0
    [path] = sorted(out.rglob("*.json"))
    record = json.loads(path.read_text())
    assert path.parent.parts[-3:] == (task, f"{task}-mezo-short-v1", "smoke")
    assert record["status"] == "completed" and record["task"] == task
    sizes, zero_shot, losses = PINNED[task]
    split_sizes = record["data"]["split_sizes"]
    assert (split_sizes["train"], split_sizes["dev"], split_sizes["test"]) == sizes
    settings = load_protocol(REPO / "benchmarks" / task / "protocol.toml").run_settings("smoke", "hf-mlm")
    assert set(record["tokenizer"]["added_label_words"]) <= set(settings.label_words)
    assert record["hyperparameters"]["max_length"] == settings.max_length
    assert record["hyperparameters"].get("first_sent_limit") == settings.first_sent_limit
    curve = record["loss_curve"]["loss_plus"]
    assert curve[0] == pytest.approx(math.log(len(settings.label_words)), abs=0.05)   # a random head: ~uniform
    assert record["metrics"]["zero_shot_test_accuracy"] == pytest.approx(zero_shot, abs=1e-9)
    assert (curve[0], curve[-1]) == pytest.approx(losses, rel=1e-4)
