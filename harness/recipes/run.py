"""One run of a protocol point, in the order it runs:

1. resolve the point: protocol lock, device, profile, variant, settings, grid point; every
   input is validated here, before anything is written -- a bad value ends in one
   HarnessError and no record;
2. data: the task data, the k-shot split, the tokenizer, the encoded prompts;
3. model: the variant's model and objective, the batches, the liveness check that picks the
   parameters to perturb;
4. train: zero-shot dev and test accuracy and the training-set loss, training, the
   training-set loss again;
5. measure: memory per phase (the trained model, one training batch), and RadixAttention on
   backends with a prefix cache;
6. test the best-dev checkpoint;
7. record (harness.results.schema), written once: "completed" or "diverged", or "failed"
   with the error if anything in 4-6 raised. Ctrl-C writes none (RunInterrupted): the checkpoint
   resumes the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.backends.base import Backend, LoadedModel
from harness.backends.registry import get_backend
from harness.backends.tokenizers import LoadedTokenizer, load_tokenizer
from harness.core.errors import HarnessError
from harness.core.files import check_output_dir
from harness.measure.liveness import LivenessReport, check_liveness
from harness.measure.memory import measure_memory
from harness.measure.sparsity import summarize_projected_grads
from harness.protocol.loading import Protocol
from harness.protocol.settings import GRID_KEYS, GridPoint, RunSettings
from harness.protocol.variants import ZEROTH_ORDER, Variant, get_variant, require_installed
from harness.recipes.checkpoint import FORMAT as CHECKPOINT_FORMAT
from harness.recipes.checkpoint import RunCheckpoint
from harness.recipes.linear_probe import fit_linear_probe
from harness.recipes.provenance import (
    code_fingerprint,
    device_info,
    git_state,
    machine_identity,
    package_versions,
)
from harness.recipes.train import (
    TrainingInterrupted,
    TrainResult,
    evaluate_untrained,
    train_first_order,
    train_mezo,
    train_mezo_adam,
)
from harness.results import schema
from harness.results.run_state import RUNS, point_key
from harness.results.schema import SCHEMA_VERSION
from harness.results.selection import machine_digest
from harness.results.store import new_run_id, record_path, utc_now, write_record
from harness.tasks.batching import (
    Batch,
    EncodedExample,
    EpochSampler,
    collate,
    eval_batches,
)
from harness.tasks.data import KShotSplit, TaskData, load_task_data, make_k_shot_split
from harness.tasks.objective import Objective
from harness.tasks.prompt import PromptEncoder, label_word_ids
from harness.zo.trajectory import TRAJECTORY_SUFFIX, Trajectory


@dataclass(frozen=True)
class RunRequest:
    protocol: Protocol
    profile: str              # a profile name or "auto"
    variant: str
    k: int | None             # None: the settings' only value
    seed: int | None
    lr: float | None
    out_dir: Path
    batch_size: int | None = None
    eps: float | None = None
    weight_decay: float | None = None
    data_dir: str | None = None
    device: str = "auto"
    progress: bool = True
    measure_memory: bool = True
    checkpoint_every: int | None = None        # steps between checkpoints; None: the protocol's [checkpoints]
    snapshot_every: int | None = None          # MeZO: steps between weight snapshots; None: the protocol's
    restart: bool = False                      # discard a saved checkpoint of this run instead of resuming it


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda was given but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise HarnessError(f"--device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def choose(option: str, value, allowed: tuple, where: str):
    """A grid value: the given one if the grid has it, or the grid's only value."""
    if value is None:
        if len(allowed) == 1:
            return allowed[0]
        raise HarnessError(f"{where} has {option} in {list(allowed)}: pass --{option.replace('_', '-')} "
                           f"(or use `mezo-bench bench` to run them all)")
    matches = [a for a in allowed if math.isclose(a, value, rel_tol=1e-9, abs_tol=0.0)]
    if not matches:
        raise HarnessError(f"--{option.replace('_', '-')} {value} is not in {where}; allowed: {list(allowed)}")
    return matches[0]


def run_hyperparameters(settings: RunSettings, point: GridPoint) -> schema.Hyperparameters:
    """The settings for this run: the grids (k, seeds, lr, batch_size, eps, weight_decay) become
    the chosen point."""
    values = {key: value for key, value in settings.to_dict().items() if key not in GRID_KEYS}
    return schema.Hyperparameters(**values, lr=point.lr, batch_size=point.batch_size, eps=point.eps,
                                  weight_decay=point.weight_decay)


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged run's non-finite losses are recorded as null."""
    return value if math.isfinite(value) else None


RADIX_STEPS = 10   # MeZO steps (the run's first batches) over which RadixAttention is measured


def measure_radix_for_run(model, encoded_train, batch_size: int, seed: int, pad_id: int, device, eps: float) -> dict:
    """RadixAttention under MeZO on this run's first training batches (SGLang backend)."""
    from harness.measure.radix import measure_radix  # imports SGLang

    sampler = EpochSampler(encoded_train, batch_size, seed, pad_id, device)
    try:
        return measure_radix(model, [sampler.next() for _ in range(RADIX_STEPS)],
                             [example.input_ids for example in encoded_train], eps=eps, seed=seed)
    except Exception as error:   # a measurement failure must not lose the run's other results
        return schema.MeasurementError(error=f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class _Resolved:
    """What a request resolves to: where the run belongs, and its grid point."""
    protocol: Protocol
    device: torch.device
    profile: str
    variant: Variant
    backend: Backend
    settings: RunSettings
    point: GridPoint


@dataclass(frozen=True)
class _Data:
    task_data: TaskData
    split: KShotSplit
    tokenizer: LoadedTokenizer
    label_ids: list[int]
    encoded: dict[str, list[EncodedExample]]   # "train", "dev", "test" -> encoded prompts


@dataclass(frozen=True)
class _ModelSetup:
    loaded: LoadedModel
    objective: Objective
    batches: dict[str, list[Batch]]            # "train", "dev", "test" -> evaluation batches
    sampler: EpochSampler                      # training batches
    trainable: list[tuple[str, torch.Tensor]]  # the variant's trainable set
    liveness: LivenessReport
    perturbed: list[tuple[str, torch.Tensor]]  # what training perturbs and updates (the live groups)


@dataclass(frozen=True)
class _Trained:
    zero_shot: dict[str, float]                # "dev", "test" -> accuracy before training (and before LP)
    train_loss_start: float                    # after the linear probe, if the variant fits one
    result: TrainResult
    train_loss_end: float
    linear_probe: schema.LinearProbe | None    # the probe fitted before training (LP variants)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run. Its message says which run, where it stopped and whether a checkpoint
    resumes it; `mezo-bench` prints it as its one line. No record is written: the run did not fail."""


def execute_run(request: RunRequest) -> Path:
    """Run one protocol point and write its record; returns the record's path. Ctrl-C ends it
    as RunInterrupted."""
    started_at, wall_started = utc_now(), time.perf_counter()
    run = _resolve_point(request)
    doing = ["setting up"]   # what the run is doing, for an interrupt's message
    try:
        return _execute(run, request, started_at, wall_started, doing)
    except KeyboardInterrupt as interrupt:
        raise RunInterrupted(_interrupted(run, request, interrupt, doing[0])) from None


def _interrupted(run: _Resolved, request: RunRequest, interrupt: KeyboardInterrupt, doing: str) -> str:
    """`interrupted at step N/S of <run>; <what resumes it>`, from the checkpoint on disk."""
    point = run.point
    name = (f"{run.variant.name} k={point.k} seed={point.seed} lr={point.lr:g} batch={point.batch_size} "
            f"eps={point.eps:g} wd={point.weight_decay:g}")
    step = interrupt.step if isinstance(interrupt, TrainingInterrupted) else None
    where = f"at step {step}/{run.settings.steps} of" if step is not None else f"while {doing}"
    folder = _checkpoint_folder(run, request)
    try:
        saved_step = json.loads((folder / "state.json").read_text())["step"]
    except FileNotFoundError:
        return f"interrupted {where} {name}; nothing to resume (no checkpoint yet)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"interrupted {where} {name}; nothing to resume ({folder / 'state.json'} unreadable: {error})"
    again = "run the same command again" + (" without --restart" if request.restart else "")
    return f"interrupted {where} {name}; resumable: {again} (checkpoint at step {saved_step} in {folder})"


def _execute(run: _Resolved, request: RunRequest, started_at, wall_started: float, doing: list[str]) -> Path:
    data = _setup_data(run, request)
    checkpoint = _checkpoint(run, data, request)
    saved = checkpoint.load()
    setup = _setup_model(run, data)
    header = _record_header(run, data, setup, started_at)
    path = _path(request, run, header["run_id"])
    if saved is not None and not _path(request, run, saved["identity"]["run_id"]).exists():
        # the interrupted run's identity: its record is the one it would have written (unless an
        # attempt already wrote one under it, e.g. a failure now retried: then a new identity)
        header.update(run_id=saved["identity"]["run_id"], created_utc=saved["identity"]["created_utc"])
        path = _path(request, run, header["run_id"])
    checkpoint.identity = {"run_id": header["run_id"], "created_utc": header["created_utc"]}
    try:
        doing[0] = "training"
        trained = _train(run, setup, request, checkpoint)
        doing[0] = "measuring"
        memory, radix = _measure(run, data, setup, request)
        doing[0] = "testing"
        test_accuracy = _test_best_dev(setup, trained.result)
    except Exception as error:   # not KeyboardInterrupt: an interrupted run writes no record
        write_record(_failed_record(header, error, wall_started), path)
        raise
    record = _finished_record(header, run, trained, memory, radix, test_accuracy, wall_started)
    if trained.linear_probe is not None:
        record["linear_probe"] = trained.linear_probe
    if trained.result.trajectory is not None:
        record["trajectory"] = _save_trajectory(trained.result.trajectory, path)
    written = write_record(record, path)
    checkpoint.discard()
    return written


def _path(request: RunRequest, run: _Resolved, run_id: str) -> Path:
    return record_path(request.out_dir, run.protocol.task, run.protocol.name, run.protocol.version, run.profile,
                       run_id)


def _checkpoint_folder(run: _Resolved, request: RunRequest) -> Path:
    return Path(request.out_dir) / RUNS / point_key(run.protocol, run.profile, run.variant.name, run.point)


def _checkpoint(run: _Resolved, data: _Data, request: RunRequest) -> RunCheckpoint:
    """The run's checkpoint folder under the results root, keyed by its run key; a resume must match
    everything that could change its numbers (fingerprint)."""
    policy = run.protocol.checkpoints
    folder = _checkpoint_folder(run, request)
    checkpoint = RunCheckpoint(folder,
                               fingerprint={"run_key": folder.name, "device_type": run.device.type,
                                            "device": device_info(run.device)["name"],
                                            "machine_id": machine_digest(machine_identity(run.device)),
                                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                            "packages": package_versions(), "code": code_fingerprint(),
                                            "split_sha256": data.split.sha256(),
                                            "tokenizer_sha256": data.tokenizer.info["sha256"],
                                            "format": CHECKPOINT_FORMAT},
                               every=request.checkpoint_every or policy.every, every_seconds=policy.every_seconds,
                               snapshot_every=request.snapshot_every or policy.snapshot_every)
    if request.restart:
        checkpoint.discard()
    return checkpoint


def _save_trajectory(trajectory: Trajectory, record: Path) -> schema.TrajectoryFile:
    """The trajectory beside the record: <run id>.trajectory.safetensors."""
    path = record.with_name(f"{record.stem}{TRAJECTORY_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    trajectory.save(path, exclusive=False)   # a kill before the record was written may have left it
    return schema.TrajectoryFile(file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                 steps=trajectory.steps)


def _resolve_point(request: RunRequest) -> _Resolved:
    """Check the protocol's lock and every option; the grid point the options choose."""
    protocol = request.protocol
    protocol.check_lock()
    check_output_dir(request.out_dir, "--out")
    device = resolve_device(request.device)
    profile = protocol.resolve_profile_name(request.profile, device.type)
    variant = get_variant(request.variant)
    backend = get_backend(variant.backend)
    settings = protocol.run_settings(profile, variant.name)
    require_installed(variant)
    where = f"profile {profile!r} variant {variant.name!r}"
    if request.k is not None and request.k < 1:
        raise HarnessError(f"--k must be an integer >= 1, got {request.k}")
    k = choose("k", request.k, settings.k, where)
    point = GridPoint(k=k, seed=choose("seed", request.seed, settings.seeds, where),
                      lr=choose("lr", request.lr, settings.lr, where),
                      batch_size=choose("batch_size", request.batch_size, settings.batch_size[k], where),
                      eps=choose("eps", request.eps, settings.eps, where),
                      weight_decay=choose("weight_decay", request.weight_decay, settings.weight_decay, where))
    return _Resolved(protocol, device, profile, variant, backend, settings, point)


def check_grid_inputs(request: RunRequest, points: list[tuple[str, GridPoint]]) -> None:
    """Everything a grid's runs will read, checked before the first one starts (no model is
    built): the protocol's lock, the results root, the data and each (k, seed)'s split, and
    each tokenizer's label words."""
    request.protocol.check_lock()
    check_output_dir(request.out_dir, "--out")
    data = load_task_data(request.protocol.task, request.data_dir)
    splits = [make_k_shot_split(data, k, seed) for k, seed in sorted({(point.k, point.seed) for _, point in points})]
    settings = [request.protocol.run_settings(request.profile, variant) for variant, _ in points]
    for tokenizer_spec, label_words in sorted({(s.tokenizer, s.label_words) for s in settings}):
        tokenizer = load_tokenizer(tokenizer_spec, data.train_sentences(), label_words)
        _label_ids(tokenizer, label_words, data)
        for prompt in {_prompt_settings(s) for s in settings if (s.tokenizer, s.label_words) == (tokenizer_spec, label_words)}:
            encoder = PromptEncoder(tokenizer.tokenizer, *prompt)
            for split in splits:
                for name in ("train", "dev", "test"):
                    encoder.encode_all(split.examples(name))


def _prompt_settings(settings: RunSettings) -> tuple:
    """PromptEncoder's arguments after the tokenizer."""
    return settings.template, settings.max_length, settings.first_sent_limit, settings.other_sent_limit


def _label_ids(tokenizer: LoadedTokenizer, label_words: tuple[str, ...], data: TaskData) -> list[int]:
    """The label words' token ids; for a tokenizer trained on the task's data, an error says
    how often each word occurs there (a tiny training set is the usual cause)."""
    try:
        return label_word_ids(tokenizer.tokenizer, label_words)
    except HarnessError as error:
        if "trained_on" not in tokenizer.info:
            raise
        raise HarnessError(f"{error}. The {tokenizer.info['id']} tokenizer learns its vocabulary from the task's "
                           f"{len(data.train_lines)} training sentences ({data.source}); "
                           f"{_word_counts(label_words, data.train_sentences())}: a word needs 2 or more "
                           f"to become a token, so the training data is too small or lacks the label words") from None


def _setup_data(run: _Resolved, request: RunRequest) -> _Data:
    """The task data, the run's k-shot split, the tokenizer and every split's prompts."""
    settings = run.settings
    data = load_task_data(run.protocol.task, request.data_dir)
    split = make_k_shot_split(data, run.point.k, run.point.seed)
    tokenizer = load_tokenizer(settings.tokenizer, data.train_sentences(), settings.label_words)
    label_ids = _label_ids(tokenizer, settings.label_words, data)
    encoder = PromptEncoder(tokenizer.tokenizer, *_prompt_settings(settings))
    encoded = {name: encoder.encode_all(split.examples(name)) for name in ("train", "dev", "test")}
    return _Data(data, split, tokenizer, label_ids, encoded)


def _word_counts(words: tuple[str, ...], sentences: list[str]) -> str:
    counts = {word.strip(): sum(sentence.split().count(word.strip()) for sentence in sentences) for word in words}
    return ", ".join(f"{word!r} occurs {n} time(s)" for word, n in counts.items())


def _setup_model(run: _Resolved, data: _Data) -> _ModelSetup:
    """The variant's model and objective, the batches, and the parameters to perturb: the
    trainable groups the liveness check finds live (all of them if the settings say so)."""
    settings, variant, backend, point, device = run.settings, run.variant, run.backend, run.point, run.device
    loaded = backend.build_model(variant, settings, data.tokenizer.tokenizer, data.task_data.task.num_labels, device,
                                 point.seed)
    model = loaded.model
    if max(len(e.input_ids) for e in data.encoded["test"]) + 2 > model.config.max_position_embeddings:
        raise HarnessError(f"max_length={settings.max_length} exceeds model {settings.model!r}'s "
                           f"{model.config.max_position_embeddings - 2} positions")

    pad_id = data.tokenizer.tokenizer.pad_token_id
    objective = Objective(backend.head(variant, model, data.label_ids), variant.loss)
    batches = {name: eval_batches(data.encoded[name], settings.eval_batch_size, pad_id, device)
               for name in data.encoded}
    sampler = EpochSampler(data.encoded["train"], point.batch_size, point.seed, pad_id, device)
    trainable = backend.trainable_parameters(model)
    if variant.optimizer == "none":   # nothing to train, so nothing to check
        liveness, perturbed = LivenessReport(live=[], dead=[]), []
    else:
        liveness = check_liveness(lambda: objective.logits(batches["train"][0]), trainable, eps=point.eps,
                                  seed=point.seed)
        perturbed = liveness.parameters_to_perturb(trainable, settings.perturb_dead_parameters, variant.name)
    return _ModelSetup(loaded, objective, batches, sampler, trainable, liveness, perturbed)


def _record_header(run: _Resolved, data: _Data, setup: _ModelSetup, started_at) -> schema.RecordHeader:
    """The record's identity, point and provenance, known before training starts."""
    protocol, settings, variant, point = run.protocol, run.settings, run.variant, run.point
    split = data.split
    return schema.RecordHeader(
        schema_version=SCHEMA_VERSION,
        run_id=new_run_id(variant.name, point, started_at),
        status="running",
        created_utc=started_at.isoformat(),
        protocol=schema.Protocol(name=protocol.name, version=protocol.version, profile=run.profile,
                                 hash=protocol.settings_hash(run.profile, variant.name), path=str(protocol.path),
                                 grid=settings.grid_for(point.k)),
        variant=schema.Variant(name=variant.name, backend=variant.backend, head=variant.head, loss=variant.loss,
                               parameters=variant.parameters, optimizer=variant.optimizer,
                               **({"linear_probe": True} if variant.linear_probe else {})),
        task=protocol.task,
        k=point.k,
        seed=point.seed,
        hyperparameters=run_hyperparameters(settings, point),
        data=schema.Data(source=data.task_data.source, source_sha256=data.task_data.source_sha256,
                         split_sha256=split.sha256(), split_sizes={n: len(split.lines[n]) for n in split.lines}),
        model=schema.Model(**setup.loaded.info, trainable_parameters=sum(p.numel() for _, p in setup.trainable),
                           updated_parameters=sum(p.numel() for _, p in setup.perturbed)),
        tokenizer=data.tokenizer.info,
        liveness=schema.Liveness(groups=len(setup.liveness.live) + len(setup.liveness.dead),
                                 dead_groups=setup.liveness.dead,
                                 dead_groups_perturbed=settings.perturb_dead_parameters),
        environment=_environment(run.device),
        git=git_state(),
    )


def _environment(device) -> schema.Environment:
    machine = machine_identity(device)
    return schema.Environment(packages=package_versions(), device=device_info(device), machine=machine,
                              machine_id=machine_digest(machine))


def _train(run: _Resolved, setup: _ModelSetup, request: RunRequest, checkpoint: RunCheckpoint | None) -> _Trained:
    """Zero-shot accuracy and the training-set loss, then training (MeZO or first-order), then
    the training-set loss again."""
    settings, point, variant, objective, batches = run.settings, run.point, run.variant, setup.objective, setup.batches
    zero_shot = {"dev": objective.accuracy(batches["dev"]), "test": objective.accuracy(batches["test"])}
    # Before training, also when resuming: the checkpoint's weights (or the trajectory replayed from
    # here) start from the probed head, and the fit is deterministic, so the record gets it again.
    probe = fit_linear_probe(objective.head, batches["train"]) if variant.linear_probe else None
    train_loss_start = objective.mean_cross_entropy(batches["train"])
    common = dict(objective=objective, trainable=setup.perturbed, sampler=setup.sampler, dev_batches=batches["dev"],
                  steps=settings.steps, lr=point.lr, weight_decay=point.weight_decay,
                  lr_schedule=settings.lr_schedule, eval_every=settings.eval_every, seed=point.seed,
                  progress=request.progress)
    if variant.optimizer == "mezo":
        result = train_mezo(eps=point.eps, length_buckets=settings.length_buckets,
                            ragged_batches=run.backend.ragged_batches, checkpoint=checkpoint, **common)
    elif variant.optimizer == "mezo-adam":
        result = train_mezo_adam(eps=point.eps, checkpoint=checkpoint, **common)
    elif variant.optimizer == "adamw":
        result = train_first_order(dropout=settings.dropout, max_grad_norm=settings.max_grad_norm,
                                   checkpoint=checkpoint, **common)
    else:
        result = evaluate_untrained(objective=objective, dev_batches=batches["dev"])
    train_loss_end = objective.mean_cross_entropy(batches["train"])
    return _Trained(zero_shot, train_loss_start, result, train_loss_end, probe)


def _measure(run: _Resolved, data: _Data, setup: _ModelSetup, request: RunRequest) -> tuple[dict, dict | None]:
    """(memory per phase, RadixAttention or None): each a result or {"error": ...}."""
    settings, point, backend, device = run.settings, run.point, run.backend, run.device
    pad_id = data.tokenizer.tokenizer.pad_token_id
    memory = (measure_memory(setup.objective, setup.perturbed,
                             collate(data.encoded["train"][:point.batch_size], pad_id, device),
                             lr=point.lr, eps=point.eps, weight_decay=point.weight_decay, dropout=settings.dropout,
                             phases=memory_phases(run.variant, backend), in_process=backend.memory_in_process)
              if request.measure_memory else schema.MeasurementError(error="not measured (--no-memory)"))
    radix = (measure_radix_for_run(setup.loaded.model, data.encoded["train"], point.batch_size, point.seed, pad_id,
                                   device, point.eps)
             if backend.measures_prefix_cache else None)
    return memory, radix


def memory_phases(variant: Variant, backend: Backend) -> tuple[str, ...]:
    """The phases a run measures: the backend's (inference, MeZO step, first-order step), plus
    MeZO-Adam's own step for MeZO-Adam; inference alone for a variant with nothing to train."""
    if variant.optimizer == "none":
        return ("inference",)
    return backend.memory_phases + (("mezo_adam_step",) if variant.optimizer == "mezo-adam" else ())


def _test_best_dev(setup: _ModelSetup, result: TrainResult) -> float | None:
    """Test accuracy of the best-dev checkpoint; of the model as it is for a variant that trains
    nothing (its only evaluation, step 0); None for a run that diverged before its first
    evaluation (it has none)."""
    if result.steps_done == 0 and result.best_step == 0:
        return setup.objective.accuracy(setup.batches["test"])
    if result.best_state is None:
        return None
    setup.loaded.model.load_state_dict(result.best_state)
    return setup.objective.accuracy(setup.batches["test"])


def _failed_record(header: schema.RecordHeader, error: Exception, wall_started: float) -> schema.FailedRecord:
    return schema.FailedRecord(**{**header, "status": "failed"},
                               error="".join(traceback.format_exception_only(error)).strip(),
                               wall_seconds=time.perf_counter() - wall_started)


def _finished_record(header: schema.RecordHeader, run: _Resolved, trained: _Trained, memory: dict, radix: dict | None,
                     test_accuracy: float | None, wall_started: float) -> schema.FinishedRecord:
    result = trained.result
    diverged = result.diverged_at is not None
    finite_grads = result.projected_grads[:-1] if diverged else result.projected_grads   # the last one is NaN
    mezo = run.variant.optimizer in ZEROTH_ORDER
    return schema.FinishedRecord(
        **{**header,
           # "diverged": a loss became non-finite at `diverged_at`; training stopped and the best-dev
           # checkpoint before it (if any) was tested. It still counts as a point of the grid.
           "status": "diverged" if diverged else "completed"},
        **({"diverged_at": result.diverged_at} if diverged else {}),
        **({"last_finite": result.last_finite} if diverged and result.last_finite else {}),
        metrics=_metrics(trained, test_accuracy),
        sparsity=(summarize_projected_grads(finite_grads, run.settings.sparsity_threshold)
                  if mezo and finite_grads else None),
        throughput=result.throughput.summary(result.steps_done) if result.steps_done else None,
        z_stream=result.z_stream,
        memory=memory,
        **({"radix": radix} if radix is not None else {}),
        loss_curve=schema.LossCurve(stride=result.curve_stride,
                                    **{name: [finite_or_none(v) for v in values]
                                       for name, values in result.curve.items()}),
        timing=schema.Timing(wall_seconds=time.perf_counter() - wall_started),
    )


def _metrics(trained: _Trained, test_accuracy: float | None) -> schema.Metrics:
    result = trained.result
    return schema.Metrics(
        zero_shot_dev_accuracy=trained.zero_shot["dev"],
        zero_shot_test_accuracy=trained.zero_shot["test"],
        best_dev_accuracy=result.best_dev_accuracy if result.best_step is not None else None,
        best_step=result.best_step,
        test_accuracy=test_accuracy,
        final_dev_accuracy=result.dev_history[-1]["dev_accuracy"] if result.dev_history else None,
        train_loss_start=trained.train_loss_start,
        train_loss_end=finite_or_none(trained.train_loss_end),
        dev_history=result.dev_history,
    )
