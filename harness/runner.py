"""One run of a protocol: data -> prompt -> model -> zero-shot eval -> MeZO -> test -> record.

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

from harness.data import load_task_data, make_k_shot_split
from harness.errors import HarnessError
from harness.modeling import load_model, load_tokenizer
from harness.objective import LabelWordObjective
from harness.prompt import EpochSampler, PromptEncoder, eval_batches, label_word_ids
from harness.protocol import Protocol
from harness.record import (SCHEMA_VERSION, device_info, git_state, new_run_id, package_versions,
                            record_path, utc_now, write_record)
from harness.train import train_mezo
from harness.variants import get_variant


@dataclass(frozen=True)
class RunRequest:
    protocol: Protocol
    profile: str          # a profile name or "auto"
    variant: str
    k: int | None         # None: the profile's only value
    seed: int | None
    lr: float | None
    out_dir: Path
    data_dir: str | None = None
    device: str = "auto"
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda was given but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise HarnessError(f"--device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def choose(option: str, value, allowed: tuple, profile: str):
    """A grid value from the profile: the given one if allowed, or the only one there is."""
    if value is None:
        if len(allowed) == 1:
            return allowed[0]
        raise HarnessError(f"profile {profile!r} has {option} in {list(allowed)}: pass --{option} "
                           f"(or use `mezo-bench bench` to run them all)")
    matches = [a for a in allowed if (math.isclose(a, value, rel_tol=1e-9) if option == "lr" else a == value)]
    if not matches:
        raise HarnessError(f"--{option} {value} is not in profile {profile!r}; allowed: {list(allowed)}")
    return matches[0]


def run_hyperparameters(profile, lr: float) -> dict:
    """The profile's values for this run: the grids (k, seeds, lr, variants) become the chosen point."""
    values = {key: value for key, value in profile.to_dict().items() if key not in ("k", "seeds", "lr", "variants")}
    return {**values, "lr": lr}


def execute_run(request: RunRequest) -> Path:
    """Run one protocol point and write its record; returns the record's path."""
    started_at, wall_started = utc_now(), time.perf_counter()
    protocol = request.protocol
    protocol.check_lock()
    device = resolve_device(request.device)
    profile_name = protocol.resolve_profile_name(request.profile, device.type)
    profile = protocol.profile(profile_name)
    variant = get_variant(request.variant)
    if variant.name not in profile.variants:
        raise HarnessError(f"variant {variant.name!r} is not part of profile {profile_name!r}; "
                           f"its variants: {list(profile.variants)}")
    if request.k is not None and request.k < 1:
        raise HarnessError(f"--k must be an integer >= 1, got {request.k}")
    k = choose("k", request.k, profile.k, profile_name)
    seed = choose("seed", request.seed, profile.seeds, profile_name)
    lr = choose("lr", request.lr, profile.lr, profile_name)

    data = load_task_data(protocol.task, request.data_dir)
    split = make_k_shot_split(data, k, seed)
    tokenizer = load_tokenizer(profile.tokenizer, data.train_sentences())
    label_ids = label_word_ids(tokenizer.tokenizer, profile.label_words)
    encoder = PromptEncoder(tokenizer.tokenizer, profile.template, profile.max_length)
    encoded = {name: encoder.encode_all(split.examples(name)) for name in ("train", "dev", "test")}
    loaded = load_model(profile.model, tokenizer.tokenizer, init_seed=profile.init_seed,
                        dtype=profile.dtype, device=device)
    model = loaded.model
    if max(len(e.input_ids) for e in encoded["test"]) + 2 > model.config.max_position_embeddings:
        raise HarnessError(f"max_length={profile.max_length} exceeds model {profile.model!r}'s "
                           f"{model.config.max_position_embeddings - 2} positions")

    pad_id = tokenizer.tokenizer.pad_token_id
    objective = LabelWordObjective(model, label_ids)
    batches = {name: eval_batches(encoded[name], profile.eval_batch_size, pad_id, device) for name in encoded}
    sampler = EpochSampler(encoded["train"], profile.batch_size, seed, pad_id, device)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    run_id = new_run_id(variant.name, k, seed, lr, started_at)
    path = record_path(request.out_dir, protocol.task, protocol.name, protocol.version, profile_name, run_id)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "created_utc": started_at.isoformat(),
        "protocol": {"name": protocol.name, "version": protocol.version, "profile": profile_name,
                     "hash": protocol.profile_hash(profile_name), "path": str(protocol.path)},
        "variant": {"name": variant.name, "backend": variant.backend, "objective": variant.objective,
                    "parameters": variant.parameters, "optimizer": variant.optimizer},
        "task": protocol.task,
        "k": k,
        "seed": seed,
        "hyperparameters": run_hyperparameters(profile, lr),
        "data": {"source": data.source, "source_sha256": data.source_sha256,
                 "split_sha256": split.sha256(), "split_sizes": {n: len(split.lines[n]) for n in split.lines}},
        "model": {**loaded.info, "trainable_parameters": sum(p.numel() for _, p in trainable)},
        "tokenizer": tokenizer.info,
        "environment": {"packages": package_versions(), "device": device_info(device)},
        "git": git_state(),
    }

    try:
        zero_shot = {"dev": objective.accuracy(batches["dev"]), "test": objective.accuracy(batches["test"])}
        train_loss_start = objective.mean_loss(batches["train"])
        result = train_mezo(objective=objective, trainable=trainable, sampler=sampler,
                            dev_batches=batches["dev"], steps=profile.steps, lr=lr, eps=profile.eps,
                            weight_decay=profile.weight_decay, eval_every=profile.eval_every, seed=seed,
                            progress=request.progress)
        train_loss_end = objective.mean_loss(batches["train"])
        model.load_state_dict(result.best_state)
        test_accuracy = objective.accuracy(batches["test"])
    except Exception as error:
        record.update(status="failed", error="".join(traceback.format_exception_only(error)).strip(),
                      wall_seconds=time.perf_counter() - wall_started)
        write_record(record, path)
        raise

    record.update(
        status="completed",
        metrics={
            "zero_shot_dev_accuracy": zero_shot["dev"],
            "zero_shot_test_accuracy": zero_shot["test"],
            "best_dev_accuracy": result.best_dev_accuracy,
            "best_step": result.best_step,
            "test_accuracy": test_accuracy,
            "final_dev_accuracy": result.dev_history[-1]["dev_accuracy"],
            "train_loss_start": train_loss_start,
            "train_loss_end": train_loss_end,
            "dev_history": result.dev_history,
        },
        loss_curve={"stride": result.curve_stride, "steps": result.curve_steps,
                    "loss_plus": result.loss_plus, "loss_minus": result.loss_minus,
                    "projected_grad": result.projected_grad},
        timing={"wall_seconds": time.perf_counter() - wall_started, "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds, "steps_per_second": profile.steps / result.train_seconds},
    )
    return write_record(record, path)
