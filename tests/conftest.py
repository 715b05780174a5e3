import os
from pathlib import Path

import pytest
import torch

import harness  # noqa: F401 -- first: its CPU shim must run before anything imports torchvision

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_SST2 = SHARED_DATA / "glue" / "SST-2"
# Each task's folder under ../shared/data (originals, or MeZO's generated k-shot folders)
SHARED_TASK_DATA = {"sst2": "glue/SST-2", "sst5": "original/sst-5", "trec": "original/trec", "rte": "glue/RTE",
                    "mnli": "k-shot-1k-test/MNLI", "snli": "k-shot-1k-test/SNLI"}

# A corpus in which the label words are frequent enough to become single BPE tokens.
MICRO_CORPUS = [
    "a great movie", "a terrible movie", "the plot was great", "the acting was terrible",
    "it was great fun", "it was terrible and dull", "great great film", "terrible terrible film",
    "the film is a great ride", "a terrible mess of a script",
] * 20


PROMPT_TEMPLATE = ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")
LABEL_WORDS = (" terrible", " great")
# The first sentences of MICRO_CORPUS, deduplicated: the micro MeZO runs' training set.
MICRO_SENTENCES = ["a great movie", "a terrible movie", "the plot was great", "the acting was terrible",
                   "it was great fun", "it was terrible and dull", "great film", "terrible film"]


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    """The real GLUE SST-2 folder: $MEZO_BENCH_DATA_DIR, else ../shared/data/glue/SST-2."""
    path = Path(os.environ.get("MEZO_BENCH_DATA_DIR", SHARED_SST2))
    if not (path / "train.tsv").is_file():
        pytest.skip(f"SST-2 data not found at {path} (set MEZO_BENCH_DATA_DIR to a GLUE SST-2 folder)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """shared_data(relative): that path under ../shared/data (a task name: its data folder); the
    test skips where it is absent."""
    def path_of(relative: str) -> Path:
        path = SHARED_DATA / SHARED_TASK_DATA.get(relative, relative)
        if not path.exists():
            pytest.skip(f"shared data not found at {path}")
        return path
    return path_of


# Throughput fields that are clocks (differ between two runs of one point)
TIMING_METRICS = {"steps_per_second", "forward_passes_per_second", "tokens_per_second", "forward_seconds",
                  "update_seconds", "eval_seconds", "train_seconds"}


@pytest.fixture(scope="session")
def without_timing():
    """without_timing(record, *also): the record without what differs between two runs of one point
    (run id, creation time, timing, trajectory file, clock throughput) nor the top-level keys `also`."""
    def strip(record: dict, *also: str) -> dict:
        dropped = {"run_id", "created_utc", "timing", "trajectory", *also}
        kept = {k: v for k, v in record.items() if k not in dropped}
        kept["throughput"] = {k: v for k, v in record["throughput"].items() if k not in TIMING_METRICS}
        return kept
    return strip


@pytest.fixture
def cli(capsys):
    """cli(*args): the CLI run in-process; returns (exit code, stdout, stderr)."""
    from harness.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:   # argparse rejects bad option values this way
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


@pytest.fixture(scope="session")
def sst2_protocol() -> Path:
    """The committed SST-2 protocol file."""
    return REPO_ROOT / "benchmarks" / "sst2" / "protocol.toml"


@pytest.fixture(scope="session")
def short_protocol(tmp_path_factory):
    """short_protocol(steps, eval_every, task="sst2"): a copy of the task's committed protocol whose
    smoke runs are cut to `steps`, named <task>-mezo-short and locked as its own file (so runs of it
    never mix with the committed one's)."""
    from harness.protocol.loading import load_protocol

    def make(steps: int, eval_every: int, task: str = "sst2") -> Path:
        path = tmp_path_factory.mktemp("protocol") / "protocol.toml"
        shipped = REPO_ROOT / "benchmarks" / task / "protocol.toml"
        text = shipped.read_text().replace(f'name = "{task}-mezo"', f'name = "{task}-mezo-short"')
        for old in ("steps = 400\neval_every = 100\n", "steps = 200\neval_every = 50\n"):
            text = text.replace(old, f"steps = {steps}\neval_every = {eval_every}\n")
        path.write_text(text)
        load_protocol(path).write_lock()
        return path
    return make


# `python SCRIPT SIGNAL STEP ARGV...`: runs `mezo-bench ARGV` and sends its own process SIGNAL (a
# name: SIGKILL, SIGINT) right after the dev evaluation of STEP (for SIGKILL: no cleanup runs).
SIGNAL_AT_STEP = """
import os, signal, sys
import harness.recipes.train as train
sent, at, original = getattr(signal, sys.argv[1]), int(sys.argv[2]), train._end_of_step
def end_of_step(result, objective, dev_batches, step, *rest):
    original(result, objective, dev_batches, step, *rest)
    if step == at:
        os.kill(os.getpid(), sent)
train._end_of_step = end_of_step
from harness.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="session")
def signal_at_step(tmp_path_factory) -> Path:
    """The path of the SIGNAL_AT_STEP script (interruption and Ctrl-C tests)."""
    script = tmp_path_factory.mktemp("scripts") / "signal_at_step.py"
    script.write_text(SIGNAL_AT_STEP)
    return script


@pytest.fixture(scope="session")
def prompt_template() -> tuple[str, ...]:
    return PROMPT_TEMPLATE


@pytest.fixture(scope="session")
def micro_tokenizer():
    from harness.backends.tokenizers import train_bpe_tokenizer

    return train_bpe_tokenizer(MICRO_CORPUS, vocab_size=300)


def _build_micro_model(tokenizer, seed=0, dtype=torch.float32):
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                           type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return RobertaForMaskedLM(config).to(dtype).eval()


@pytest.fixture(scope="session")
def build_micro_model():
    """build_micro_model(tokenizer, seed=0, dtype=torch.float32): a 1-layer RoBERTa masked LM."""
    return _build_micro_model


@pytest.fixture(scope="session")
def micro_corpus() -> list[str]:
    return MICRO_CORPUS


@pytest.fixture
def micro_model(micro_tokenizer):
    return _build_micro_model(micro_tokenizer)


def _test_machine(name: str, hardware: str) -> dict:
    """environment.machine and machine_id of a test machine called `name`."""
    from harness.results import schema
    from harness.results.selection import machine_digest

    machine = schema.Machine(kind=hardware.split(":")[0], cpu_vendor="TestVendor", cpu_model=f"test CPU {name}",
                             cpu_signature="family 1 model 2 stepping 3", cpu_capability="AVX512", cpu_count=2,
                             torch_threads=2, torch="2.13.0+cpu (abcdef012345)", numpy_blas="openblas 0.3 Haswell",
                             float_env={})
    return {"machine": machine, "machine_id": machine_digest(machine)}


def _make_record(variant="hf-mlm", k=16, seed=13, lr=1e-3, batch_size=64, dev=0.5, test=0.5, zero_shot=0.5,
                zero_fraction=0.0, status="completed", model="random-init:tiny", profile="smoke",
                hardware="cpu", created="2026-01-01T00:00:00+00:00", steps=400, protocol_hash="h" * 64,
                loss_plus=(0.7, 0.6), memory_peak=(100, 101, 150), steps_per_second=50.0, version=3,
                eps=1e-3, weight_decay=0.0, grid=None, task="sst2", protocol_name=None, machine="A", curve=None):
    """A current-schema run record (harness.results.schema, every required field) for tests of
    readers (report, claims, gate): a FinishedRecord, or a FailedRecord for status "failed".
    grid: the profile's grid (default: this run's point alone, with seeds 13 and 42);
    protocol_name: default "<task>-mezo"; machine: a name for the machine identity (records of one name
    share it), None for a record made before machines were recorded; curve: the loss curve (default: two
    steps, loss_plus as given)."""
    from harness.results import schema

    grid = grid or {"seeds": [13, 42], "lr": [lr], "batch_size": [batch_size], "eps": [eps],
                    "weight_decay": [weight_decay]}
    mezo = variant != "hf-ft"
    header = schema.RecordHeader(
        schema_version=schema.SCHEMA_VERSION, run_id=f"{variant}_k{k}_seed{seed}_lr{lr:g}_{created}", status=status,
        created_utc=created,
        protocol=schema.Protocol(name=protocol_name or f"{task}-mezo", version=version, profile=profile,
                                 hash=protocol_hash, path="p", grid=schema.Grid(**grid)),
        variant=schema.Variant(name=variant, backend="hf", head="mlm", loss="ce", parameters="full",
                               optimizer="mezo" if mezo else "adamw"),
        task=task, k=k, seed=seed,
        hyperparameters=schema.Hyperparameters(
            model=model, tokenizer="trained-bpe:4096", steps=steps, eval_every=steps // 2, eval_batch_size=64,
            max_length=128, dtype="float32", init_seed=0, template=list(PROMPT_TEMPLATE),
            label_words=list(LABEL_WORDS), lr=lr, batch_size=batch_size, eps=eps, weight_decay=weight_decay),
        data=schema.Data(source="glue-dir:SST-2", source_sha256={"train": "a" * 64, "test": "b" * 64},
                         split_sha256={"train": "c" * 64, "dev": "d" * 64, "test": "b" * 64},
                         split_sizes={"train": 2 * k, "dev": 2 * k, "test": 872}),
        model=schema.Model(id=model, revision=None, num_parameters=1000, dtype="float32", head="label words",
                           trainable_parameters=1000, updated_parameters=1000),
        tokenizer=schema.Tokenizer(id="trained-bpe:4096", sha256="e" * 64, vocab_size=4096),
        liveness=schema.Liveness(groups=10, dead_groups=[], dead_groups_perturbed=False),
        environment=schema.Environment(
            packages={"python": "3.11.7", "torch": "2.13.0+cpu"},
            device=schema.Device(type=hardware.split(":")[0], platform="Linux", cpu="test CPU", cpu_count=2,
                                 torch_threads=2, name=hardware.split(":")[-1], hardware_class=hardware),
            **({} if machine is None else _test_machine(machine, hardware))),
        git=schema.Git(commit="f" * 40, dirty=False, root="/repo"),
    )
    if status == "failed":
        return schema.FailedRecord(**header, error="RuntimeError: boom", wall_seconds=1.0)
    inference, mezo_step, first_order = memory_peak
    return schema.FinishedRecord(
        **header,
        metrics=schema.Metrics(
            zero_shot_dev_accuracy=zero_shot, zero_shot_test_accuracy=zero_shot, best_dev_accuracy=dev,
            best_step=steps, test_accuracy=test, final_dev_accuracy=dev, train_loss_start=0.7, train_loss_end=0.6,
            dev_history=[schema.DevPoint(step=steps // 2, dev_accuracy=dev),
                         schema.DevPoint(step=steps, dev_accuracy=dev)]),
        sparsity=(schema.Sparsity(steps=steps, zero_fraction=zero_fraction, tiny_threshold=1e-6,
                                  tiny_fraction=zero_fraction, mean_abs=1.0, abs_quantiles={"p50": 1.0})
                  if mezo else None),
        throughput=schema.Throughput(steps_per_second=steps_per_second, train_seconds=steps / steps_per_second,
                                     eval_seconds=0.1, tokens_per_second=1000.0, padding_fraction=0.5),
        z_stream=schema.ZStream(stream="sequential", chunk_elements=1 << 20) if mezo else None,
        memory=schema.Memory(
            method="test",
            phases={name: schema.MemoryPhase(peak_bytes=peak, excess_bytes=peak - 90, baseline_bytes=90)
                    for name, peak in (("inference", inference), ("mezo_step", mezo_step),
                                       ("first_order_step", first_order))},
            ratios=schema.MemoryRatios(mezo_over_inference=mezo_step / inference,
                                       first_order_over_mezo=first_order / mezo_step,
                                       excess_mezo_over_inference=(mezo_step - 90) / (inference - 90),
                                       excess_first_order_over_mezo=(first_order - 90) / (mezo_step - 90))),
        loss_curve=curve or schema.LossCurve(stride=1, steps=list(range(1, len(loss_plus) + 1)), loss_plus=list(loss_plus)),
        timing=schema.Timing(wall_seconds=10.0),
    )


@pytest.fixture(scope="session")
def make_record():
    """make_record(**fields): a current-schema run record for results-layer tests."""
    return _make_record


def _mlm_objective(tokenizer, model, loss="ce"):
    from harness.backends.hf import MaskedLMLabelWordHead
    from harness.tasks.objective import Objective
    from harness.tasks.prompt import label_word_ids

    return Objective(MaskedLMLabelWordHead(model, label_word_ids(tokenizer, LABEL_WORDS)), loss)


@pytest.fixture(scope="session")
def mlm_objective():
    """mlm_objective(tokenizer, model, loss="ce"): the prompt objective with label words " terrible", " great"."""
    return _mlm_objective


@pytest.fixture(scope="session")
def micro_objective():
    """micro_objective(tokenizer, model) -> (objective, encoded MICRO_SENTENCES)."""
    from harness.tasks.prompt import PromptEncoder
    from harness.tasks.spec import Example

    def build(tokenizer, model):
        encoded = PromptEncoder(tokenizer, PROMPT_TEMPLATE, 64).encode_all(
            [Example(s, int("great" in s)) for s in MICRO_SENTENCES])
        return _mlm_objective(tokenizer, model), encoded
    return build


@pytest.fixture(scope="session")
def micro_batch():
    """micro_batch(tokenizer, template=PROMPT_TEMPLATE, n=16) -> (encoded, batch) of MICRO_CORPUS's first n."""
    from harness.tasks.batching import collate
    from harness.tasks.prompt import PromptEncoder
    from harness.tasks.spec import Example

    def build(tokenizer, template=PROMPT_TEMPLATE, n=16):
        encoded = PromptEncoder(tokenizer, template, 64).encode_all(
            [Example(s, int("great" in s)) for s in MICRO_CORPUS[:n]])
        return encoded, collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    return build
