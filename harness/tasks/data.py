"""Task data and the LM-BFF / MeZO k-shot splits.

The split is LM-BFF's `tools/generate_k_shot_data.py` (MeZO's copy, mode `k-shot-1k-test`),
line for line: seed numpy's legacy RNG with the seed, shuffle the training lines (GLUE TSV:
header removed; CSV: the rows pandas reads), group them by label in order of first
appearance, train = first k of each label, dev = the next k. The test set is the task's GLUE
dev file(s) (MNLI: dev_matched and dev_mismatched) or, for the CSV tasks, `test.csv`; a test
set over 1,000 examples is cut to 1,000 as MeZO does (TSV: numpy seed 42, shuffle, first
1,000; CSV: `DataFrame.sample(n=1000, random_state=42)`). Splits are kept as raw lines (TSV)
or as the CSV records pandas' `to_csv(header=False, index=False)` writes, so the files written
by `mezo-bench splits` are byte-identical to LM-BFF's and their sha256 can be compared.

Where the data comes from (`load_task_data`), --data-dir or $MEZO_BENCH_DATA_DIR, either the
task folder or a root holding it (`TaskSpec.glue_dir_name`):
- an originals folder: GLUE TSVs (SST-2, RTE; MNLI/SNLI in GLUE format) or LM-BFF's
  `data/original/<task>` CSVs (sst-5, trec: no header, `label,sentence`), from which splits
  are generated;
- a generated k-shot folder in LM-BFF's layout, `<TASK>/<k>-<seed>/` with LM-BFF's file names
  (`TaskSpec.split_files`), from which a split is read as is (its sha256 are its files' bytes);
- with neither, the `datasets` library loads the task's hub dataset (not byte-identical to
  LM-BFF's files; lines are built in the task's file layout).
TSV lines are kept byte for byte: in the GLUE release every SST-2 sentence ends in a space
before the tab, and that space is kept, as the reference tokenizes it. The sha256 of the source
files and of every split file goes into the run record.

Labels: a line's label is its label field (TSV: the last tab-separated field, as LM-BFF's
`get_label`; CSV: the first) with surrounding whitespace removed (`label_of`; the one
normalisation, so `" 1 "` is label `1` everywhere: validation, grouping into the split,
parsing). LM-BFF groups by `line.strip().split("\t")[-1]`, which is the same label for every
well-formed line and would make `" 1 "` a label of its own. The training file must have every
label of the task, and a k-shot split needs 2k examples of each; a k-shot folder's train and
dev files must have exactly k of each.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.tasks.spec import Example, TaskSpec, get_task

DATA_DIR_ENV = "MEZO_BENCH_DATA_DIR"
TEST_LIMIT = 1000           # MeZO's k-shot-1k-test: larger test sets are sampled to 1,000 ...
TEST_SEED = 42              # ... with seed 42
_KSHOT_DIR = re.compile(r"^(\d+)-(\d+)$")


@dataclass(frozen=True)
class TaskData:
    """A task's full training lines and test lines (raw TSV lines without the header, or CSV
    records as pandas writes them)."""

    task: TaskSpec
    train_lines: tuple[str, ...]
    test_lines: tuple[str, ...]
    source: str                     # "glue-dir:<path>", "csv-dir:<path>", "k-shot-dir:<path>" or "hf-datasets:<path>/<config>"
    source_sha256: dict[str, str]   # sha256 of the source train and test files (a k-shot folder: of its manifest)
    extra_test_lines: dict[str, tuple[str, ...]] = field(default_factory=dict)  # MNLI: test_mismatched
    kshot_dir: Path | None = None   # a k-shot folder: splits are read from <kshot_dir>/<k>-<seed>/

    def train_sentences(self) -> list[str]:
        """Every text of the training lines (pair tasks: sentence1 then sentence2 of each)."""
        texts = []
        for line in self.train_lines:
            example = _parse_line(line, self.task)
            texts.append(example.sentence)
            if example.sentence2 is not None:
                texts.append(example.sentence2)
        return texts


@dataclass(frozen=True)
class KShotSplit:
    task: TaskSpec
    k: int
    seed: int
    lines: dict[str, tuple[str, ...]]   # split name -> raw lines (TSV) or records (CSV), no header

    def text(self, split: str) -> str:
        """The split file's exact text: the header (TSV) and the lines."""
        header = self.task.header_of(split)
        return (header + "\n" if header else "") + "".join(self.lines[split])

    def tsv(self, split: str) -> str:
        return self.text(split)

    def sha256(self) -> dict[str, str]:
        return {split: hashlib.sha256(self.text(split).encode("utf-8")).hexdigest() for split in self.lines}

    def examples(self, split: str) -> list[Example]:
        return [_parse_line(line, self.task) for line in self.lines[split]]

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write the split files under LM-BFF's names (each atomically) and return their paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return {split: atomic_write_text(out_dir / self.task.file_name(split), self.text(split))
                for split in self.lines}


def _fields(line: str, task: TaskSpec | None) -> list[str]:
    if task is not None and task.file_format == "csv":
        return next(csv.reader(io.StringIO(line, newline="")), [])
    return line.rstrip("\r\n").split("\t")


def label_of(line: str, task: TaskSpec | None = None) -> str:
    """A line's label: its label field (TSV: the last tab-separated field; CSV: the task's label
    column), surrounding whitespace removed."""
    fields = _fields(line, task)
    index = task.label_field if task is not None else -1
    return fields[index].strip() if fields else ""


def _parse_line(line: str, task: TaskSpec) -> Example:
    fields = _fields(line, task) if task.file_format == "csv" else line.rstrip("\n").split("\t")
    label = task.labels.index(label_of(line, task))
    sentence2 = fields[task.text_fields[1]] if task.is_pair else None
    return Example(sentence=fields[task.text_fields[0]], label=label, sentence2=sentence2)


def _csv_record(values) -> str:
    """One row as pandas' `to_csv(header=False, index=False)` writes it: the csv module with
    QUOTE_MINIMAL, '"' doubled, '\n' line ends, missing values (NaN) as empty fields."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", delimiter=",", quoting=csv.QUOTE_MINIMAL,
               doublequote=True, quotechar='"', escapechar=None).writerow(
        ["" if value is None or (isinstance(value, float) and value != value) else value for value in values])
    return buffer.getvalue()


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise HarnessError(f"data file {path} is a folder, not a {path.suffix[1:].upper() or 'data'} file")
    if not path.is_file():
        raise HarnessError(f"data file not found: {path}")


def _read_text(path: Path) -> str:
    """The file's exact text (no newline translation)."""
    _check_file(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise HarnessError(f"{path}: not UTF-8 text ({error})") from None


def _check_label(path: Path, where: str, label: str, raw: str, task: TaskSpec) -> None:
    if label not in task.labels:
        raise HarnessError(f"{path} {where}: label must be one of {list(task.labels)}, got {raw!r}")


def _validate_tsv(path: Path, lines: list[str], task: TaskSpec, header: str) -> tuple[str, ...]:
    """Check the header and every line of a TSV (lines with their ends); return the lines after it."""
    if not lines or lines[0].rstrip("\r\n") != header:
        found = lines[0].rstrip("\r\n") if lines else "<empty file>"
        raise HarnessError(f"{path} line 1: expected header {header!r}, got {found!r}")
    n_fields = header.count("\t") + 1
    allowed = task.field_counts or (n_fields,)
    expected = f"{allowed[0]}" if len(allowed) == 1 else f"{allowed[0]} to {allowed[-1]}"
    names = header.replace("\t", ", ") if n_fields <= 4 else f"header {header!r}"
    for number, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\n").split("\t")
        if len(fields) not in allowed:
            raise HarnessError(f"{path} line {number}: expected {expected} tab-separated fields "
                               f"({names}), got {len(fields)}")
        _check_label(path, f"line {number}", label_of(line), fields[-1], task)
    if len(lines) < 2:
        raise HarnessError(f"{path}: no examples after the header")
    return tuple(lines[1:])


def _read_glue_tsv(path: Path, task: TaskSpec, header: str | None = None) -> tuple[str, ...]:
    """Read a GLUE TSV as LM-BFF does (text mode), validate every line, and return the lines
    after the header."""
    _check_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as error:
        raise HarnessError(f"{path}: not UTF-8 text ({error})") from None
    body = _validate_tsv(path, lines, task, task.header if header is None else header)
    return tuple(line if line.endswith("\n") else line + "\n" for line in body)


def _validate_csv(path: Path, text: str, task: TaskSpec) -> list[list[str]]:
    """Check every record of a headerless `label,sentence` CSV, naming the line; return the records."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        for record in reader:
            if not record:
                continue                        # blank line: pandas skips it too
            where = f"line {reader.line_num}"
            if len(record) != 2:
                raise HarnessError(f"{path} {where}: expected 2 comma-separated fields (label, sentence), "
                                   f"got {len(record)}")
            _check_label(path, where, record[task.label_field].strip(), record[task.label_field], task)
            records.append(record)
    except csv.Error as error:
        raise HarnessError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
    if not records:
        raise HarnessError(f"{path}: no examples")
    return records


def _read_csv(path: Path, task: TaskSpec) -> tuple[str, ...]:
    """Read an LM-BFF original CSV as the reference does (`pd.read_csv(path, header=None)`, then
    its rows) after validating it; return each row as pandas writes it back."""
    import pandas as pd

    records = _validate_csv(path, _read_text(path), task)
    try:
        rows = pd.read_csv(path, header=None).values.tolist()
    except Exception as error:  # pandas' parser errors name the line
        raise HarnessError(f"{path}: pandas cannot read it ({type(error).__name__}: {error})") from None
    if len(rows) != len(records):
        raise HarnessError(f"{path}: pandas reads {len(rows)} rows, the CSV has {len(records)} records")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row[task.label_field], (int, np.integer)):
            raise HarnessError(f"{path} row {number}: label {row[task.label_field]!r} is not an integer")
    return tuple(_csv_record(row) for row in rows)


def _read_source(path: Path, task: TaskSpec, split: str) -> tuple[str, ...]:
    if task.file_format == "csv":
        return _read_csv(path, task)
    return _read_glue_tsv(path, task, task.header_of(split))


def _check_every_label(path: Path, lines: tuple[str, ...], task: TaskSpec) -> None:
    counts = {label: 0 for label in task.labels}
    for line in lines:
        counts[label_of(line, task)] += 1
    missing = [label for label, n in counts.items() if n == 0]
    if missing:
        raise HarnessError(f"{path}: no example of label(s) {missing}; task {task.name} has labels "
                           f"{list(task.labels)} (counts: {counts})")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kshot_folders(path: Path) -> list[Path]:
    """The `<k>-<seed>` folders under a k-shot task folder, ordered by (k, seed)."""
    if not path.is_dir():
        return []
    found = [child for child in path.iterdir() if child.is_dir() and _KSHOT_DIR.match(child.name)]
    return sorted(found, key=lambda child: tuple(int(n) for n in _KSHOT_DIR.match(child.name).groups()))


def _train_file(task: TaskSpec) -> str:
    return dict(task.original_files)["train"]


def resolve_data_dir(data_dir: str | Path | None, task: TaskSpec) -> Path | None:
    """--data-dir, else $MEZO_BENCH_DATA_DIR, else None (meaning: use `datasets`).

    Accepts the task folder itself (an originals folder holding the training file, or a k-shot
    folder holding `<k>-<seed>/` folders) or a root holding it under `task.glue_dir_name`.
    """
    origin = "--data-dir"
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir, origin = os.environ[DATA_DIR_ENV], f"${DATA_DIR_ENV}"
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    train = _train_file(task)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"data directory {path} (from {origin}) is a file; give the folder holding "
                           f"{' and '.join(name for _, name in task.original_files)} or a k-shot folder")
    if not path.is_dir():
        raise HarnessError(f"data directory not found: {path} (from {origin})")
    if not (path / train).exists() and not _kshot_folders(path):
        inner = path / task.glue_dir_name
        if (inner / train).exists() or _kshot_folders(inner):
            path = inner
    return path


def load_task_data(task_name: str, data_dir: str | Path | None = None) -> TaskData:
    task = get_task(task_name)
    directory = resolve_data_dir(data_dir, task)
    if directory is None:
        return _load_with_datasets(task)
    if not (directory / _train_file(task)).exists() and _kshot_folders(directory):
        return _load_kshot_dir(task, directory)
    paths = {split: directory / name for split, name in task.original_files}
    train_lines = _read_source(paths["train"], task, "train")
    _check_every_label(paths["train"], train_lines, task)
    tests = {split: _read_source(path, task, split) for split, path in paths.items() if split != "train"}
    kind = "csv-dir" if task.file_format == "csv" else "glue-dir"
    return TaskData(
        task=task,
        train_lines=train_lines,
        test_lines=tests.pop("test"),
        extra_test_lines=tests,
        source=f"{kind}:{directory.resolve()}",
        source_sha256={split: _sha256_file(path) for split, path in paths.items()},
    )


def _load_kshot_dir(task: TaskSpec, directory: Path) -> TaskData:
    """A generated k-shot folder: the training lines are those of every `<k>-<seed>/` train file
    (in order, each once; what a tokenizer may be trained on), the test lines the first folder's."""
    folders = _kshot_folders(directory)
    seen: dict[str, None] = {}
    for folder in folders:
        seen.update(dict.fromkeys(_read_kshot_file(folder, task, "train")))
    first = folders[0]
    return TaskData(
        task=task,
        train_lines=tuple(seen),
        test_lines=_read_kshot_file(first, task, "test"),
        source=f"k-shot-dir:{directory.resolve()}",
        source_sha256={"k-shot-dir": _kshot_manifest_sha256(task, folders)},
        kshot_dir=directory,
    )


def _kshot_manifest_sha256(task: TaskSpec, folders: list[Path]) -> str:
    """The identity of a k-shot folder's content: sha256 over `<k>-<seed>/<file> <sha256>` lines of
    every split file, so runs from different generated folders never group together."""
    manifest = "".join(f"{folder.name}/{name} {_sha256_file(folder / name)}\n"
                       for folder in folders for _, name in task.split_files if (folder / name).is_file())
    return hashlib.sha256(manifest.encode()).hexdigest()


def _read_kshot_file(folder: Path, task: TaskSpec, split: str) -> tuple[str, ...]:
    """A k-shot split file read as is: its lines (TSV, header removed) or records (CSV) such that
    header + lines is the file's exact text."""
    path = folder / task.file_name(split)
    text = _read_text(path)
    if task.file_format == "csv":
        lines = tuple(_csv_record(record) for record in _validate_csv(path, text, task))
        if "".join(lines) != text:
            raise HarnessError(f"{path}: not written as pandas' to_csv(header=False, index=False) writes "
                               f"(quoting, line ends or blank lines differ)")
        return lines
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    body = _validate_tsv(path, lines, task, task.header_of(split))
    if task.header_of(split) + "\n" + "".join(body) != text:
        raise HarnessError(f"{path} line 1: the header line must end in '\\n' only")
    return body


def _read_kshot_split(data: TaskData, k: int, seed: int) -> KShotSplit:
    task = data.task
    folder = data.kshot_dir / f"{k}-{seed}"
    if not folder.is_dir():
        have = ", ".join(child.name for child in _kshot_folders(data.kshot_dir))
        raise HarnessError(f"k-shot folder {folder} not found (k={k}, seed={seed}); {data.kshot_dir} has: {have}")
    lines = {split: _read_kshot_file(folder, task, split) for split, _ in task.split_files}
    for split in ("train", "dev"):
        counts = {label: 0 for label in task.labels}
        for line in lines[split]:
            counts[label_of(line, task)] += 1
        if any(n != k for n in counts.values()):
            raise HarnessError(f"{folder / task.file_name(split)}: a k={k} split has {k} examples of each "
                               f"label, this file has {counts}")
    return KShotSplit(task=task, k=k, seed=seed, lines=lines)


def _load_with_datasets(task: TaskSpec) -> TaskData:
    path, config = task.hf_dataset
    try:
        import datasets

        dataset = datasets.load_dataset(path, config) if config is not None else datasets.load_dataset(path)
    except Exception as error:  # offline, missing package, hub errors: all mean "no data"
        files = ", ".join(name for _, name in task.original_files)
        raise HarnessError(
            f"no data directory given and loading {path}/{config} with the `datasets` library "
            f"failed ({type(error).__name__}: {error}). Pass --data-dir pointing to a "
            f"{task.glue_dir_name} folder ({files}) or set ${DATA_DIR_ENV}") from None

    names = task.hf_label_names or task.labels

    def as_lines(hub_split: str, split: str) -> tuple[str, ...]:
        rows = dataset[hub_split]
        columns = [rows[name] for name in task.hf_text_columns]
        header = task.header_of(split).split("\t")
        lines = []
        for index, (label, *texts) in enumerate(zip(rows[task.hf_label_column], *columns)):
            if not 0 <= label < len(names):
                continue                        # SNLI's -1: no gold label (GLUE's SNLI drops them)
            if task.file_format == "csv":
                lines.append(_csv_record([names[label], texts[0]]))
                continue
            fields = [""] * len(header)
            if header[0] == "index":
                fields[0] = str(index)
            for position, text in zip(task.text_fields, texts):
                fields[position] = text
            fields[-1] = names[label]
            lines.append("\t".join(fields) + "\n")
        return tuple(lines)

    sources = {"train": as_lines("train", "train"), "test": as_lines(task.hf_test_split, "test")}
    sources.update({split: as_lines(hub_split, split) for split, hub_split in task.hf_extra_test_splits})
    extra_tests = {name: lines for name, lines in sources.items() if name not in ("train", "test")}
    return TaskData(
        task=task,
        train_lines=sources["train"],
        test_lines=sources["test"],
        extra_test_lines=extra_tests,
        source=f"hf-datasets:{path}/{config}" if config is not None else f"hf-datasets:{path}",
        source_sha256={name: hashlib.sha256("".join(lines).encode()).hexdigest() for name, lines in sources.items()},
    )


def sample_test(lines: tuple[str, ...], task: TaskSpec) -> tuple[str, ...]:
    """MeZO's k-shot-1k-test rule: a test set over 1,000 examples is sampled to 1,000 with seed 42
    (GLUE TSV: `np.random.seed(42); np.random.shuffle(lines)`, first 1,000; CSV:
    `DataFrame.sample(n=1000, random_state=42)`, i.e. RandomState(42).choice without replacement)."""
    if len(lines) <= TEST_LIMIT:
        return lines
    if task.file_format == "csv":
        picks = np.random.RandomState(TEST_SEED).choice(len(lines), size=TEST_LIMIT, replace=False)
        return tuple(lines[i] for i in picks)
    shuffled = list(lines)
    np.random.RandomState(TEST_SEED).shuffle(shuffled)
    return tuple(shuffled[:TEST_LIMIT])


def make_k_shot_split(data: TaskData, k: int, seed: int, *, full_test: bool = False) -> KShotSplit:
    """The k-shot split of `seed`: read from a k-shot folder as is, or generated from the full
    data. `full_test=True` keeps test sets whole (LM-BFF's plain `k-shot` mode, whose checksums
    LM-BFF published) instead of MeZO's 1,000-example cut."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise HarnessError(f"k must be an integer >= 1, got {k!r}")
    if data.kshot_dir is not None:
        return _read_kshot_split(data, k, seed)
    task = data.task
    lines = list(data.train_lines)
    # RandomState(seed) is the generator np.random.seed(seed) seeds: the same shuffle as
    # LM-BFF's global call, without touching global state.
    np.random.RandomState(seed).shuffle(lines)

    by_label: dict[str, list[str]] = {}   # in order of first appearance, as LM-BFF
    for line in lines:
        by_label.setdefault(label_of(line, task), []).append(line)
    for label in task.labels:
        if len(by_label.get(label, ())) < 2 * k:
            raise HarnessError(f"k={k} needs {2 * k} training examples of label {label!r}, "
                               f"the data has {len(by_label.get(label, ()))} ({data.source})")
    train = tuple(line for group in by_label.values() for line in group[:k])
    dev = tuple(line for group in by_label.values() for line in group[k:2 * k])
    tests = {"test": data.test_lines, **data.extra_test_lines}
    if not full_test:
        tests = {split: sample_test(test, task) for split, test in tests.items()}
    return KShotSplit(task=task, k=k, seed=seed, lines={"train": train, "dev": dev, **tests})
