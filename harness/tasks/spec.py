"""Task specifications: where a task's data lives, its columns and labels. Pure data, no
torch: the protocol layer validates against it."""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import HarnessError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    glue_dir_name: str              # LM-BFF's task folder name: the GLUE release's ("SST-2", "RTE"),
                                    # data/original's ("sst-5", "trec") and data/k-shot-*'s
    hf_dataset: tuple[str, str | None]  # (path, config) for `datasets.load_dataset`
    hf_test_split: str              # the split that serves as our test set
    header: str                     # expected header line of the training file ("" for CSV tasks)
    labels: tuple[str, ...]         # label strings in the files, index = class id (LM-BFF's order)
    file_format: str = "glue-tsv"   # "glue-tsv" (header, tab-separated, label = last field) or
                                    # "csv" (LM-BFF data/original: no header, `label,sentence`)
    test_header: str | None = None  # header of the test files when it differs from `header`
    # Tab-separated fields a TSV line may have; None: as many as its file's header. GLUE's SNLI
    # lines have 11 to 15 (label1, then the annotators' label2..label5 where given, gold_label).
    field_counts: tuple[int, ...] | None = None
    text_fields: tuple[int, ...] = (0,)     # field index of sentence1 (and sentence2 for pairs)
    label_field: int = -1           # field index of the label (LM-BFF's get_label)
    # Source files in the originals folder: our split name -> file name. "train" is sampled;
    # every other entry is a test set (GLUE dev files; MNLI has two).
    original_files: tuple[tuple[str, str], ...] = (("train", "train.tsv"), ("test", "dev.tsv"))
    # The k-shot folder's files (LM-BFF's names): our split name -> file name.
    split_files: tuple[tuple[str, str], ...] = (("train", "train.tsv"), ("dev", "dev.tsv"), ("test", "test.tsv"))
    hf_text_columns: tuple[str, ...] = ("sentence",)    # `datasets` columns of sentence1 (, sentence2)
    hf_label_column: str = "label"
    hf_label_names: tuple[str, ...] | None = None       # hub label id -> our label; None: same as labels
    hf_extra_test_splits: tuple[tuple[str, str], ...] = ()  # extra test sets: our name -> hub split

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    def file_name(self, split: str) -> str:
        return dict(self.split_files)[split]

    def header_of(self, split: str) -> str:
        """The header line a split file has ("" for CSV tasks): test files may have their own."""
        if split.startswith("test") and self.test_header is not None:
            return self.test_header
        return self.header


_MNLI_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
_SNLI_TRAIN = ("index\tcaptionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
_FIVE_LABELS = "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
_NLI_LABELS = ("contradiction", "entailment", "neutral")         # LM-BFF's MNLI/SNLI processors
_HF_NLI_LABELS = ("entailment", "neutral", "contradiction")      # GLUE/SNLI hub ids 0, 1, 2
# LM-BFF's data/original CSV layout (sst-5, TREC): no header, `label,sentence`
_CSV_LAYOUT = dict(
    header="",
    file_format="csv",
    text_fields=(1,),
    label_field=0,
    original_files=(("train", "train.csv"), ("test", "test.csv")),
    split_files=(("train", "train.csv"), ("dev", "dev.csv"), ("test", "test.csv")),
    hf_text_columns=("text",),
)

# Test sets over 1,000 examples are sampled to 1,000 with seed 42 (MeZO's k-shot-1k-test mode):
# SST-2's GLUE dev set (872) and RTE's (277) and TREC's test (500) are used whole.
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        glue_dir_name="SST-2",
        hf_dataset=("nyu-mll/glue", "sst2"),
        hf_test_split="validation",
        header="sentence\tlabel",
        labels=("0", "1"),
    ),
    "sst5": TaskSpec(
        name="sst5",
        glue_dir_name="sst-5",
        hf_dataset=("SetFit/sst5", None),
        hf_test_split="test",
        labels=("0", "1", "2", "3", "4"),
        **_CSV_LAYOUT,
    ),
    "trec": TaskSpec(
        name="trec",
        glue_dir_name="trec",
        hf_dataset=("CogComp/trec", None),
        hf_test_split="test",
        labels=("0", "1", "2", "3", "4", "5"),   # Description, Entity, Expression, Human, Location, Number
        **_CSV_LAYOUT,
        hf_label_column="coarse_label",
        hf_label_names=("2", "1", "0", "3", "4", "5"),   # hub ABBR, ENTY, DESC, HUM, LOC, NUM
    ),
    "rte": TaskSpec(
        name="rte",
        glue_dir_name="RTE",
        hf_dataset=("nyu-mll/glue", "rte"),
        hf_test_split="validation",
        header="index\tsentence1\tsentence2\tlabel",
        labels=("entailment", "not_entailment"),
        text_fields=(1, 2),
        hf_text_columns=("sentence1", "sentence2"),
    ),
    "mnli": TaskSpec(
        name="mnli",
        glue_dir_name="MNLI",
        hf_dataset=("nyu-mll/glue", "mnli"),
        hf_test_split="validation_matched",
        header=_MNLI_TRAIN,
        test_header=_MNLI_TRAIN.replace("label1\tgold_label", _FIVE_LABELS),
        labels=_NLI_LABELS,
        text_fields=(8, 9),
        original_files=(("train", "train.tsv"), ("test", "dev_matched.tsv"),
                        ("test_mismatched", "dev_mismatched.tsv")),
        split_files=(("train", "train.tsv"), ("dev", "dev_matched.tsv"), ("test", "test_matched.tsv"),
                     ("test_mismatched", "test_mismatched.tsv")),
        hf_text_columns=("premise", "hypothesis"),
        hf_label_names=_HF_NLI_LABELS,
        hf_extra_test_splits=(("test_mismatched", "validation_mismatched"),),
    ),
    "snli": TaskSpec(
        name="snli",
        glue_dir_name="SNLI",
        hf_dataset=("stanfordnlp/snli", None),
        hf_test_split="validation",
        header=_SNLI_TRAIN,
        test_header=_SNLI_TRAIN.replace("label1\tgold_label", _FIVE_LABELS),
        labels=_NLI_LABELS,
        text_fields=(7, 8),
        field_counts=(11, 12, 13, 14, 15),
        hf_text_columns=("premise", "hypothesis"),
        hf_label_names=_HF_NLI_LABELS,
    ),
}


@dataclass(frozen=True)
class Example:
    sentence: str                   # the (first) sentence
    label: int                      # index in TaskSpec.labels
    sentence2: str | None = None    # pair tasks' second sentence (RTE sentence2, MNLI/SNLI hypothesis)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise HarnessError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


