"""sst-5, TREC, RTE, MNLI and SNLI splits exactly as LM-BFF / MeZO make them (issue 14), on the
shared copies of the real files; skipped where /work/shared/data is absent."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.tasks.data import load_task_data, make_k_shot_split
from harness.tasks.spec import get_task

SEEDS = (13, 21, 42, 87, 100)


@pytest.fixture(scope="module")
def lm_bff_md5(shared_data) -> dict[str, str]:
    """LM-BFF's published checksums: '<TASK>/16-<seed>/<file>' -> md5."""
    lines = shared_data("checksums/lm-bff-k16.md5").read_text().splitlines()
    return {name: md5 for md5, name in (line.split() for line in lines if line.strip())}


@pytest.fixture(scope="module")
def task_data(shared_data):
    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = load_task_data(task, shared_data(task))
        return cache[task]
    return get


@pytest.mark.parametrize("task", ["sst5", "trec", "rte"])
@pytest.mark.parametrize("seed", SEEDS)
def test_generated_splits_reproduce_lm_bff_checksums(task_data, lm_bff_md5, task, seed):
    """LM-BFF's checksums are of its plain k-shot mode (whole test sets): every file it lists."""
    data = task_data(task)
    split = make_k_shot_split(data, 16, seed, full_test=True)
    listed = {name for name in lm_bff_md5 if name.startswith(f"{data.task.glue_dir_name}/16-{seed}/")}
    assert listed == {f"{data.task.glue_dir_name}/16-{seed}/{data.task.file_name(s)}" for s in split.lines}
    for name in split.lines:
        key = f"{data.task.glue_dir_name}/16-{seed}/{data.task.file_name(name)}"
        assert hashlib.md5(split.text(name).encode()).hexdigest() == lm_bff_md5[key], key


@pytest.mark.parametrize("task, n_test, n_per_label", [("sst5", 1000, 16), ("trec", 500, 16), ("rte", 277, 16)])
def test_counts_and_test_rule(task_data, task, n_test, n_per_label):
    data = task_data(task)
    split = make_k_shot_split(data, 16, 13)
    for name in ("train", "dev"):
        labels = [e.label for e in split.examples(name)]
        assert [labels.count(i) for i in range(data.task.num_labels)] == [n_per_label] * data.task.num_labels
    assert len(split.lines["test"]) == n_test
    if n_test < 1000:   # used whole, in file order
        assert split.lines["test"] == data.test_lines


def test_sst5_test_is_pandas_sample_of_1000_with_seed_42(task_data, shared_data):
    import pandas as pd

    data = task_data("sst5")
    assert len(data.test_lines) == 2210
    path = shared_data("original/sst-5/test.csv")
    expected = pd.read_csv(path, header=None).sample(n=1000, random_state=42).to_csv(header=False, index=False)
    for seed in (13, 87):   # the same 1,000 for every seed
        assert make_k_shot_split(data, 16, seed).text("test") == expected


def test_csv_examples_and_rte_pairs(task_data):
    trec = make_k_shot_split(task_data("trec"), 16, 13).examples("train")
    assert all(e.sentence2 is None and e.sentence for e in trec)
    rte = make_k_shot_split(task_data("rte"), 16, 13).examples("test")
    assert rte[0].sentence.startswith("Dana Reeve") and rte[0].sentence2 == "Christopher Reeve had an accident."
    assert get_task("rte").labels[rte[0].label] == "not_entailment"


@pytest.mark.parametrize("task", ["mnli", "snli"])
@pytest.mark.parametrize("k", [16, 512])
@pytest.mark.parametrize("seed", SEEDS)
def test_kshot_folders_read_as_is(task_data, lm_bff_md5, task, k, seed):
    data = task_data(task)
    spec = data.task
    split = make_k_shot_split(data, k, seed)
    folder = data.kshot_dir / f"{k}-{seed}"
    assert set(split.lines) == {s for s, _ in spec.split_files}
    for name, digest in split.sha256().items():   # the record's sha256 are the files' bytes
        file_bytes = (folder / spec.file_name(name)).read_bytes()
        assert digest == hashlib.sha256(file_bytes).hexdigest()
        key = f"{spec.glue_dir_name}/16-{seed}/{spec.file_name(name)}"
        if k == 16 and not name.startswith("test"):   # LM-BFF's test files are the whole dev sets
            assert hashlib.md5(file_bytes).hexdigest() == lm_bff_md5[key]
    for name in ("train", "dev"):
        labels = [e.label for e in split.examples(name)]
        assert [labels.count(i) for i in range(spec.num_labels)] == [k] * spec.num_labels
    for name in split.lines:
        if name.startswith("test"):
            assert len(split.lines[name]) == 1000
    example = split.examples("train")[0]
    assert example.sentence and example.sentence2


def test_kshot_root_and_task_folder_are_the_same(task_data, shared_data):
    assert load_task_data("mnli", shared_data("k-shot-1k-test")).kshot_dir == task_data("mnli").kshot_dir


def test_kshot_folder_identity_is_its_files(tmp_path, task_data):
    """A k-shot folder's data identity (grouping in reports, claims, the gate) is a manifest of its
    files' sha256: pinned for the shared copies, and changed by a one-byte edit of one file."""
    assert task_data("mnli").source_sha256 == {
        "k-shot-dir": "3748dbc04494eb66719556316726f59d96136da8a00bb7c9a8ab17400687e54d"}
    assert task_data("snli").source_sha256 == {
        "k-shot-dir": "f370cb9c87caec98cb5a873151238842bdef77b74399f64f6564a0195a71dbff"}
    source = task_data("snli").kshot_dir / "16-13"
    folder = tmp_path / "SNLI" / "16-13"
    folder.mkdir(parents=True)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    copy = load_task_data("snli", tmp_path).source_sha256
    test = folder / "test.tsv"
    test.write_bytes(test.read_bytes().replace(b"A ", b"a ", 1))
    assert load_task_data("snli", tmp_path).source_sha256 != copy


def test_kshot_folder_missing_seed(task_data):
    with pytest.raises(HarnessError, match=r"16-7 not found .*has: 16-13, 16-21"):
        make_k_shot_split(task_data("snli"), 16, 7)


def test_kshot_folder_wrong_count(tmp_path, task_data):
    source = task_data("mnli").kshot_dir / "16-13"
    folder = tmp_path / "MNLI" / "16-13"
    folder.mkdir(parents=True)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    train = (folder / "train.tsv").read_text().splitlines(keepends=True)
    (folder / "train.tsv").write_text("".join(train[:-1]))
    with pytest.raises(HarnessError, match=r"train.tsv: a k=16 split has 16 examples of each label"):
        make_k_shot_split(load_task_data("mnli", tmp_path), 16, 13)


def test_glue_format_mnli_originals(tmp_path, task_data):
    """MNLI from GLUE-format originals: dev sets over 1,000 lines are cut as MeZO does
    (np.random.seed(42); shuffle; first 1,000), the k-shot dev file is dev_matched.tsv."""
    spec = get_task("mnli")
    source = task_data("mnli").kshot_dir / "512-13"
    folder = tmp_path / "MNLI"
    folder.mkdir()
    (folder / "train.tsv").write_bytes((source / "train.tsv").read_bytes())
    test_lines = (source / "test_matched.tsv").read_text().splitlines(keepends=True)
    big = test_lines[1:] + test_lines[1:201]
    (folder / "dev_matched.tsv").write_text(test_lines[0] + "".join(big))
    (folder / "dev_mismatched.tsv").write_bytes((source / "test_mismatched.tsv").read_bytes())
    split = make_k_shot_split(load_task_data("mnli", tmp_path), 16, 21)
    expected = list(big)
    np.random.seed(42)
    np.random.shuffle(expected)
    assert list(split.lines["test"]) == expected[:1000]
    assert len(split.lines["test_mismatched"]) == 1000
    written = split.write(tmp_path / "out")
    assert sorted(p.name for p in written.values()) == sorted(name for _, name in spec.split_files)
    assert written["dev"].read_text().startswith(spec.header + "\n")
    assert written["test"].read_text().startswith(spec.test_header + "\n")


@pytest.mark.parametrize(
    "body, message",
    [
        ('1,good film\n7,bad film\n', r"train.csv line 2: label must be one of \['0', '1', '2', '3', '4'\], got '7'"),
        ('1,good film\n3\n', r"train.csv line 2: expected 2 comma-separated fields \(label, sentence\), got 1"),
        ('1,"good, film\n', r"train.csv: pandas cannot read it .*EOF inside string starting at row 0"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, body, message):
    folder = tmp_path / "sst-5"
    folder.mkdir()
    (folder / "train.csv").write_text(body)
    (folder / "test.csv").write_text("1,fine\n")
    with pytest.raises(HarnessError, match=message):
        load_task_data("sst5", tmp_path)


def test_csv_missing_label_and_too_few(tmp_path):
    folder = tmp_path / "trec"
    folder.mkdir()
    (folder / "test.csv").write_text("1,what ?\n")
    (folder / "train.csv").write_text("".join(f"{label},q{label} ?\n" for label in range(5)))
    with pytest.raises(HarnessError, match=r"train.csv: no example of label\(s\) \['5'\]"):
        load_task_data("trec", folder)
    (folder / "train.csv").write_text("".join(f"{label},q{label} {i} ?\n" for label in range(6) for i in range(3)))
    with pytest.raises(HarnessError, match=r"k=2 needs 4 training examples of label '0', the data has 3"):
        make_k_shot_split(load_task_data("trec", folder), 2, 13)


def test_rte_bad_label_names_line(tmp_path):
    folder = tmp_path / "RTE"
    folder.mkdir()
    header = "index\tsentence1\tsentence2\tlabel\n"
    (folder / "train.tsv").write_text(header + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    (folder / "dev.tsv").write_text(header + "0\ta\tb\tentailment\n")
    with pytest.raises(HarnessError, match=r"train.tsv line 3: label must be one of \['entailment', 'not_entailment'\], got 'maybe'"):
        load_task_data("rte", folder)


@pytest.mark.parametrize("task, source, names", [
    ("sst5", "original", ["dev.csv", "test.csv", "train.csv"]),
    ("mnli", "k-shot-1k-test", ["dev_matched.tsv", "test_matched.tsv", "test_mismatched.tsv", "train.tsv"]),
])
def test_cli_splits_writes_lm_bff_files(tmp_path, lm_bff_md5, shared_data, task, source, names):
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "harness.cli", "splits", "--task", task, "--k", "16", "--seed", "13",
                    "--data-dir", str(shared_data(source)), "--out", str(out)], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == names
    folder = get_task(task).glue_dir_name
    assert hashlib.md5((out / names[-1]).read_bytes()).hexdigest() == lm_bff_md5[f"{folder}/16-13/{names[-1]}"]
