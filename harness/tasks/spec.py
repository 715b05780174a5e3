"""Task specifications: where a task's data lives, its columns and labels, and the template
slots a prompt may use. Pure data, no torch: the protocol layer validates against it."""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import HarnessError

SPLITS = ("train", "dev", "test")
SENTENCE_SLOT = "{sentence}"    # a template part replaced by the example's sentence
MASK_SLOT = "<mask>"            # the masked-LM template part whose logits give the label words'


@dataclass(frozen=True)
class TaskSpec:
    name: str
    glue_dir_name: str              # folder name in the GLUE release, e.g. "SST-2"
    hf_dataset: tuple[str, str]     # (path, config) for `datasets.load_dataset`
    hf_test_split: str              # the split that serves as our test set
    header: str                     # expected TSV header line
    labels: tuple[str, ...]         # label strings in the TSV, index = class id

    @property
    def num_labels(self) -> int:
        return len(self.labels)


# SST-2's GLUE dev set (872) is the test set; LM-BFF subsamples only test sets over 1000.
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        glue_dir_name="SST-2",
        hf_dataset=("nyu-mll/glue", "sst2"),
        hf_test_split="validation",
        header="sentence\tlabel",
        labels=("0", "1"),
    ),
}


@dataclass(frozen=True)
class Example:
    sentence: str
    label: int


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise HarnessError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


