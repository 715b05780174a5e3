"""Unit tests: the protocol file, its validation and its version lock."""

import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.protocol import load_protocol

PROTOCOL = Path(__file__).resolve().parents[1] / "benchmarks" / "sst2" / "protocol.toml"


@pytest.fixture
def protocol_copy(tmp_path):
    """A writable copy of the sst2 protocol and its lock."""
    shutil.copy(PROTOCOL, tmp_path / "protocol.toml")
    shutil.copy(PROTOCOL.with_name("protocol.lock.json"), tmp_path / "protocol.lock.json")
    return tmp_path / "protocol.toml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_paper_profile_is_the_published_protocol():
    paper = load_protocol(PROTOCOL).profile("paper")
    assert paper.model == "roberta-large"
    assert paper.k == (16, 512)
    assert paper.seeds == (13, 21, 42, 87, 100)
    assert paper.steps == 100_000 and paper.eval_every == 10_000 and paper.batch_size == 64
    assert paper.lr == (1e-7, 1e-6, 1e-5) and paper.eps == 1e-3 and paper.weight_decay == 0.0
    assert paper.dtype == "float32" and paper.max_length == 128
    assert paper.template == ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")
    assert paper.label_words == (" terrible", " great")


def test_committed_protocol_matches_its_lock():
    load_protocol(PROTOCOL).check_lock()


def test_auto_profile_depends_on_device():
    protocol = load_protocol(PROTOCOL)
    assert protocol.resolve_profile_name("auto", "cpu") == "smoke"
    assert protocol.resolve_profile_name("auto", "cuda") == "quick"


def test_hash_is_stable_and_changes_with_any_value(protocol_copy):
    before = load_protocol(protocol_copy).profile_hash("smoke")
    assert before == load_protocol(protocol_copy).profile_hash("smoke")
    edit(protocol_copy, "steps = 400\n", "steps = 401\n")
    changed = load_protocol(protocol_copy)
    assert changed.profile_hash("smoke") != before
    assert changed.profile_hash("paper") == load_protocol(PROTOCOL).profile_hash("paper")


def test_changing_a_value_without_bumping_version_fails_the_lock(protocol_copy):
    edit(protocol_copy, "steps = 400\n", "steps = 401\n")
    with pytest.raises(HarnessError, match=r"profile\(s\) smoke differ .* bump `version`"):
        load_protocol(protocol_copy).check_lock()
    with pytest.raises(HarnessError, match="already locked"):
        load_protocol(protocol_copy).write_lock()
    edit(protocol_copy, "version = 1", "version = 2")
    with pytest.raises(HarnessError, match="version 2 is not locked"):
        load_protocol(protocol_copy).check_lock()
    bumped = load_protocol(protocol_copy)
    bumped.write_lock()
    bumped.check_lock()


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("steps = 400\n", "stepz = 400\n", r"unknown key 'stepz'; allowed keys: batch_size, dtype"),
        ("k = [16]\nseeds = [13]", "k = [0]\nseeds = [13]", r"\[profiles.smoke\]: field 'k' must be a non-empty list of integers >= 1"),
        ('dtype = "float32"', 'dtype = "fp8"', r"field 'dtype' must be one of \['float32', 'bfloat16', 'float16'\], got 'fp8'"),
        ("eps = 1e-3 ", "eps = -1e-3 ", r"field 'eps' must be a positive number"),
        ("eval_every = 100\n", "eval_every = 1000\n", r"field 'eval_every' must be <= steps \(400\)"),
        ('"random-init:tiny"', '"random-init:huge"', r"random-init config must be one of"),
        ('variants = ["hf-mlm"]', 'variants = ["hf-nope"]', r"field 'variants' must be a non-empty list of known variants"),
        ('label_words = [" terrible", " great"]', 'label_words = [" terrible", " ok", " great"]', r"needs 2 words for task 'sst2'"),
        ('"<mask>", ".", "</s>"]', '".", "</s>"]', r"must contain '<mask>' exactly once"),
        ('cpu = "smoke"', 'cpu = "tiny"', r"field 'cpu' must name a profile"),
        ('task = "sst2"', 'task = "sst9"', r"field 'task' must be one of \['sst2'\]"),
        ('lr = [1e-3]', 'lr = ["fast"]', r"field 'lr' must be a non-empty list of positive numbers"),
    ],
)
def test_bad_values_name_the_field(protocol_copy, old, new, message):
    edit(protocol_copy, old, new)
    with pytest.raises(HarnessError, match=message):
        load_protocol(protocol_copy)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(HarnessError, match=r"unknown profile 'fast' .* profiles: paper, quick, smoke"):
        load_protocol(PROTOCOL).profile("fast")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(HarnessError, match="protocol file not found"):
        load_protocol(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(HarnessError, match="not valid TOML"):
        load_protocol(bad)
