"""Task data and the LM-BFF / MeZO k-shot splits.

The split is LM-BFF's `tools/generate_k_shot_data.py`, line for line: seed numpy's legacy
RNG with the seed, shuffle the training lines (header removed), group them by label in
order of first appearance, train = first k of each label, dev = the next k. The test set
is the task's GLUE dev file. Splits are kept as the raw TSV lines, so the files written
by `mezo-bench splits` are byte-identical to LM-BFF's and their sha256 can be compared.

Where the data comes from (`load_task_data`): a GLUE-format folder (train.tsv, dev.tsv with
the task's header) given as --data-dir or $MEZO_BENCH_DATA_DIR, either the task folder or a
GLUE root holding it; with neither, the `datasets` library loads the task's hub dataset
(`nyu-mll/glue` / `sst2`). Lines are kept byte for byte: in the GLUE release every SST-2
sentence ends in a space before the tab, and that space is kept, as the reference tokenizes it.
The sha256 of the source files and of every split file goes into the run record.

Labels: a line's label is its last tab-separated field with surrounding whitespace removed
(`label_of`; the one normalisation, so `" 1 "` is label `1` everywhere: validation, grouping
into the split, parsing). LM-BFF groups by `line.strip().split("\t")[-1]`, which is the same
label for every well-formed line and would make `" 1 "` a label of its own. The training file
must have every label of the task, and a k-shot split needs 2k examples of each.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.tasks.spec import SPLITS, Example, TaskSpec, get_task

DATA_DIR_ENV = "MEZO_BENCH_DATA_DIR"


@dataclass(frozen=True)
class TaskData:
    """A task's full training lines and test lines (raw TSV lines, header removed)."""

    task: TaskSpec
    train_lines: tuple[str, ...]
    test_lines: tuple[str, ...]
    source: str                     # "glue-dir:<path>" or "hf-datasets:<path>/<config>"
    source_sha256: dict[str, str]   # hash of the source train and test text

    def train_sentences(self) -> list[str]:
        return [line.rstrip("\n").split("\t")[0] for line in self.train_lines]


@dataclass(frozen=True)
class KShotSplit:
    task: TaskSpec
    k: int
    seed: int
    lines: dict[str, tuple[str, ...]]   # split name -> raw TSV lines

    def tsv(self, split: str) -> str:
        return self.task.header + "\n" + "".join(self.lines[split])

    def sha256(self) -> dict[str, str]:
        return {split: hashlib.sha256(self.tsv(split).encode("utf-8")).hexdigest() for split in SPLITS}

    def examples(self, split: str) -> list[Example]:
        return [_parse_line(line, self.task) for line in self.lines[split]]

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write train.tsv, dev.tsv, test.tsv (each atomically) and return their paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for split in SPLITS:
            written[split] = atomic_write_text(out_dir / f"{split}.tsv", self.tsv(split))
        return written


def label_of(line: str) -> str:
    """A TSV line's label: its last tab-separated field, surrounding whitespace removed."""
    return line.rstrip("\r\n").split("\t")[-1].strip()


def _parse_line(line: str, task: TaskSpec) -> Example:
    return Example(sentence=line.rstrip("\n").split("\t")[0], label=task.labels.index(label_of(line)))


def _read_glue_tsv(path: Path, task: TaskSpec) -> tuple[str, ...]:
    """Read a GLUE TSV, validate every line, and return the lines after the header."""
    if path.is_dir():
        raise HarnessError(f"data file {path} is a folder, not a TSV file")
    if not path.is_file():
        raise HarnessError(f"data file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as error:
        raise HarnessError(f"{path}: not UTF-8 text ({error})") from None
    if not lines or lines[0].rstrip("\r\n") != task.header:
        found = lines[0].rstrip("\r\n") if lines else "<empty file>"
        raise HarnessError(f"{path} line 1: expected header {task.header!r}, got {found!r}")
    n_fields = task.header.count("\t") + 1
    body = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\n").split("\t")
        if len(fields) != n_fields:
            raise HarnessError(f"{path} line {number}: expected {n_fields} tab-separated fields "
                               f"({task.header.replace(chr(9), ', ')}), got {len(fields)}")
        if label_of(line) not in task.labels:
            raise HarnessError(f"{path} line {number}: label must be one of {list(task.labels)}, "
                               f"got {fields[-1]!r}")
        body.append(line if line.endswith("\n") else line + "\n")
    if not body:
        raise HarnessError(f"{path}: no examples after the header")
    return tuple(body)


def _check_every_label(path: Path, lines: tuple[str, ...], task: TaskSpec) -> None:
    counts = {label: 0 for label in task.labels}
    for line in lines:
        counts[label_of(line)] += 1
    missing = [label for label, n in counts.items() if n == 0]
    if missing:
        raise HarnessError(f"{path}: no example of label(s) {missing}; task {task.name} has labels "
                           f"{list(task.labels)} (counts: {counts})")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_data_dir(data_dir: str | Path | None, task: TaskSpec) -> Path | None:
    """--data-dir, else $MEZO_BENCH_DATA_DIR, else None (meaning: use `datasets`).

    Accepts the task folder itself (holding train.tsv) or a GLUE root holding it.
    """
    origin = "--data-dir"
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir, origin = os.environ[DATA_DIR_ENV], f"${DATA_DIR_ENV}"
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise HarnessError(f"data directory {path} (from {origin}) is a file; give the folder holding "
                           f"train.tsv and dev.tsv")
    if not path.is_dir():
        raise HarnessError(f"data directory not found: {path} (from {origin})")
    if not (path / "train.tsv").exists() and (path / task.glue_dir_name / "train.tsv").exists():
        path = path / task.glue_dir_name
    return path


def load_task_data(task_name: str, data_dir: str | Path | None = None) -> TaskData:
    task = get_task(task_name)
    directory = resolve_data_dir(data_dir, task)
    if directory is None:
        return _load_with_datasets(task)
    train_path, test_path = directory / "train.tsv", directory / "dev.tsv"
    train_lines = _read_glue_tsv(train_path, task)
    _check_every_label(train_path, train_lines, task)
    return TaskData(
        task=task,
        train_lines=train_lines,
        test_lines=_read_glue_tsv(test_path, task),
        source=f"glue-dir:{directory.resolve()}",
        source_sha256={"train": _sha256_file(train_path), "test": _sha256_file(test_path)},
    )


def _load_with_datasets(task: TaskSpec) -> TaskData:
    path, config = task.hf_dataset
    try:
        import datasets

        dataset = datasets.load_dataset(path, config)
    except Exception as error:  # offline, missing package, hub errors: all mean "no data"
        raise HarnessError(
            f"no data directory given and loading {path}/{config} with the `datasets` library "
            f"failed ({type(error).__name__}: {error}). Pass --data-dir pointing to a GLUE "
            f"{task.glue_dir_name} folder (train.tsv, dev.tsv) or set ${DATA_DIR_ENV}") from None

    def as_lines(split: str) -> tuple[str, ...]:
        rows = dataset[split]
        return tuple(f"{sentence}\t{task.labels[label]}\n" for sentence, label in zip(rows["sentence"], rows["label"]))

    train_lines, test_lines = as_lines("train"), as_lines(task.hf_test_split)
    return TaskData(
        task=task,
        train_lines=train_lines,
        test_lines=test_lines,
        source=f"hf-datasets:{path}/{config}",
        source_sha256={name: hashlib.sha256("".join(lines).encode()).hexdigest()
                       for name, lines in (("train", train_lines), ("test", test_lines))},
    )


def make_k_shot_split(data: TaskData, k: int, seed: int) -> KShotSplit:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise HarnessError(f"k must be an integer >= 1, got {k!r}")
    lines = list(data.train_lines)
    # RandomState(seed) is the generator np.random.seed(seed) seeds: the same shuffle as
    # LM-BFF's global call, without touching global state.
    np.random.RandomState(seed).shuffle(lines)

    by_label: dict[str, list[str]] = {}   # in order of first appearance, as LM-BFF
    for line in lines:
        by_label.setdefault(label_of(line), []).append(line)
    for label in data.task.labels:
        if len(by_label.get(label, ())) < 2 * k:
            raise HarnessError(f"k={k} needs {2 * k} training examples of label {label!r}, "
                               f"the data has {len(by_label.get(label, ()))} ({data.source})")
    train = tuple(line for group in by_label.values() for line in group[:k])
    dev = tuple(line for group in by_label.values() for line in group[k:2 * k])
    return KShotSplit(task=data.task, k=k, seed=seed,
                      lines={"train": train, "dev": dev, "test": data.test_lines})
