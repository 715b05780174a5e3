"""Integration: the smoke profile end to end through the CLI (bad input: tests/faults)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.protocol.loading import load_protocol
from harness.results.selection import machine_digest

# MeZO's own generated SST-2 k=16 seed-13 split files (issue 10), byte for byte
SMOKE_SPLIT_SHA256 = {"train": "934595d497443cbea542f9b2762a0c69ca4c4059a627e350dc042293f47b3cc9",
                      "dev": "976005c210e313cb41f8b86dc7c1d75dc652feaab9f86c17aa80305d7f74dd92"}


def records_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.json")) if folder.exists() else []


@pytest.fixture(scope="module")
def smoke_record(sst2_protocol, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert main(["run", "--protocol", str(sst2_protocol), "--profile", "smoke", "--seed", "13", "--data-dir", str(sst2_dir),
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    [path] = records_under(out)
    return path, json.loads(path.read_text())


@pytest.mark.slow
def test_the_machine_identity_holds_what_changes_floats_and_no_host_name(monkeypatch):
    import socket

    from harness.recipes.provenance import machine_identity

    monkeypatch.delenv("MKL_CBWR", raising=False)
    plain = machine_identity(torch.device("cpu"))
    assert plain["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert plain["torch_threads"] == torch.get_num_threads() and plain["torch"].startswith(torch.__version__)
    assert socket.gethostname() not in json.dumps(plain)
    assert machine_identity(torch.device("cpu")) == plain   # stable
    monkeypatch.setenv("MKL_CBWR", "AVX2")   # a kernel-changing variable is another identity
    capped = machine_identity(torch.device("cpu"))
    assert capped["float_env"] == {**plain["float_env"], "MKL_CBWR": "AVX2"}
    assert machine_digest(capped) != machine_digest(plain)


def test_smoke_run_lowers_the_training_loss(smoke_record):
    _, record = smoke_record
    metrics = record["metrics"]
    assert record["status"] == "completed" and record["schema_version"] == 3
    assert metrics["train_loss_start"] == pytest.approx(0.7066, abs=1e-3)   # ~ln 2 for a random head
    assert metrics["train_loss_end"] < 0.35


@pytest.mark.slow
def test_smoke_losses_are_pinned(smoke_record):
    """CPU fp32, torch 2.13: the trajectory is deterministic; these values catch any change
    to data, prompt, initialisation, z generation or the update."""
    curve = smoke_record[1]["loss_curve"]
    assert curve["stride"] == 1 and len(curve["loss_plus"]) == 400
    assert curve["loss_plus"][:3] == pytest.approx([0.7060897, 0.7050856, 0.7049613], rel=1e-5)
    assert curve["loss_plus"][-1] == pytest.approx(0.2061080, rel=1e-4)


@pytest.mark.slow
def test_record_describes_its_run(sst2_protocol, smoke_record):
    path, record = smoke_record
    protocol = load_protocol(sst2_protocol)
    assert path.parent.parts[-3:] == ("sst2", "sst2-mezo-v3", "smoke")
    assert path.stem == record["run_id"]
    assert record["protocol"] == {"name": "sst2-mezo", "version": 3, "profile": "smoke",
                                  "hash": protocol.settings_hash("smoke", "hf-mlm"), "path": str(sst2_protocol),
                                  "grid": {"seeds": [13, 42], "lr": [1e-3], "batch_size": [64], "eps": [1e-3],
                                           "weight_decay": [0.0]}}
    assert record["z_stream"] == {"stream": "sequential", "chunk_elements": 1 << 20}
    assert record["model"]["lm_decoder"]["tied"] is True       # the smoke profile keeps hf-mlm and sglang-mlm alike
    assert record["variant"] == {"name": "hf-mlm", "backend": "hf", "head": "mlm", "loss": "ce",
                                 "parameters": "full", "optimizer": "mezo"}
    assert record["task"] == "sst2"
    assert (record["k"], record["seed"]) == (16, 13)
    assert record["hyperparameters"]["lr"] == 1e-3 and record["hyperparameters"]["eps"] == 1e-3
    assert record["hyperparameters"]["steps"] == 400 and record["hyperparameters"]["batch_size"] == 64
    assert record["liveness"] == {"groups": 23, "dead_groups": [], "dead_groups_perturbed": False}
    assert record["model"]["updated_parameters"] == record["model"]["trainable_parameters"] == 370_560
    assert {k: record["data"]["split_sha256"][k] for k in ("train", "dev")} == SMOKE_SPLIT_SHA256
    assert record["data"]["split_sizes"] == {"train": 32, "dev": 32, "test": 872}
    assert record["model"]["id"] == "random-init:tiny" and record["model"]["revision"] is None
    assert record["tokenizer"]["id"] == "trained-bpe:4096" and len(record["tokenizer"]["sha256"]) == 64
    metrics = record["metrics"]
    assert [h["step"] for h in metrics["dev_history"]] == [100, 200, 300, 400]
    assert metrics["best_dev_accuracy"] == max(h["dev_accuracy"] for h in metrics["dev_history"])
    assert 0 <= metrics["zero_shot_test_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
    packages = record["environment"]["packages"]
    assert packages["torch"] and packages["transformers"] and packages["python"]
    assert "peft" in packages and "sglang" in packages
    assert record["environment"]["device"]["hardware_class"] == "cpu"
    machine = record["environment"]["machine"]
    assert machine["kind"] == "cpu" and machine["cpu_model"] == record["environment"]["device"]["cpu"]
    assert machine["cpu_capability"] and machine["torch"].startswith(packages["torch"])
    assert machine["torch_threads"] == record["environment"]["device"]["torch_threads"]
    assert record["environment"]["machine_id"] == machine_digest(machine)
    assert set(record["git"]) == {"commit", "dirty", "root"}
    throughput = record["throughput"]
    assert throughput["forward_passes"] == 800                      # two per MeZO step
    assert throughput["real_tokens"] % 800 == 0                     # full batch: the same 32 examples each pass
    assert 0 < throughput["padding_fraction"] < 1
    assert throughput["train_seconds"] == pytest.approx(throughput["forward_seconds"] + throughput["update_seconds"])
    assert record["timing"]["wall_seconds"] > throughput["train_seconds"] > 0
    sparsity = record["sparsity"]
    assert sparsity["steps"] == 400 and sparsity["zero_fraction"] == 0.0 and sparsity["tiny_threshold"] == 1e-6
    memory = record["memory"]
    assert set(memory["phases"]) == {"inference", "mezo_step", "first_order_step"}
    assert memory["ratios"]["mezo_over_inference"] == pytest.approx(
        memory["phases"]["mezo_step"]["peak_bytes"] / memory["phases"]["inference"]["peak_bytes"])


@pytest.mark.slow
def test_reconstruct_rebuilds_the_tested_checkpoint(smoke_record, sst2_dir, tmp_path, cli):
    """The best-dev weights rebuilt from the trajectory alone load with from_pretrained and give
    the record's test accuracy exactly."""
    from transformers import AutoTokenizer, RobertaForMaskedLM

    from harness.backends.hf import MaskedLMLabelWordHead
    from harness.protocol.loading import load_protocol
    from harness.tasks.batching import eval_batches
    from harness.tasks.data import load_task_data, make_k_shot_split
    from harness.tasks.objective import Objective
    from harness.tasks.prompt import PromptEncoder, label_word_ids

    path, record = smoke_record
    assert record["trajectory"]["steps"] == 400
    assert (path.parent / record["trajectory"]["file"]).stat().st_size < 400 * 24 + 4096   # 24 bytes a step + header
    out = tmp_path / "rebuilt"
    code, _, err = cli("reconstruct", path, "--step", "best", "--out", out, "--data-dir", sst2_dir)
    assert code == 0, err
    model, tokenizer = RobertaForMaskedLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    settings = load_protocol(record["protocol"]["path"]).run_settings("smoke", "hf-mlm")
    split = make_k_shot_split(load_task_data("sst2", sst2_dir), 16, 13)
    test = PromptEncoder(tokenizer, settings.template, settings.max_length).encode_all(split.examples("test"))
    objective = Objective(MaskedLMLabelWordHead(model, label_word_ids(tokenizer, settings.label_words)))
    batches = eval_batches(test, settings.eval_batch_size, tokenizer.pad_token_id, torch.device("cpu"))
    assert objective.accuracy(batches) == record["metrics"]["test_accuracy"]
    assert json.loads((out / "reconstruct.json").read_text())["step"] == record["metrics"]["best_step"]

    code, _, err = cli("reconstruct", path, "--out", out, "--data-dir", sst2_dir)
    assert code == 2 and "exists and is not an empty folder" in err
    code, _, err = cli("reconstruct", path, "--step", "401", "--out", tmp_path / "x", "--data-dir", sst2_dir)
    assert code == 2 and "--step must be best, final or a step in 0..400" in err


def test_splits_command_writes_the_pinned_files(sst2_dir, tmp_path, cli):
    code, out, _ = cli("splits", "--task", "sst2", "--k", 16, "--seed", 13, "--data-dir", sst2_dir,
                       "--out", tmp_path / "16-13")
    assert code == 0
    for split, digest in SMOKE_SPLIT_SHA256.items():
        assert hashlib.sha256((tmp_path / "16-13" / f"{split}.tsv").read_bytes()).hexdigest() == digest
        assert digest in out


def test_protocol_command_checks_the_lock(sst2_protocol, cli):
    code, out, _ = cli("protocol", "--protocol", sst2_protocol, "--check")
    assert code == 0 and "matches its lock" in out
    code, out, _ = cli("protocol", "--protocol", sst2_protocol, "--profile", "smoke")
    assert code == 0 and load_protocol(sst2_protocol).settings_hash("smoke", "hf-ft") in out


@pytest.fixture
def exploding_protocol(sst2_protocol, tmp_path):
    """The smoke profile cut to 6 steps with an lr so large that the loss stops being finite."""
    path = tmp_path / "protocol.toml"
    shutil.copy(sst2_protocol, path)
    text = path.read_text().replace("lr = [1e-3]\nsteps = 400\neval_every = 100\n", "lr = [1e30]\nsteps = 6\neval_every = 1\n", 1)
    text = text.replace('name = "sst2-mezo"', 'name = "sst2-mezo-exploding"')
    path.write_text(text)
    load_protocol(path).write_lock()
    return path


def test_a_run_whose_loss_stops_being_finite_is_recorded_as_diverged(exploding_protocol, sst2_dir, tmp_path, cli):
    code, out, _ = cli("run", "--protocol", exploding_protocol, "--profile", "smoke", "--seed", 13,
                       "--data-dir", sst2_dir, "--out", tmp_path / "r", "--no-progress", "--no-memory")
    assert code == 0 and "(diverged at step" in out
    [path] = records_under(tmp_path / "r")
    record = json.loads(path.read_text())              # valid JSON: no NaN written
    assert record["status"] == "diverged" and 1 <= record["diverged_at"] < 6
    steps = record["diverged_at"]
    assert [h["step"] for h in record["metrics"]["dev_history"]] == list(range(1, steps))
    assert record["loss_curve"]["loss_plus"][-1] is None or record["loss_curve"]["projected_grad"][-1] is None
    assert record["sparsity"] is None or record["sparsity"]["steps"] == steps - 1
    if steps > 1:   # the best-dev checkpoint before the divergence was tested
        assert record["metrics"]["test_accuracy"] is not None
        last = record["last_finite"]   # the step before it, with its (finite) losses
        assert last["step"] == steps - 1 and last["loss_plus"] == record["loss_curve"]["loss_plus"][steps - 2]
    else:
        assert "last_finite" not in record
    from harness.results.schema import missing_fields, undeclared_fields
    assert missing_fields(record) == [] and undeclared_fields(record) == []
