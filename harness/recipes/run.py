"""One run of a protocol point: data -> prompt -> model -> liveness -> zero-shot eval ->
training -> test of the best-dev checkpoint -> memory -> record.

Every input is validated before anything is written; a bad value ends in one HarnessError
and no record.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.tasks.data import load_task_data, make_k_shot_split
from harness.core.errors import HarnessError
from harness.measure.liveness import check_liveness
from harness.measure.memory import measure_memory
from harness.backends.registry import get_backend
from harness.backends.tokenizers import load_tokenizer
from harness.tasks.objective import Objective
from harness.tasks.batching import collate, EpochSampler, eval_batches
from harness.tasks.prompt import label_word_ids, PromptEncoder
from harness.protocol.loading import Protocol
from harness.protocol.settings import GRID_KEYS, GridPoint, RunSettings
from harness.recipes.provenance import device_info, git_state, package_versions
from harness.results.schema import SCHEMA_VERSION
from harness.results.store import new_run_id, record_path, utc_now, write_record
from harness.measure.sparsity import summarize_projected_grads
from harness.recipes.train import train_first_order, train_mezo
from harness.protocol.variants import get_variant, require_installed


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


def run_hyperparameters(settings: RunSettings, point: GridPoint) -> dict:
    """The settings for this run: the grids (k, seeds, lr, batch_size, eps, weight_decay) become
    the chosen point."""
    values = {key: value for key, value in settings.to_dict().items() if key not in GRID_KEYS}
    return {**values, "lr": point.lr, "batch_size": point.batch_size, "eps": point.eps,
            "weight_decay": point.weight_decay}


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
        return {"error": f"{type(error).__name__}: {error}"}


def execute_run(request: RunRequest) -> Path:
    """Run one protocol point and write its record; returns the record's path."""
    started_at, wall_started = utc_now(), time.perf_counter()
    protocol = request.protocol
    protocol.check_lock()
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
    seed, lr, batch_size = point.seed, point.lr, point.batch_size

    data = load_task_data(protocol.task, request.data_dir)
    split = make_k_shot_split(data, k, seed)
    tokenizer = load_tokenizer(settings.tokenizer, data.train_sentences())
    label_ids = label_word_ids(tokenizer.tokenizer, settings.label_words)
    encoder = PromptEncoder(tokenizer.tokenizer, settings.template, settings.max_length)
    encoded = {name: encoder.encode_all(split.examples(name)) for name in ("train", "dev", "test")}
    loaded = backend.build_model(variant, settings, tokenizer.tokenizer, data.task.num_labels, device, seed)
    model = loaded.model
    if max(len(e.input_ids) for e in encoded["test"]) + 2 > model.config.max_position_embeddings:
        raise HarnessError(f"max_length={settings.max_length} exceeds model {settings.model!r}'s "
                           f"{model.config.max_position_embeddings - 2} positions")

    pad_id = tokenizer.tokenizer.pad_token_id
    objective = Objective(backend.head(variant, model, label_ids), variant.loss)
    batches = {name: eval_batches(encoded[name], settings.eval_batch_size, pad_id, device) for name in encoded}
    sampler = EpochSampler(encoded["train"], batch_size, seed, pad_id, device)
    trainable = backend.trainable_parameters(model)

    liveness = check_liveness(lambda: objective.logits(batches["train"][0]), trainable, eps=point.eps, seed=seed)
    perturbed = liveness.parameters_to_perturb(trainable, settings.perturb_dead_parameters, variant.name)

    run_id = new_run_id(variant.name, point, started_at)
    path = record_path(request.out_dir, protocol.task, protocol.name, protocol.version, profile, run_id)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "created_utc": started_at.isoformat(),
        "protocol": {"name": protocol.name, "version": protocol.version, "profile": profile,
                     "hash": protocol.settings_hash(profile, variant.name), "path": str(protocol.path),
                     "grid": settings.grid_for(k)},
        "variant": {"name": variant.name, "backend": variant.backend, "head": variant.head, "loss": variant.loss,
                    "parameters": variant.parameters, "optimizer": variant.optimizer},
        "task": protocol.task,
        "k": k,
        "seed": seed,
        "hyperparameters": run_hyperparameters(settings, point),
        "data": {"source": data.source, "source_sha256": data.source_sha256,
                 "split_sha256": split.sha256(), "split_sizes": {n: len(split.lines[n]) for n in split.lines}},
        "model": {**loaded.info, "trainable_parameters": sum(p.numel() for _, p in trainable),
                  "updated_parameters": sum(p.numel() for _, p in perturbed)},
        "tokenizer": tokenizer.info,
        "liveness": {"groups": len(liveness.live) + len(liveness.dead), "dead_groups": liveness.dead,
                     "dead_groups_perturbed": settings.perturb_dead_parameters},
        "environment": {"packages": package_versions(), "device": device_info(device)},
        "git": git_state(),
    }

    try:
        zero_shot = {"dev": objective.accuracy(batches["dev"]), "test": objective.accuracy(batches["test"])}
        train_loss_start = objective.mean_cross_entropy(batches["train"])
        common = dict(objective=objective, trainable=perturbed, sampler=sampler, dev_batches=batches["dev"],
                      steps=settings.steps, lr=lr, weight_decay=point.weight_decay,
                      lr_schedule=settings.lr_schedule, eval_every=settings.eval_every, seed=seed,
                      progress=request.progress)
        if variant.optimizer == "mezo":
            result = train_mezo(eps=point.eps, length_buckets=settings.length_buckets,
                                ragged_batches=backend.ragged_batches, **common)
        else:
            result = train_first_order(dropout=settings.dropout, max_grad_norm=settings.max_grad_norm, **common)
        train_loss_end = objective.mean_cross_entropy(batches["train"])
        memory = (measure_memory(objective, perturbed, collate(encoded["train"][:batch_size], pad_id, device),
                                 lr=lr, eps=point.eps, weight_decay=point.weight_decay, dropout=settings.dropout,
                                 phases=backend.memory_phases, in_process=backend.memory_in_process)
                  if request.measure_memory else {"error": "not measured (--no-memory)"})
        radix = (measure_radix_for_run(model, encoded["train"], batch_size, seed, pad_id, device, point.eps)
                 if backend.measures_prefix_cache else None)
        test_accuracy = None
        if result.best_state is not None:   # a run that diverged before its first evaluation has none
            model.load_state_dict(result.best_state)
            test_accuracy = objective.accuracy(batches["test"])
    except Exception as error:
        record.update(status="failed", error="".join(traceback.format_exception_only(error)).strip(),
                      wall_seconds=time.perf_counter() - wall_started)
        write_record(record, path)
        raise

    diverged = result.diverged_at is not None
    finite_grads = result.projected_grads[:-1] if diverged else result.projected_grads   # the last one is NaN
    record.update(
        # "diverged": a loss became non-finite at `diverged_at`; training stopped and the best-dev
        # checkpoint before it (if any) was tested. It still counts as a point of the grid.
        status="diverged" if diverged else "completed",
        **({"diverged_at": result.diverged_at} if diverged else {}),
        metrics={
            "zero_shot_dev_accuracy": zero_shot["dev"],
            "zero_shot_test_accuracy": zero_shot["test"],
            "best_dev_accuracy": result.best_dev_accuracy if result.best_step is not None else None,
            "best_step": result.best_step,
            "test_accuracy": test_accuracy,
            "final_dev_accuracy": result.dev_history[-1]["dev_accuracy"] if result.dev_history else None,
            "train_loss_start": train_loss_start,
            "train_loss_end": finite_or_none(train_loss_end),
            "dev_history": result.dev_history,
        },
        sparsity=(summarize_projected_grads(finite_grads, settings.sparsity_threshold)
                  if variant.optimizer == "mezo" and finite_grads else None),
        throughput=result.throughput.summary(result.steps_done),
        z_stream=result.z_stream,
        memory=memory,
        **({"radix": radix} if radix is not None else {}),
        loss_curve={"stride": result.curve_stride,
                    **{name: [finite_or_none(v) for v in values] for name, values in result.curve.items()}},
        timing={"wall_seconds": time.perf_counter() - wall_started},
    )
    return write_record(record, path)
