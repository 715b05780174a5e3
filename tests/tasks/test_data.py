"""k-shot splits exactly as LM-BFF / MeZO generate them (on the real GLUE SST-2 files)."""

import hashlib

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.tasks.data import DATA_DIR_ENV, label_of, load_task_data, make_k_shot_split
from harness.tasks.spec import SPLITS

# sha256 of train.tsv / dev.tsv as `mezo-bench splits` writes them (GLUE layout with header): the
# sha256 of the split files MeZO's own generator wrote from the GLUE release (issue 10).
PINNED = {
    (16, 13): ("934595d497443cbea542f9b2762a0c69ca4c4059a627e350dc042293f47b3cc9",
               "976005c210e313cb41f8b86dc7c1d75dc652feaab9f86c17aa80305d7f74dd92"),
    (512, 87): ("5931f27b16ede6a549037943fc16e53b0bf7d462a7c18b4a2ffc010db5a42758",
                "381ad5fe7bfaaf5b1ee8f38a8bd3c5c7d1a24b6f79df1a71133cd11965b62ec5"),
}
GLUE_DEV_SHA256 = "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"   # = the test split of every seed
GLUE_TRAIN_SHA256 = "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"


@pytest.fixture(scope="module")
def sst2(sst2_dir):
    return load_task_data("sst2", sst2_dir)


def test_source_files_are_the_documented_glue_release(sst2):
    assert len(sst2.train_lines) == 67_349 and len(sst2.test_lines) == 872
    assert sst2.source_sha256 == {"train": GLUE_TRAIN_SHA256, "test": GLUE_DEV_SHA256}


def test_sentences_keep_glue_trailing_space(sst2):
    """GLUE's sentences end in a space before the tab; it is part of what the reference tokenizes."""
    split = make_k_shot_split(sst2, 16, 13)
    sentences = [example.sentence for example in split.examples("train")]
    assert all(sentence.endswith(" ") for sentence in sentences)
    assert split.lines["train"][0].endswith(" \t" + split.lines["train"][0].rstrip("\n").split("\t")[-1] + "\n")


@pytest.mark.parametrize("k", [16, 512])
def test_counts_balance_and_disjointness(sst2, k):
    split = make_k_shot_split(sst2, k, seed=13)
    for name in ("train", "dev"):
        labels = [e.label for e in split.examples(name)]
        assert len(labels) == 2 * k
        assert labels.count(0) == labels.count(1) == k
    assert not set(split.lines["train"]) & set(split.lines["dev"])
    assert len(split.examples("test")) == 872


@pytest.mark.parametrize("k, seed", sorted(PINNED))
def test_pinned_split_hashes(sst2, k, seed):
    hashes = make_k_shot_split(sst2, k, seed).sha256()
    assert (hashes["train"], hashes["dev"]) == PINNED[(k, seed)]
    assert hashes["test"] == GLUE_DEV_SHA256   # the test split is GLUE dev, byte for byte


def test_same_as_lm_bff_global_numpy_seeding(sst2):
    """LM-BFF calls np.random.seed(seed); np.random.shuffle(lines); then groups by label."""
    lines = list(sst2.train_lines)
    np.random.seed(21)
    np.random.shuffle(lines)
    by_label = {}
    for line in lines:
        by_label.setdefault(line.strip().split("\t")[-1], []).append(line)
    expected_train = [line for group in by_label.values() for line in group[:16]]
    expected_dev = [line for group in by_label.values() for line in group[16:32]]
    split = make_k_shot_split(sst2, 16, seed=21)
    assert list(split.lines["train"]) == expected_train
    assert list(split.lines["dev"]) == expected_dev


def test_seeds_give_different_splits(sst2):
    assert make_k_shot_split(sst2, 16, 13).sha256()["train"] != make_k_shot_split(sst2, 16, 42).sha256()["train"]


def test_written_files_hash_to_the_recorded_values(sst2, tmp_path):
    split = make_k_shot_split(sst2, 16, 13)
    written = split.write(tmp_path / "out")
    for name in SPLITS:
        assert hashlib.sha256(written[name].read_bytes()).hexdigest() == split.sha256()[name]
        assert written[name].read_text().startswith("sentence\tlabel\n")


def test_glue_root_is_accepted(sst2_dir):
    assert load_task_data("sst2", sst2_dir.parent).source == load_task_data("sst2", sst2_dir).source


def test_env_var_supplies_the_data_dir(sst2_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(sst2_dir))
    assert load_task_data("sst2").source.startswith("glue-dir:")


def write_tsv(folder, train_body, dev_body="good film\t1\nbad film\t0\n", header="sentence\tlabel\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(header + train_body)
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + dev_body)
    return folder


def test_missing_data_dir(tmp_path):
    with pytest.raises(HarnessError, match=r"data directory not found: .*nowhere \(from --data-dir\)"):
        load_task_data("sst2", tmp_path / "nowhere")


def test_missing_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(HarnessError, match=r"data file not found: .*train.tsv"):
        load_task_data("sst2", tmp_path / "d")


@pytest.mark.parametrize(
    "header, body, message",
    [
        ("sentence\tlabel\n", "good film\t1\nno label here\n", r"train.tsv line 3: expected 2 tab-separated fields"),
        ("sentence\tlabel\n", "good film\t1\nbad film\t7\n", r"train.tsv line 3: label must be one of \['0', '1'\], got '7'"),
        ("text\tclass\n", "good film\t1\n", r"train.tsv line 1: expected header 'sentence\\tlabel'"),
        ("sentence\tlabel\n", "", r"train.tsv: no examples after the header"),
    ],
)
def test_malformed_tsv_names_file_and_line(tmp_path, header, body, message):
    folder = write_tsv(tmp_path / "bad", body, header=header)
    with pytest.raises(HarnessError, match=message):
        load_task_data("sst2", folder)


def test_too_few_examples_for_k(tmp_path):
    folder = write_tsv(tmp_path / "small", "a\t0\nb\t1\nc\t0\nd\t1\n")
    with pytest.raises(HarnessError, match=r"k=2 needs 4 training examples of label '[01]', the data has 2"):
        make_k_shot_split(load_task_data("sst2", folder), 2, 13)


def test_bad_k():
    with pytest.raises(HarnessError, match="k must be an integer >= 1, got 0"):
        make_k_shot_split(None, 0, 13)


def test_without_a_data_dir_the_datasets_library_is_used(monkeypatch):
    import datasets

    rows = {"train": {"sentence": ["good", "bad"], "label": [1, 0]},
            "validation": {"sentence": ["fine"], "label": [1]}}
    calls = []
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: calls.append(args) or rows)
    data = load_task_data("sst2")
    assert calls == [("nyu-mll/glue", "sst2")]
    assert data.train_lines == ("good\t1\n", "bad\t0\n") and data.test_lines == ("fine\t1\n",)
    assert data.source == "hf-datasets:nyu-mll/glue/sst2"
    assert data.source_sha256 == {"train": hashlib.sha256(b"good\t1\nbad\t0\n").hexdigest(),
                                  "test": hashlib.sha256(b"fine\t1\n").hexdigest()}


def test_datasets_mnli_has_both_test_sets_hashed_and_labels_mapped(monkeypatch):
    import datasets

    def split(premises, labels):
        return {"premise": premises, "hypothesis": ["H."] * len(premises), "label": labels}

    rows = {"train": split(["A.", "B.", "C."], [0, 1, 2]), "validation_matched": split(["D."], [2]),
            "validation_mismatched": split(["E."], [1])}
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: rows)
    data = load_task_data("mnli")
    assert [label_of(line, data.task) for line in data.train_lines] == ["entailment", "neutral", "contradiction"]
    assert [label_of(line, data.task) for line in data.test_lines] == ["contradiction"]
    assert set(data.extra_test_lines) == {"test_mismatched"}
    assert {name: digest == hashlib.sha256(b"").hexdigest() for name, digest in data.source_sha256.items()} == {
        "train": False, "test": False, "test_mismatched": False}


def test_datasets_failure_says_how_to_give_data(monkeypatch):
    import datasets

    def offline(*args):
        raise ConnectionError("no network")

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HarnessError, match=r"ConnectionError: no network\). Pass --data-dir"):
        load_task_data("sst2")
