"""The settings of one (profile, variant) pair of a protocol, validated on construction, and
the grid points they span.

Grids: `k`, `seeds` and `lr` are lists; `batch_size` is one size, a list, or a table per k
such as `{ 16 = [2, 4, 8], 512 = [8, 16, 32] }`; `eps` and `weight_decay` are a number or a
list. A run is one GridPoint; `mezo-bench bench` runs them all, and every record carries its
profile's grid for its k (`protocol.grid`), so a reader can tell a complete grid. Unknown keys
and bad values fail with a message naming the key and the allowed values.

Special model and tokenizer values for offline work: `pretrained:<name>` (a pretrained stand-in
shipped in a package, harness.backends.standins), `random-init:<tiny|roberta-base|roberta-large|bert-tiny>`
(harness.backends.model_specs) and `trained-bpe:<vocab size>[+label-words]`
(harness.backends.tokenizers); anything else is a hub id or a local path."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from harness.backends.model_specs import (
    RANDOM_INIT_CONFIGS,
    RANDOM_INIT_PREFIX,
    TRAINED_BPE_PREFIX,
    parse_trained_bpe,
)
from harness.backends.standins import PRETRAINED_PREFIX, STANDINS
from harness.backends.registry import backend_entry
from harness.core.dtypes import DTYPE_NAMES
from harness.core.errors import HarnessError
from harness.protocol.variants import ZEROTH_ORDER, Variant
from harness.tasks.template import MASK_SLOT, sentence_indices

DEVICE_KINDS = ("cpu", "cuda")


def standin_scope(model_id: str) -> str | None:
    """What a verdict reached on a pretrained stand-in says of its model (harness.backends.standins);
    None for any other model."""
    if model_id.startswith(PRETRAINED_PREFIX) and model_id[len(PRETRAINED_PREFIX):] in STANDINS:
        return STANDINS[model_id[len(PRETRAINED_PREFIX):]].scope
    return None


def invalid(field: str, message: str, value) -> None:
    raise HarnessError(f"field {field!r} {message}, got {value!r}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


LR_SCHEDULES = ("constant", "linear")
LM_DECODERS = ("tied", "untied")
GRID_KEYS = ("k", "seeds", "lr", "batch_size", "eps", "weight_decay")
# Settings added after a protocol was locked: left out of `to_dict` (and so of the settings
# hash) while unset, where they mean what the code did before they existed.
HASHED_ONLY_WHEN_SET = ("first_sent_limit", "other_sent_limit", "num_prefix")


@dataclass(frozen=True)
class GridPoint:
    """One run of a profile's grid: the values that, with the protocol hash, identify it."""

    k: int
    seed: int
    lr: float
    batch_size: int
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often runs checkpoint (the protocol's [checkpoints] table). Not part of any settings
    hash: a checkpoint never changes a result, only what an interruption costs."""

    every: int = 1000               # steps between checkpoints
    every_seconds: float = 600.0    # and at most this long apart
    snapshot_every: int = 10_000    # MeZO: steps between weight snapshots (bounds the replay on resume)

    def __post_init__(self) -> None:
        for name in ("every", "snapshot_every"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                invalid(f"checkpoints.{name}", "must be an integer >= 1", getattr(self, name))
        if not is_number(self.every_seconds) or self.every_seconds <= 0:
            invalid("checkpoints.every_seconds", "must be a positive number", self.every_seconds)


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines the runs of one variant in one profile. Validated on
    construction; k, seeds, lr, batch_size (per k), eps and weight_decay are grids."""

    model: str                   # hub id, local path or random-init:<config>
    tokenizer: str               # hub id, local path or trained-bpe:<vocab size>
    k: tuple[int, ...]           # grid: examples per label
    seeds: tuple[int, ...]       # grid: data split and run seeds
    lr: tuple[float, ...]        # grid: learning rates
    batch_size: dict[int, tuple[int, ...]]   # grid: batch sizes per k
    steps: int
    eval_every: int              # dev evaluation every this many steps (and at the last)
    eval_batch_size: int
    eps: tuple[float, ...]       # grid: MeZO's perturbation scale
    weight_decay: tuple[float, ...]   # grid
    lr_schedule: str             # "constant" or "linear" (decay to 0, no warm-up)
    dropout: bool                # first-order training steps only; MeZO's passes run in eval mode
    max_length: int              # tokens, template included; longer prompts lose their tail (LM-BFF)
    dtype: str                   # harness.core.dtypes.DTYPE_NAMES
    init_seed: int               # weights of a random-init model (the same stand-in for every seed)
    template: tuple[str, ...]    # prompt parts (harness.tasks.prompt)
    label_words: tuple[str, ...]   # one single-token word per label, in label order
    sparsity_threshold: float    # |projected_grad| below this counts as tiny
    perturb_dead_parameters: bool   # also perturb parameter groups that cannot change the loss
    lm_decoder: str              # "untied": the LM head's own decoder (the reference); "tied": the word embeddings
    max_grad_norm: float | None = None   # first-order only: gradient clipping before each step (HF Trainer: 1.0)
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_targets: tuple[str, ...] | None = None
    length_buckets: int = 1      # > 1: MeZO's forwards run the batch in length buckets
    first_sent_limit: int | None = None   # tokens kept of sentence 0 (LM-BFF's --first_sent_limit)
    other_sent_limit: int | None = None   # tokens kept of each other sentence (--other_sent_limit)
    num_prefix: int | None = None   # prefix variants: prefix tokens (keys and values) per layer (--num_prefix)

    def __post_init__(self) -> None:
        for name in ("model", "tokenizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                invalid(name, "must be a non-empty string (hub id, local path or special form)", value)
        if self.model.startswith(RANDOM_INIT_PREFIX):
            config = self.model[len(RANDOM_INIT_PREFIX):]
            if config not in RANDOM_INIT_CONFIGS:
                invalid("model", f"random-init config must be one of {sorted(RANDOM_INIT_CONFIGS)}", config)
        for name in ("model", "tokenizer"):
            value = getattr(self, name)
            if value.startswith(PRETRAINED_PREFIX) and value[len(PRETRAINED_PREFIX):] not in STANDINS:
                invalid(name, f"pretrained stand-in must be one of {sorted(PRETRAINED_PREFIX + n for n in STANDINS)}", value)
        if self.tokenizer.startswith(TRAINED_BPE_PREFIX):
            size, _ = parse_trained_bpe(self.tokenizer)
            if not size.isdigit() or not 256 < int(size) <= 1_000_000:
                invalid("tokenizer", "trained-bpe vocabulary size must be an integer in (256, 1000000], "
                        "optionally followed by +label-words", size)
        for name, minimum in (("k", 1), ("seeds", 0)):
            _check_int_list(name, getattr(self, name), minimum)
        if not isinstance(self.batch_size, dict):
            invalid("batch_size", "must be an integer, a list of integers, or a table {k = [sizes]}", self.batch_size)
        for k in self.k:
            _check_int_list(f"batch_size (k={k})", self.batch_size.get(k, ()), 1)
        if not isinstance(self.lr, tuple) or not self.lr or not all(is_number(v) and v > 0 for v in self.lr):
            invalid("lr", "must be a non-empty list of positive numbers", self.lr)
        for name in ("steps", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                invalid(name, "must be an integer >= 1", value)
        if self.eval_every > self.steps:
            invalid("eval_every", f"must be <= steps ({self.steps})", self.eval_every)
        for name, minimum_exclusive in (("eps", True), ("weight_decay", False)):
            values = getattr(self, name)
            if (not isinstance(values, tuple) or not values or len(set(values)) != len(values)
                    or not all(is_number(v) and v >= 0 and not (minimum_exclusive and v == 0) for v in values)):
                invalid(name, "must be a " + ("positive number" if minimum_exclusive else "number >= 0")
                        + " or a non-empty list of distinct ones", values)
        if not is_number(self.sparsity_threshold) or self.sparsity_threshold <= 0:
            invalid("sparsity_threshold", "must be a positive number", self.sparsity_threshold)
        if self.lm_decoder not in LM_DECODERS:
            invalid("lm_decoder", f"must be one of {list(LM_DECODERS)}", self.lm_decoder)
        if self.max_grad_norm is not None and (not is_number(self.max_grad_norm) or self.max_grad_norm <= 0):
            invalid("max_grad_norm", "must be a positive number", self.max_grad_norm)
        if self.lr_schedule not in LR_SCHEDULES:
            invalid("lr_schedule", f"must be one of {list(LR_SCHEDULES)}", self.lr_schedule)
        for name in ("dropout", "perturb_dead_parameters"):
            if not isinstance(getattr(self, name), bool):
                invalid(name, "must be true or false", getattr(self, name))
        if not is_int(self.max_length) or not 8 <= self.max_length <= 4096:
            invalid("max_length", "must be an integer in [8, 4096]", self.max_length)
        if self.dtype not in DTYPE_NAMES:
            invalid("dtype", f"must be one of {list(DTYPE_NAMES)}", self.dtype)
        if not is_int(self.init_seed) or self.init_seed < 0:
            invalid("init_seed", "must be an integer >= 0", self.init_seed)
        if not isinstance(self.template, tuple) or not all(isinstance(p, str) and p for p in self.template):
            invalid("template", "must be a list of non-empty strings", self.template)
        try:
            indices = sentence_indices(self.template)
        except HarnessError as error:
            raise HarnessError(f"field 'template': {error}") from None
        if sorted(indices) != list(range(len(indices))) or not indices:
            invalid("template", "must use each sentence once, from sentence 0 on ({sentence} or {sent_0}, "
                    "then {..._1} for a pair task)", list(self.template))
        for name in ("first_sent_limit", "other_sent_limit"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                invalid(name, "must be an integer >= 1 (leave it out for no limit)", value)
        if (not isinstance(self.label_words, tuple) or len(self.label_words) < 2
                or not all(isinstance(w, str) and w.strip() for w in self.label_words)):
            invalid("label_words", "must be a list of at least two non-empty strings", self.label_words)
        if len(set(self.label_words)) != len(self.label_words):
            invalid("label_words", "must be distinct", list(self.label_words))
        for name in ("lora_r", "lora_alpha", "num_prefix"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                invalid(name, "must be an integer >= 1", value)
        if not is_int(self.length_buckets) or not 1 <= self.length_buckets <= 64:
            invalid("length_buckets", "must be an integer in [1, 64]", self.length_buckets)
        if self.lora_targets is not None and (not isinstance(self.lora_targets, tuple) or not self.lora_targets
                                              or not all(isinstance(t, str) and t for t in self.lora_targets)):
            invalid("lora_targets", "must be a non-empty list of module names", self.lora_targets)

    def check_for(self, variant: Variant) -> None:
        """Checks that depend on the variant (its head and parameter set)."""
        masks = self.template.count(MASK_SLOT)
        if variant.head == "mlm" and masks != 1:
            invalid("template", f"must contain {MASK_SLOT!r} exactly once for a masked-LM variant", list(self.template))
        if variant.head == "cls" and masks != 0:
            invalid("template", f"must not contain {MASK_SLOT!r} for a classification-head variant", list(self.template))
        if variant.optimizer != "mezo" and self.length_buckets != 1:
            invalid("length_buckets", "applies to MeZO (SGD) variants only (leave it 1 for the others)",
                  self.length_buckets)
        if variant.optimizer != "adamw" and self.max_grad_norm is not None:
            invalid("max_grad_norm", "applies to first-order variants only (the others clip no gradient)",
                  self.max_grad_norm)
        if variant.optimizer not in ZEROTH_ORDER and len(self.eps) != 1:
            invalid("eps", "is a grid for zeroth-order variants only (the others do not use it)", list(self.eps))
        if variant.optimizer == "none":
            for name in ("lr", "weight_decay"):
                if len(getattr(self, name)) != 1:
                    invalid(name, f"must be one value for {variant.name!r}: it trains nothing, so a grid would only "
                            "repeat the same run", list(getattr(self, name)))
            for k, sizes in self.batch_size.items():
                if len(sizes) != 1:
                    invalid(f"batch_size (k={k})", f"must be one value for {variant.name!r} (it trains nothing)",
                            list(sizes))
        if (variant.parameters == "prefix") != (self.num_prefix is not None):
            invalid("num_prefix", "must be set for a prefix variant and only for one", self.num_prefix)
        if variant.linear_probe and self.lm_decoder != "untied":
            invalid("lm_decoder", f"must be \"untied\" for {variant.name!r}: linear probing writes the label "
                    "words' decoder rows, which a tied decoder shares with the input embeddings", self.lm_decoder)
        backend = backend_entry(variant.backend)
        if self.lm_decoder not in backend.lm_decoders:
            invalid("lm_decoder", f"must be {' or '.join(map(json.dumps, backend.lm_decoders))} for the "
                    f"{backend.label} backend ({backend.limits})", self.lm_decoder)
        if variant.parameters in ("lm-head", "lora+lm-head") and self.lm_decoder != "untied":
            invalid("lm_decoder", f"must be \"untied\" for {variant.name!r}: it trains the LM head, whose decoder "
                  "is its own parameter in the reference", self.lm_decoder)
        if variant.parameters in ("lora", "lora+lm-head"):
            for name in ("lora_r", "lora_alpha", "lora_targets"):
                if getattr(self, name) is None:
                    invalid(name, "must be set for a LoRA variant", None)

    def grid(self) -> list[GridPoint]:
        """Every point: k x seed x lr x batch size (for that k) x eps x weight decay."""
        return [GridPoint(k, seed, lr, batch, eps, wd) for k in self.k for seed in self.seeds for lr in self.lr
                for batch in self.batch_size[k] for eps in self.eps for wd in self.weight_decay]

    def grid_for(self, k: int) -> dict[str, list]:
        """The grid dimensions that selection runs over for one k (goes into every record, so a
        reader can tell whether a group of records is a complete grid)."""
        return {"seeds": list(self.seeds), "lr": list(self.lr), "batch_size": list(self.batch_size[k]),
                "eps": list(self.eps), "weight_decay": list(self.weight_decay)}

    def to_dict(self) -> dict:
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in HASHED_ONLY_WHEN_SET and value is None:
                continue
            if f.name == "batch_size":
                value = {str(k): list(v) for k, v in sorted(value.items())}
            elif isinstance(value, tuple):
                value = list(value)
            values[f.name] = value
        return values


def _check_int_list(name: str, values, minimum: int) -> None:
    if not isinstance(values, tuple) or not values or not all(is_int(v) and v >= minimum for v in values):
        invalid(name, f"must be a non-empty list of integers >= {minimum}", list(values) if isinstance(values, tuple) else values)
    if len(set(values)) != len(values):
        invalid(name, "must not repeat values", list(values))
