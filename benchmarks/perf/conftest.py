"""Workloads for the performance benchmarks (`nox -s perf`): one model and one batch per
case, shared by every benchmark of that case in a run, so their ratios compare like with like.

The batch: 64 SST-2 training examples (k=512 split, seed 42; rows drawn with seed 0) in the
protocol's prompt ("<s> {sentence} It was <mask> . </s>", max length 128), tokenized by a
byte-level BPE trained on SST-2's training text with RoBERTa's vocabulary size (no RoBERTa
tokenizer is available offline; the recorded real/padded token counts say what was run).
Models: random-init weights of the named architecture (speed does not depend on the values).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from harness.backends.hf import MaskedLMLabelWordHead, load_model
from harness.backends.tokenizers import load_tokenizer
from harness.tasks.batching import Batch, collate, split_by_length
from harness.tasks.data import load_task_data, make_k_shot_split
from harness.tasks.objective import Objective
from harness.tasks.prompt import PromptEncoder, label_word_ids
from harness.zo.mezo import MeZO

PERF_VERSION = 1          # bump when a workload or a benchmark's definition changes
TEMPLATE = ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")
LABEL_WORDS = (" terrible", " great")
TOKENIZER = "trained-bpe:50265"
BATCH_SIZE, MAX_LENGTH, K, SPLIT_SEED, ROWS_SEED = 64, 128, 512, 42, 0
LENGTH_BUCKETS = 4
LR, EPS, WEIGHT_DECAY = 1e-6, 1e-3, 0.0


@dataclass(frozen=True)
class PerfCase:
    model: str
    dtype: str
    device: str
    rounds: int          # timed rounds per benchmark (after one warm-up round)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.dtype}-{self.device}"


CASES = [
    PerfCase("tiny", "float32", "cpu", rounds=30),
    PerfCase("roberta-base", "float32", "cpu", rounds=7),
    PerfCase("roberta-large", "float32", "cuda", rounds=20),
    PerfCase("roberta-large", "bfloat16", "cuda", rounds=20),
]


@dataclass
class Workload:
    case: PerfCase
    objective: Objective
    trainable: list[tuple[str, torch.Tensor]]
    engine: MeZO
    batch: Batch
    buckets: list[Batch]
    info: dict           # goes into every benchmark's extra_info
    lr: float = LR
    eps: float = EPS
    weight_decay: float = WEIGHT_DECAY

    def loss(self) -> float:
        return float(self.objective.loss(self.batch))   # float() waits for the device


def _case_params():
    for case in CASES:
        marks = [pytest.mark.gpu] if case.device == "cuda" else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="session")
def sst2_batch_source():
    data = load_task_data("sst2", os.environ.get("MEZO_BENCH_DATA_DIR"))
    split = make_k_shot_split(data, K, SPLIT_SEED)
    train = split.examples("train")
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(ROWS_SEED))[:BATCH_SIZE].tolist()
    tokenizer = load_tokenizer(TOKENIZER, data.train_sentences())
    data_info = {"source": data.source, "source_sha256": data.source_sha256,
                 "train_split_sha256": split.sha256()["train"]}
    return data_info, [train[i] for i in rows], tokenizer


@pytest.fixture(scope="session", params=list(_case_params()))
def workload(request, sst2_batch_source) -> Iterator[Workload]:
    case: PerfCase = request.param
    if case.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    data_info, examples, loaded_tokenizer = sst2_batch_source
    tokenizer = loaded_tokenizer.tokenizer
    device = torch.device(case.device)
    model = load_model(f"random-init:{case.model}", tokenizer, init_seed=0, dtype=case.dtype, device=device).model
    objective = Objective(MaskedLMLabelWordHead(model, label_word_ids(tokenizer, LABEL_WORDS)))
    encoded = PromptEncoder(tokenizer, TEMPLATE, MAX_LENGTH).encode_all(examples)
    batch = collate(encoded, tokenizer.pad_token_id, device)
    trainable = list(model.named_parameters())
    engine = MeZO(trainable, lr=LR, eps=EPS, weight_decay=WEIGHT_DECAY)
    buckets = split_by_length(batch, LENGTH_BUCKETS)
    info = {
        "perf_version": PERF_VERSION,
        "case": case.id, "model": f"random-init:{case.model}", "dtype": case.dtype, "device": case.device,
        "num_parameters": sum(p.numel() for _, p in trainable),
        "parameter_bytes": sum(p.numel() * p.element_size() for _, p in trainable),
        "batch_size": BATCH_SIZE, "real_tokens": batch.real_tokens, "padded_tokens": batch.padded_tokens,
        "bucketed_padded_tokens": sum(b.padded_tokens for b in buckets), "length_buckets": len(buckets),
        "tokenizer": {"id": TOKENIZER, "sha256": loaded_tokenizer.info["sha256"]},
        "data": data_info, "k": K, "split_seed": SPLIT_SEED, "rows_seed": ROWS_SEED,
        "mezo_workers": engine.workers, "torch_threads": torch.get_num_threads(),
        "attention": model.config._attn_implementation,
    }
    yield Workload(case, objective, trainable, engine, batch, buckets, info)
    engine.close()


def pytest_benchmark_update_machine_info(config, machine_info):
    import transformers

    machine_info["mezo_bench"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_memory_bytes": torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None,
    }
