"""Fault injection, bad input: every case gives one `mezo-bench: error:` line naming the problem,
exit 2, before any model is built, and nothing written (README: What we promise under faults)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.protocol.loading import load_protocol
from harness.tasks.data import load_task_data, make_k_shot_split


def write_glue(folder: Path, train: str, dev: str = "good\t1\nbad\t0\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + train)
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + dev)
    return folder


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a run gets as far as building a model (bad input must end before)."""
    import harness.recipes.run

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built for a run with bad input")

    monkeypatch.setattr(harness.recipes.run, "_setup_model", refuse)


@pytest.fixture
def places(sst2_protocol, sst2_dir, tmp_path):
    """Placeholders of the table below and what they stand for (built on first use)."""
    def protocol_with(name: str, old: str, new: str, lock: bool = True) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(sst2_protocol.read_text().replace('name = "sst2-mezo"', f'name = "sst2-mezo-{name}"')
                        .replace(old, new))
        if lock:   # a protocol that fails to load cannot be locked
            load_protocol(path).write_lock()
        return path

    def edited_copy() -> Path:   # a copy of the shipped protocol, changed but keeping its name and version
        path = tmp_path / "copy" / "protocol.toml"
        path.parent.mkdir()
        path.write_text(sst2_protocol.read_text().replace("steps = 400\neval_every = 100\n", "steps = 40\neval_every = 10\n", 1))
        shutil.copy(sst2_protocol.with_name("protocol.lock.json"), path.with_name("protocol.lock.json"))
        return path

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    makers = {
        "{protocol}": lambda: sst2_protocol,
        "{data}": lambda: sst2_dir,
        "{out}": lambda: tmp_path / "out",
        "{tmp}": lambda: tmp_path,
        "{file}": lambda: a_file,
        "{bpe2000}": lambda: protocol_with("bpe2000", 'tokenizer = "trained-bpe:4096"', 'tokenizer = "trained-bpe:2000"'),
        "{edited_copy}": edited_copy,
        "{malformed}": lambda: write_glue(tmp_path / "malformed", "good\t1\nno label\n"),
        "{one_label}": lambda: write_glue(tmp_path / "one-label", "".join(f"fine film {i}\t1\n" for i in range(80))),
        "{few}": lambda: write_glue(tmp_path / "few", "".join(f"film {i}\t{i % 2}\n" for i in range(20))),
        "{tiny}": lambda: write_glue(tmp_path / "tiny", "".join(f"a film {i}\t{i % 2}\n" for i in range(70))),
        "{bench_json}": lambda: Path(__file__).parent / "no-such.json",
        "{bad_part}": lambda: protocol_with("bad-part", '"{sentence}", " It was"', '"{sent+_0}", " It was"', lock=False),
        "{two_sentences}": lambda: protocol_with("two", '"{sentence}", " It was"', '"{sentence}", "{+sent_1}", " It was"',
                                                lock=False),
        "{max16}": lambda: protocol_with("max16", "max_length = 128", "max_length = 16"),
    }

    def fill(argv: list[str]) -> list[str]:
        filled = []
        for arg in argv:
            for placeholder, make in makers.items():
                if placeholder in arg:
                    arg = arg.replace(placeholder, str(make()))
            filled.append(arg)
        return filled
    return fill


RUN = ["run", "--no-progress", "--seed", "13", "--protocol", "{protocol}", "--profile", "smoke", "--data-dir", "{data}",
       "--out", "{out}"]
BENCH = ["bench", "--no-progress", "--protocol", "{protocol}", "--profile", "smoke", "--variant", "hf-mlm",
         "--data-dir", "{data}", "--out", "{out}"]

# (argv, the message's distinctive part). {out} must stay unwritten; see `places` for the rest.
CASES = [
    # options and the protocol
    (RUN + ["--variant", "hf-nope"], "unknown variant 'hf-nope'; known variants: hf-cls, hf-cls-acc, hf-ft, hf-ft-lora"),
    (RUN + ["--k", "0"], "argument --k: must be an integer >= 1, got 0"),
    (RUN + ["--k", "32"], "--k 32 is not in profile 'smoke' variant 'hf-mlm'; allowed: [16]"),
    (RUN + ["--batch-size", "3"], "--batch-size 3 is not in profile 'smoke' variant 'hf-mlm'; allowed: [64]"),
    (RUN + ["--profile", "fast"], "unknown profile 'fast'"),
    (RUN + ["--eps", "0.1"], "--eps 0.1 is not in profile 'smoke' variant 'hf-mlm'; allowed: [0.001]"),
    (RUN + ["--weight-decay", "0.5"], "--weight-decay 0.5 is not in profile 'smoke' variant 'hf-mlm'; allowed: [0.0]"),
    (RUN + ["--eps", "big"], "argument --eps: invalid float value: 'big'"),
    (BENCH + ["--protocol", "{tmp}/none.toml"], "protocol file not found"),
    (["bench", "--task", "nope", "--out", "{out}"], "--task 'nope': no protocol"),
    (BENCH + ["--task", "rte"], "argument --task: not allowed with argument --protocol"),
    # templates: LM-BFF's sentence forms only, the task's sentences, a mask the cut at max_length keeps
    (RUN + ["--protocol", "{bad_part}"], "'sent+' is not one of LM-BFF's sentence forms"),
    (RUN + ["--protocol", "{two_sentences}"], "must use the task's 1 sentence(s) (sst2 is a single-sentence task)"),
    (RUN + ["--protocol", "{max16}"], "and cutting it to max_length=16 cuts its <mask>"),
    (BENCH + ["--protocol", "{max16}"], "LM-BFF stops there too. Set first_sent_limit"),
    # protocol identity: a changed copy may not keep the shipped protocol's name and version
    (RUN + ["--protocol", "{edited_copy}"], "carries the name 'sst2-mezo' of"),
    (BENCH + ["--protocol", "{edited_copy}"], "give the changed protocol a new `name`"),
    (["protocol", "--protocol", "{edited_copy}", "--lock"], "give your protocol a new `name` before locking it"),
    # output roots: a file, under a file, not writable
    (RUN + ["--out", "{file}"], "--out {file} is a file, not a folder"),
    (RUN + ["--out", "{file}/results"], "is under {file}, which is a file"),
    (RUN + ["--out", "/proc/mezo-bench-none/results"], "is not writable"),
    (BENCH + ["--out", "{file}"], "--out {file} is a file, not a folder"),
    (BENCH + ["--out", "/proc/mezo-bench-none"], "is not writable"),
    (["splits", "--k", "16", "--seed", "13", "--data-dir", "{data}", "--out", "{file}"], "is a file, not a folder"),
    (["perf-store", "{bench_json}", "--out", "{file}"], "is a file, not a folder"),
    # data: missing, a file, malformed, too few labels or examples
    (RUN + ["--data-dir", "{tmp}/no-such-dir"], "data directory not found"),
    (RUN + ["--data-dir", "{file}"], "data directory {file} (from --data-dir) is a file"),
    (RUN + ["--data-dir", "{malformed}"], "train.tsv line 3: expected 2 tab-separated fields"),
    (RUN + ["--data-dir", "{one_label}"], "train.tsv: no example of label(s) ['0']; task sst2 has labels ['0', '1']"),
    (BENCH + ["--data-dir", "{one_label}"], "no example of label(s) ['0']"),
    (BENCH + ["--data-dir", "{few}"], "k=16 needs 32 training examples of label '0', the data has 10"),
    (["splits", "--k", "16", "--seed", "13", "--data-dir", "{one_label}", "--out", "{out}"], "no example of label(s) ['0']"),
    (["splits", "--k", "16", "--seed", "13", "--data-dir", "{tmp}/no-such-dir", "--out", "{out}"],
     "data directory not found"),
    # label words: named with their pieces; a tokenizer trained on too little data says so
    (RUN + ["--protocol", "{bpe2000}"], "label word ' terrible' must be a single token"),
    (BENCH + ["--protocol", "{bpe2000}"], "label word ' terrible' must be a single token"),
    (RUN + ["--data-dir", "{tiny}"], "learns its vocabulary from the task's 70 training sentences"),
    (BENCH + ["--data-dir", "{tiny}"], "'terrible' occurs 0 time(s), 'great' occurs 0 time(s)"),
    # readers
    (["report", "--results", "{tmp}/no-results", "--out", "{out}"], "results not found"),
    (["claims", "--results", "{tmp}/no-results"], "results not found"),
    (["reconstruct", "{tmp}/none.json", "--out", "{out}"], "not a readable run record"),
    (["gate", "--baseline", "{tmp}/no-results", "--candidate", "{tmp}/no-results", "--out", "{out}"],
     "results not found"),
    (["perf-store", "{bench_json}", "--out", "{out}"], "not a readable pytest-benchmark JSON file"),
    (["status", "--protocol", "{protocol}", "--profile", "smoke", "--results", "{file}"], "--results {file} is a file"),
    (["plan", "--protocol", "{protocol}", "--perf", "{file}"], "--perf {file} is a file, not a folder"),
    (["plan", "--protocol", "{protocol}", "--profile", "nope"], "unknown profile 'nope'"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[f"{argv[0]}-{i}" for i, (argv, _) in enumerate(CASES)])
def test_bad_input_gives_one_clear_error_and_writes_nothing(argv, message, places, tmp_path, cli, no_model):
    code, out, err = cli(*places(argv))
    assert code == 2, err
    assert out == ""
    assert places([message])[0] in err
    assert re.search(r"^mezo-bench( [a-z-]+)?: error: ", err, re.M)    # ours, or argparse's for an option value
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob(".mezo-bench-probe-*"))


def test_a_label_is_compared_after_stripping_its_whitespace(tmp_path):
    """' 1 ' is label 1 in validation, grouping into the split and parsing (one normalisation)."""
    lines = "".join(f"film {i}\t{' 1 ' if i % 4 == 1 else i % 2}\n" for i in range(40))
    data = load_task_data("sst2", write_glue(tmp_path / "spaced", lines))
    split = make_k_shot_split(data, 10, 13)
    assert [e.label for e in split.examples("train")].count(1) == 10    # not a third label ' 1'
    assert {e.label for e in split.examples("dev")} == {0, 1}
    with pytest.raises(HarnessError, match="label must be one of"):
        load_task_data("sst2", write_glue(tmp_path / "other", "film\t2\n"))


def test_an_unchanged_copy_of_a_shipped_protocol_is_the_same_protocol(sst2_protocol, tmp_path):
    copy = tmp_path / "protocol.toml"
    shutil.copy(sst2_protocol, copy)          # no lock beside it: the shipped lock is its lock
    protocol = load_protocol(copy)
    protocol.check_lock()
    assert protocol.lock_path == sst2_protocol.with_name("protocol.lock.json")
    assert protocol.settings_hash("smoke", "hf-mlm") == load_protocol(sst2_protocol).settings_hash("smoke", "hf-mlm")


def test_a_renamed_copy_is_a_new_identity_locked_beside_it(sst2_protocol, tmp_path):
    copy = tmp_path / "protocol.toml"
    copy.write_text(sst2_protocol.read_text().replace('name = "sst2-mezo"', 'name = "my-sst2"')
                    .replace("steps = 400\neval_every = 100\n", "steps = 40\neval_every = 10\n", 1))
    protocol = load_protocol(copy)
    protocol.write_lock()
    protocol.check_lock()
    assert json.loads(copy.with_name("protocol.lock.json").read_text())["3"]
