"""The run record's schema: one JSON file per run, in one place.

harness.recipes.run builds every record through these types (its top-level keys in the
order declared below); harness.results.store upgrades older records to this shape; the
tests build their records with them; the README links here. `missing_fields` says which
fields the schema requires that a record lacks, `undeclared_fields` which fields it has
that the schema does not describe (the tests check every committed record, and the
schema-1 fixture after upgrading). Readers do not call them: they read what a record has
and treat an absent measurement as not measured.

A record's outcome is in `status`:
- "completed", "diverged": a FinishedRecord (a diverged run also has `diverged_at`);
- "failed": a FailedRecord (training or a measurement raised; `error` says what);
- "running": only in memory while the run goes on, never written.

Fields declared in a `total=False` class may be absent: they depend on the variant
or backend, or were not recorded before a schema version (and the upgrade leaves a missing
measurement missing). Numbers: accuracies and fractions in [0, 1], memory in bytes, time in
seconds, rates per second. JSON has no NaN: a non-finite value is null.

Schema versions: 1 (protocol v1) had no liveness, sparsity, memory or throughput and a
variant without head/loss; 2 added them; 3 (protocol v3) added `protocol.grid`, `z_stream`,
the "diverged" status and eps / weight decay as grid values.
"""

# No `from __future__ import annotations`: the types are read at run time (missing_fields).
import types
import typing
from typing import Any, Literal, TypedDict, Union

SCHEMA_VERSION = 3

Status = Literal["running", "completed", "diverged", "failed"]


class Grid(TypedDict):
    """The profile's grid for the run's k: every combination is one grid point."""
    seeds: list[int]              # data split and training seeds
    lr: list[float]               # learning rates
    batch_size: list[int]         # training batch sizes (examples) for this k
    eps: list[float]              # MeZO perturbation scales
    weight_decay: list[float]     # weight decay coefficients


class Protocol(TypedDict):
    """The protocol the run belongs to (benchmarks/<task>/protocol.toml)."""
    name: str                     # protocol name, e.g. "sst2-mezo"
    version: int                  # protocol version; a changed value needs a new one
    profile: str                  # profile name, e.g. "smoke", "paper"
    hash: str                     # sha256 (hex) of every setting of this (profile, variant) that can change a result
    path: str                     # the protocol file, as given
    grid: Grid | None             # the grid of this k; null in records upgraded from schema 1 and 2


class _VariantRequired(TypedDict):
    name: str                     # variant name, e.g. "hf-mlm", "sglang-mlm", "hf-ft"
    backend: str                  # backend that runs the model: "hf" or "sglang"
    head: str                     # "mlm" (prompt + label words) or "cls" (classification head)
    loss: str                     # "ce" (cross-entropy) or "neg-accuracy" (-(batch accuracy))
    parameters: str               # trained set: "full", "lora", "lm-head", "lora+lm-head", "prefix", "none"
    optimizer: str                # "mezo", "mezo-adam" (Adam on MeZO's estimate), "adamw" (first-order FT)
                                  # or "none" (no training: zero-shot, LP)


class Variant(_VariantRequired, total=False):
    """What is trained and how (harness.protocol.variants)."""
    linear_probe: bool            # true: the label words' decoder rows were fitted by linear probing
                                  # before training (absent: false)


class _HyperparametersRequired(TypedDict):
    model: str                    # model spec: hub id, local path or "random-init:<size>"
    tokenizer: str                # tokenizer spec: hub id, local path or "trained-bpe:<vocab size>"
    steps: int                    # training steps
    eval_every: int               # steps between dev evaluations (and at the last step)
    eval_batch_size: int          # examples per evaluation batch
    max_length: int               # prompt length limit, tokens
    dtype: str                    # parameter dtype, one of harness.core.dtypes.DTYPE_NAMES
    init_seed: int                # seed of a random-init model's weights (the same for every run seed)
    template: list[str]           # prompt template pieces ("{sentence}" and "<mask>" slots)
    label_words: list[str]        # one word per label, in label order
    lr: float                     # the run's learning rate (grid point)
    batch_size: int               # the run's training batch size, examples (grid point)
    eps: float                    # the run's MeZO perturbation scale (grid point)
    weight_decay: float           # the run's weight decay (grid point)


class Hyperparameters(_HyperparametersRequired, total=False):
    """The run's grid point and every other setting of its (profile, variant): the protocol's
    RunSettings without its grids. The fields below are absent in records of protocol v1."""
    lr_schedule: str              # "constant" or "linear" (decay to 0, no warm-up)
    dropout: bool                 # first-order only: dropout on during training
    sparsity_threshold: float     # |projected_grad| below this counts as tiny
    perturb_dead_parameters: bool  # perturb parameter groups the liveness check found dead
    lm_decoder: str               # "tied" (the word embeddings) or "untied" (the LM head's own decoder)
    max_grad_norm: float | None   # first-order only: gradient clipping norm; null: none
    lora_r: int | None            # LoRA rank; null for non-LoRA variants
    lora_alpha: int | None        # LoRA alpha; null for non-LoRA variants
    lora_targets: list[str] | None  # module names LoRA adapts; null for non-LoRA variants
    length_buckets: int           # > 1: MeZO's forwards run each batch in this many length buckets
    first_sent_limit: int         # tokens kept of the first sentence (LM-BFF); absent: no limit
    other_sent_limit: int         # tokens kept of each other sentence; absent: no limit
    num_prefix: int               # prefix variants only: prefix tokens per layer


class Data(TypedDict):
    """The task data and the run's k-shot split."""
    source: str                   # "glue-dir:<path>" or "hf-datasets:<id>/<config>"
    source_sha256: dict[str, str]  # "train", "test" -> sha256 (hex) of the source text
    split_sha256: dict[str, str]  # "train", "dev", "test" -> sha256 (hex) of the split's TSV file
    split_sizes: dict[str, int]   # "train", "dev", "test" -> examples


class LmDecoder(TypedDict):
    tied: bool                    # the decoder is the word-embedding parameter itself
    initialised_from: str         # what the decoder weight was copied from


class Lora(TypedDict):
    r: int                        # rank
    alpha: int                    # scaling numerator (scale = alpha / r)
    targets: list[str]            # adapted module names
    init_seed: int                # seed of the adapters' A matrices (the run seed)


class Prefix(TypedDict):
    tokens: int                   # prefix tokens (keys and values) per layer
    layers: int                   # layers with a prefix (all of them)
    initialised_from: str         # what the prefix keys and values were computed from
    init_seed: int                # seed of the random vocabulary tokens (the run seed)


class _ModelRequired(TypedDict):
    id: str                       # the model spec as given (hub id, local path, "random-init:<size>", "pretrained:<name>")
    revision: str | None          # hub commit, "sha256:<hex>" of local or stand-in weights, or null (random-init)
    num_parameters: int           # all parameters of the model as run (heads and adapters included)
    dtype: str                    # parameter dtype name
    trainable_parameters: int     # parameters of the variant's trainable set
    updated_parameters: int       # of those, the ones perturbed and updated (the live groups, or all)


class Model(_ModelRequired, total=False):
    """The model as run (harness.backends: LoadedModel.info plus parameter counts)."""
    init_seed: int                # random-init only: seed of the weights
    config: dict[str, Any]        # random-init only: the config values (RobertaConfig, BertConfig)
    family: str                   # models of a family other than RoBERTa: its name (harness.backends.families)
    package: str                  # pretrained stand-ins only: the package that ships it, "name==version"
    lm_decoder: LmDecoder         # masked-LM heads only (absent for "cls" and in schema 1)
    head: str                     # which head computes the label logits (absent in schema 1)
    lora: Lora                    # LoRA variants only
    prefix: Prefix                # prefix variants only
    backend: dict[str, Any]       # SGLang only: how the model is served (runner, attention backend, KV pool)


class _TokenizerRequired(TypedDict):
    id: str                       # the tokenizer spec as given
    sha256: str | None            # sha256 (hex) of its serialised form; null where it has none
    vocab_size: int               # tokens


class Tokenizer(_TokenizerRequired, total=False):
    trained_on: str               # trained-bpe only: what it was trained on
    added_label_words: list[str]  # trained-bpe:<n>+label-words only: label words added as tokens


class Liveness(TypedDict):
    """The check before training: each trainable group perturbed alone, logits compared."""
    groups: int                   # trainable parameter groups checked
    dead_groups: list[str]        # groups whose perturbation leaves the logits bit-identical
    dead_groups_perturbed: bool   # whether dead groups were perturbed anyway (perturb_dead_parameters)


class _DeviceRequired(TypedDict):
    type: str                     # "cpu" or "cuda"
    platform: str                 # platform.platform()
    cpu: str                      # CPU model name
    cpu_count: int | None         # logical CPUs
    torch_threads: int            # torch.get_num_threads()
    name: str                     # the device's name (the CPU's on CPU)
    hardware_class: str           # "cpu" or "cuda:<GPU name>": what results are grouped by


class Device(_DeviceRequired, total=False):
    cuda: str                     # CUDA only: torch's CUDA version


class _MachineRequired(TypedDict):
    """What can change a run's floats on the same code and data (harness.recipes.provenance.machine_identity):
    two runs of one grid point agree bit for bit only on one machine identity. No host name."""
    kind: str                     # "cpu" or "cuda"
    cpu_vendor: str | None        # /proc/cpuinfo vendor_id, e.g. "AuthenticAMD", "GenuineIntel"
    cpu_model: str                # the CPU's model name
    cpu_signature: str | None     # "family F model M stepping S" (one model name covers several generations)
    cpu_capability: str           # the instruction set torch's CPU kernels dispatch to (torch.backends.cpu.get_cpu_capability())
    cpu_count: int | None         # logical CPUs
    torch_threads: int            # torch.get_num_threads(): reductions are split per thread
    torch: str                    # torch.__version__ and the commit it was built from
    numpy_blas: str | None        # numpy's BLAS library, version and kernel family (threadpoolctl; the linear probe's fit)
    float_env: dict[str, str]     # environment variables that change kernels (MKL_CBWR, ONEDNN_MAX_CPU_ISA, ...), if set


class Machine(_MachineRequired, total=False):
    gpu: str                      # CUDA only: the GPU's name
    gpu_capability: str           # CUDA only: compute capability, e.g. "9.0"
    cuda: str                     # CUDA only: torch's CUDA version
    cudnn: int | None             # CUDA only: cuDNN version


class _EnvironmentRequired(TypedDict):
    packages: dict[str, str | None]  # "python" and each recorded package -> version; null: not installed
    device: Device                # the device the run used


class Environment(_EnvironmentRequired, total=False):
    machine: Machine              # what can change floats; absent in records made before it was recorded
    machine_id: str               # sha256 (first 16 hex) of `machine`: the gate compares exactly only within one


class Git(TypedDict):
    """The checkout the code ran from (all null outside a git checkout)."""
    commit: str | None            # HEAD commit
    dirty: bool | None            # tracked files had uncommitted changes
    root: str | None              # the checkout's top folder


class DevPoint(TypedDict):
    step: int                     # training step after which dev was evaluated
    dev_accuracy: float           # dev accuracy at that step


class Metrics(TypedDict):
    """Accuracies (fractions) and losses; null where there is no value (a run diverged
    before its first evaluation)."""
    zero_shot_dev_accuracy: float     # dev accuracy before training
    zero_shot_test_accuracy: float    # test accuracy before training
    best_dev_accuracy: float | None   # best dev accuracy of the evaluations (the earlier of ties)
    best_step: int | None             # the step of best_dev_accuracy
    test_accuracy: float | None       # test accuracy of the best-dev checkpoint
    final_dev_accuracy: float | None  # dev accuracy at the last evaluation
    train_loss_start: float           # mean cross-entropy over the training set before training, nats
    train_loss_end: float | None      # the same after training; null if not finite
    dev_history: list[DevPoint]       # every dev evaluation, in step order


class Sparsity(TypedDict):
    """MeZO's projected gradients over every step (harness.measure.sparsity)."""
    steps: int                    # projected gradients summarised
    zero_fraction: float          # fraction exactly 0
    tiny_threshold: float         # the threshold of tiny_fraction
    tiny_fraction: float          # fraction with |g| below tiny_threshold
    mean_abs: float               # mean |g|
    abs_quantiles: dict[str, float]  # "p0", "p5", "p25", "p50", "p75", "p95", "p100" -> quantile of |g|


class _ThroughputRequired(TypedDict):
    steps_per_second: float       # training steps per second of training time
    train_seconds: float          # training time: forward + update, evaluation excluded, s
    eval_seconds: float           # dev evaluation time during training, s


class Throughput(_ThroughputRequired, total=False):
    """Training speed (harness.measure.throughput); on CUDA read after synchronising. The
    fields below are absent in records upgraded from schema 1."""
    forward_passes_per_second: float  # forward passes per second of training time
    tokens_per_second: float      # real (non-padding) tokens of the forwards per second of training time
    padding_fraction: float       # padding tokens / all tokens of the training forwards
    forward_passes: int           # training forward passes
    real_tokens: int              # real tokens of those passes
    forward_seconds: float        # time in training forwards, s
    update_seconds: float         # MeZO: perturbations and update; FT: backward and optimizer step, s


class ZStream(TypedDict):
    """How MeZO drew z (harness.zo.z_stream)."""
    stream: str                   # "sequential" (one generator stream, CPU) or "per-chunk" (CUDA)
    chunk_elements: int | None    # elements per chunk (both streams cut parameters into chunks on CPU);
                                  # None where whole tensors are drawn


class _MemoryPhaseRequired(TypedDict):
    peak_bytes: int               # peak during the phase (CPU: VmHWM, weights and runtime included)
    excess_bytes: int             # peak minus the baseline: what the phase itself added
    baseline_bytes: int           # memory just before the phase


class MemoryPhase(_MemoryPhaseRequired, total=False):
    peak_reserved_bytes: int      # CUDA only: torch.cuda.max_memory_reserved


class _MemoryRatiosRequired(TypedDict):
    mezo_over_inference: float | None            # peak: MeZO step / inference forward
    first_order_over_mezo: float | None          # peak: first-order step / MeZO step
    excess_mezo_over_inference: float | None     # excess: MeZO step / inference forward
    excess_first_order_over_mezo: float | None   # excess: first-order step / MeZO step


class MemoryRatios(_MemoryRatiosRequired, total=False):
    reference_mezo_over_inference: float | None  # peak: the reference's MeZO step / inference (when measured)
    mezo_adam_over_inference: float | None       # peak: MeZO-Adam's step / inference (MeZO-Adam runs)


class Memory(TypedDict):
    """Memory per phase on the same model and batch, after training (harness.measure.memory)."""
    method: str                   # how peaks were measured
    phases: dict[str, MemoryPhase]  # "inference", "mezo_step", "first_order_step" (those the backend can run;
                                  # inference alone for zero-shot and LP), "mezo_adam_step" (MeZO-Adam runs)
    ratios: MemoryRatios          # ratios between phases; null where a phase is missing


class MeasurementError(TypedDict):
    """A measurement that failed or was not taken, in place of its result (never estimated)."""
    error: str                    # why: the exception, or "not measured (--no-memory)", "not recorded (schema 1)"


class RadixSimulated(TypedDict):
    """(a) what a standalone SGLang RadixCache reports for MeZO steps."""
    prefix_hit_rate: float        # hit tokens / tokens over both passes of each step
    minus_pass_hit_rate: float    # the same over the -eps passes alone
    across_examples_hit_rate: float  # hits from prefixes shared between training examples
    steps: int                    # MeZO steps measured
    method: str                   # how


class RadixValidReuse(TypedDict):
    """(b) tokens a cache could serve without changing the outputs."""
    token_reuse_rate: float       # tokens with bitwise-equal keys and values in the +eps and -eps passes, fraction
    tokens: int                   # tokens compared
    method: str                   # how


class _PrefixCacheProgress(TypedDict):
    passes_completed: int         # forward passes that finished
    prefix_hit_tokens: int        # tokens served from the prefix cache
    tokens: int                   # tokens submitted


class PrefixCacheFailure(_PrefixCacheProgress):
    error: str                    # the exception SGLang raised
    raised_at: str                # file:line where it was raised
    source_line: str | None       # that line's source


class _PrefixCacheTiming(TypedDict):
    seconds: float                # time of the MeZO steps, s
    steps_per_second: float       # MeZO steps per second
    peak_bytes: int               # peak memory during the steps
    excess_bytes: int             # peak minus the memory before them


class PrefixCacheRun(_PrefixCacheTiming, _PrefixCacheProgress):
    max_abs_logit_error: float    # largest |logit difference| from the cache-off run
    prediction_flip_rate: float   # fraction of predictions that differ from the cache-off run


class _RadixPrefixCacheRequired(TypedDict):
    off: _PrefixCacheTiming       # the MeZO steps with SGLang's prefix cache off
    on: PrefixCacheRun | PrefixCacheFailure  # the same steps with it on, or how they failed
    steps: int                    # MeZO steps measured


class RadixPrefixCache(_RadixPrefixCacheRequired, total=False):
    """(c) the same MeZO steps with SGLang's prefix cache on vs off."""
    memory_saved_fraction: float  # 1 - peak on / peak off (only when the steps ran with it on)


class _RadixRequired(TypedDict):
    prefix_hit_rate: float        # (a)'s prefix_hit_rate
    token_reuse_rate: float       # (b)'s token_reuse_rate
    simulated: RadixSimulated     # (a)
    valid_reuse: RadixValidReuse  # (b)
    prefix_cache: RadixPrefixCache  # (c)


class Radix(_RadixRequired, total=False):
    """RadixAttention under MeZO on the run's first training batches (SGLang backend only;
    harness.measure.radix)."""
    memory_saved_fraction: float  # (c)'s memory_saved_fraction, when measured


class _LossCurveRequired(TypedDict):
    stride: int                   # a point every `stride` steps (and step 1), at most 10,000 points
    steps: list[int]              # the steps of the points


class LossCurve(_LossCurveRequired, total=False):
    """Per-step training values; a non-finite value is null. MeZO has loss_plus, loss_minus
    and projected_grad, first-order FT has loss; variants that train nothing have `steps` empty."""
    loss_plus: list[float | None]      # MeZO: loss at +eps*z, nats (or -accuracy)
    loss_minus: list[float | None]     # MeZO: loss at -eps*z
    projected_grad: list[float | None]  # MeZO: (loss_plus - loss_minus) / (2 eps)
    loss: list[float | None]           # first-order: the batch loss


class Timing(TypedDict):
    wall_seconds: float           # the whole run, from start to the record, s


class RecordHeader(TypedDict):
    """What every record has: the run's identity, its point and where it came from."""
    schema_version: int           # SCHEMA_VERSION when written; readers upgrade older ones
    run_id: str                   # variant, grid point, start time (UTC) and a random suffix; the file's name
    status: Status                # how the run ended
    created_utc: str              # start time, ISO 8601 with UTC offset
    protocol: Protocol            # the protocol and profile
    variant: Variant              # what is trained and how
    task: str                     # task name, e.g. "sst2"
    k: int                        # training examples per label
    seed: int                     # data split and training seed
    hyperparameters: Hyperparameters  # the grid point and every other setting
    data: Data                    # data source and split
    model: Model                  # the model as run
    tokenizer: Tokenizer          # the tokenizer
    liveness: Liveness | None     # the pre-training check; null in records upgraded from schema 1
    environment: Environment      # software and device
    git: Git                      # the code's checkout


class FailedRecord(RecordHeader):
    """status "failed": training or a measurement raised; nothing else was recorded."""
    error: str                    # the exception, "<type>: <message>"
    wall_seconds: float           # time from start to the failure, s


class LastFinite(TypedDict, total=False):
    """The last step whose training losses were all finite."""
    step: int
    loss_plus: float              # MeZO: loss at +eps*z
    loss_minus: float             # MeZO: loss at -eps*z
    loss: float                   # first-order: the batch loss


class _MaybeDiverged(RecordHeader, total=False):
    diverged_at: int              # "diverged" only: the step whose loss was not finite; training stopped there
    last_finite: LastFinite       # "diverged" only: the step before it and its losses (absent if it was step 1)


class _Measured(_MaybeDiverged):
    metrics: Metrics              # accuracies and losses
    sparsity: Sparsity | None     # MeZO only; null for first-order, in schema 1, and with no finite gradient
    throughput: Throughput | None  # training speed; null for variants that train nothing (zero-shot, LP) and in
                                   # schema-1 records that did not time training
    z_stream: ZStream | None      # MeZO only; null for first-order runs and before schema 3
    memory: Memory | MeasurementError  # memory per phase, or why it was not measured


class _MaybeRadix(_Measured, total=False):
    radix: Radix | MeasurementError  # SGLang only: RadixAttention under MeZO, or why it failed


class TrajectoryFile(TypedDict):
    """The run's MeZO trajectory beside the record (harness.zo.trajectory; `mezo-bench
    reconstruct` rebuilds the weights from it)."""
    file: str                     # file name, in the record's folder
    sha256: str                   # of the file's bytes
    steps: int                    # steps it holds (the run's steps_done)


class _FinishedRequired(_MaybeRadix):
    loss_curve: LossCurve         # per-step training values
    timing: Timing                # wall time


class LinearProbe(TypedDict):
    """The linear probe fitted before training (variants with linear_probe; harness.recipes.linear_probe)."""
    solver: str                   # the scikit-learn estimator and its arguments
    features: int                 # feature dimension (the LM head decoder's input)
    examples: int                 # training examples the probe was fitted on
    C: list[float]                # the inverse regularisation strength cross-validation chose (per class)
    train_accuracy: float         # the probe's accuracy on its training examples (scikit-learn's prediction)
    seconds: float                # feature extraction and fit, s


class FinishedRecord(_FinishedRequired, total=False):
    """status "completed" or "diverged" (a diverged run keeps the best-dev checkpoint
    before the divergence, if any, and stays a point of its grid)."""
    linear_probe: LinearProbe     # variants that fit a linear probe first (LP, LP-then-MeZO)
    trajectory: TrajectoryFile    # MeZO runs (records made before trajectories were kept lack it)


RunRecord = Union[FinishedRecord, FailedRecord]


def record_type(record: dict) -> type:
    """The schema type a record follows, by its status."""
    status = record.get("status")
    if status == "failed":
        return FailedRecord
    if status == "running":
        return RecordHeader
    return FinishedRecord


def missing_fields(record: dict) -> list[str]:
    """Dotted paths (list items as `[i]`) of the fields this schema requires of the record,
    by its status, that it lacks, or that are not an object where one is required; [] for a
    record of the current shape."""
    return _compare(record, record_type(record), "")[0]


def undeclared_fields(record: dict) -> list[str]:
    """Dotted paths of the fields the record has inside an object whose fields the schema
    declares, that the schema does not declare (a field written but not described here)."""
    return _compare(record, record_type(record), "")[1]


def _compare(value, expected, path: str) -> tuple[list[str], list[str]]:
    """(missing, undeclared) fields of `value` against the type `expected`."""
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        options = [option for option in typing.get_args(expected) if option is not type(None)]
        if value is None:
            return ([] if len(options) < len(typing.get_args(expected)) else [path]), []
        # the option the value is most of: e.g. Memory, or MeasurementError ({"error": ...})
        return min((_compare(value, option, path) for option in options),
                   key=lambda result: (len(result[1]), len(result[0])))
    if typing.is_typeddict(expected):
        if not isinstance(value, dict):
            return [path], []
        hints = typing.get_type_hints(expected)
        missing, undeclared = [], [_join(path, key) for key in value if key not in hints]
        for key, hint in hints.items():   # in declaration order
            if key in value:
                _extend(missing, undeclared, _compare(value[key], hint, _join(path, key)))
            elif key in expected.__required_keys__:
                missing.append(_join(path, key))
        return missing, undeclared
    missing, undeclared = [], []
    if origin is list and isinstance(value, list):
        [item_type] = typing.get_args(expected)
        for index, item in enumerate(value):
            _extend(missing, undeclared, _compare(item, item_type, f"{path}[{index}]"))
    elif origin is dict and isinstance(value, dict):
        _, item_type = typing.get_args(expected)
        for key, item in value.items():
            _extend(missing, undeclared, _compare(item, item_type, _join(path, key)))
    return missing, undeclared


def _extend(missing: list[str], undeclared: list[str], found: tuple[list[str], list[str]]) -> None:
    missing += found[0]
    undeclared += found[1]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
