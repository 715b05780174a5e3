"""A protocol is data: a versioned TOML file loaded into validated dataclasses.

Each (profile, variant) pair resolves to one RunSettings; its hash covers every value
that can change a result. The hashes of each version are locked in `protocol.lock.json` beside the protocol file, so changing a value
without bumping `version` is an error, not a silent change of meaning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.data import TASKS
from harness.errors import HarnessError
from harness.tomlfile import check_keys, read_toml
from harness.model_configs import RANDOM_INIT_CONFIGS, RANDOM_INIT_PREFIX, TRAINED_BPE_PREFIX
from harness.variants import VARIANTS, Variant

DTYPES = ("float32", "bfloat16", "float16")
SENTENCE_SLOT = "{sentence}"
MASK_SLOT = "<mask>"
DEVICE_KINDS = ("cpu", "cuda")


def _fail(field: str, message: str, value) -> None:
    raise HarnessError(f"field {field!r} {message}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


LR_SCHEDULES = ("constant", "linear")
LM_DECODERS = ("tied", "untied")
GRID_KEYS = ("k", "seeds", "lr", "batch_size", "eps", "weight_decay")


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
class RunSettings:
    """Everything that defines the runs of one variant in one profile. Validated on
    construction; k, seeds, lr, batch_size (per k), eps and weight_decay are grids."""

    model: str
    tokenizer: str
    k: tuple[int, ...]
    seeds: tuple[int, ...]
    lr: tuple[float, ...]
    batch_size: dict[int, tuple[int, ...]]
    steps: int
    eval_every: int
    eval_batch_size: int
    eps: tuple[float, ...]
    weight_decay: tuple[float, ...]
    lr_schedule: str
    dropout: bool
    max_length: int
    dtype: str
    init_seed: int
    template: tuple[str, ...]
    label_words: tuple[str, ...]
    sparsity_threshold: float
    perturb_dead_parameters: bool
    lm_decoder: str              # "untied": the LM head's own decoder (the reference); "tied": the word embeddings
    max_grad_norm: float | None = None   # first-order only: gradient clipping before each step (HF Trainer: 1.0)
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_targets: tuple[str, ...] | None = None
    length_buckets: int = 1      # > 1: MeZO's forwards run the batch in length buckets

    def __post_init__(self) -> None:
        for name in ("model", "tokenizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                _fail(name, "must be a non-empty string (hub id, local path or special form)", value)
        if self.model.startswith(RANDOM_INIT_PREFIX):
            config = self.model[len(RANDOM_INIT_PREFIX):]
            if config not in RANDOM_INIT_CONFIGS:
                _fail("model", f"random-init config must be one of {sorted(RANDOM_INIT_CONFIGS)}", config)
        if self.tokenizer.startswith(TRAINED_BPE_PREFIX):
            size = self.tokenizer[len(TRAINED_BPE_PREFIX):]
            if not size.isdigit() or not 256 < int(size) <= 1_000_000:
                _fail("tokenizer", "trained-bpe vocabulary size must be an integer in (256, 1000000]", size)
        for name, minimum in (("k", 1), ("seeds", 0)):
            _check_int_list(name, getattr(self, name), minimum)
        if not isinstance(self.batch_size, dict):
            _fail("batch_size", "must be an integer, a list of integers, or a table {k = [sizes]}", self.batch_size)
        for k in self.k:
            _check_int_list(f"batch_size (k={k})", self.batch_size.get(k, ()), 1)
        if not isinstance(self.lr, tuple) or not self.lr or not all(_is_number(v) and v > 0 for v in self.lr):
            _fail("lr", "must be a non-empty list of positive numbers", self.lr)
        for name in ("steps", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                _fail(name, "must be an integer >= 1", value)
        if self.eval_every > self.steps:
            _fail("eval_every", f"must be <= steps ({self.steps})", self.eval_every)
        for name, minimum_exclusive in (("eps", True), ("weight_decay", False)):
            values = getattr(self, name)
            if (not isinstance(values, tuple) or not values or len(set(values)) != len(values)
                    or not all(_is_number(v) and v >= 0 and not (minimum_exclusive and v == 0) for v in values)):
                _fail(name, "must be a " + ("positive number" if minimum_exclusive else "number >= 0")
                      + " or a non-empty list of distinct ones", values)
        if not _is_number(self.sparsity_threshold) or self.sparsity_threshold <= 0:
            _fail("sparsity_threshold", "must be a positive number", self.sparsity_threshold)
        if self.lm_decoder not in LM_DECODERS:
            _fail("lm_decoder", f"must be one of {list(LM_DECODERS)}", self.lm_decoder)
        if self.max_grad_norm is not None and (not _is_number(self.max_grad_norm) or self.max_grad_norm <= 0):
            _fail("max_grad_norm", "must be a positive number", self.max_grad_norm)
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("lr_schedule", f"must be one of {list(LR_SCHEDULES)}", self.lr_schedule)
        for name in ("dropout", "perturb_dead_parameters"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "must be true or false", getattr(self, name))
        if not _is_int(self.max_length) or not 8 <= self.max_length <= 4096:
            _fail("max_length", "must be an integer in [8, 4096]", self.max_length)
        if self.dtype not in DTYPES:
            _fail("dtype", f"must be one of {list(DTYPES)}", self.dtype)
        if not _is_int(self.init_seed) or self.init_seed < 0:
            _fail("init_seed", "must be an integer >= 0", self.init_seed)
        if not isinstance(self.template, tuple) or not all(isinstance(p, str) and p for p in self.template):
            _fail("template", "must be a list of non-empty strings", self.template)
        if self.template.count(SENTENCE_SLOT) != 1:
            _fail("template", f"must contain {SENTENCE_SLOT!r} exactly once", list(self.template))
        if (not isinstance(self.label_words, tuple) or len(self.label_words) < 2
                or not all(isinstance(w, str) and w.strip() for w in self.label_words)):
            _fail("label_words", "must be a list of at least two non-empty strings", self.label_words)
        if len(set(self.label_words)) != len(self.label_words):
            _fail("label_words", "must be distinct", list(self.label_words))
        for name in ("lora_r", "lora_alpha"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                _fail(name, "must be an integer >= 1", value)
        if not _is_int(self.length_buckets) or not 1 <= self.length_buckets <= 64:
            _fail("length_buckets", "must be an integer in [1, 64]", self.length_buckets)
        if self.lora_targets is not None and (not isinstance(self.lora_targets, tuple) or not self.lora_targets
                                              or not all(isinstance(t, str) and t for t in self.lora_targets)):
            _fail("lora_targets", "must be a non-empty list of module names", self.lora_targets)

    def check_for(self, variant: Variant) -> None:
        """Checks that depend on the variant (its head and parameter set)."""
        masks = self.template.count(MASK_SLOT)
        if variant.head == "mlm" and masks != 1:
            _fail("template", f"must contain {MASK_SLOT!r} exactly once for a masked-LM variant", list(self.template))
        if variant.head == "cls" and masks != 0:
            _fail("template", f"must not contain {MASK_SLOT!r} for a classification-head variant", list(self.template))
        if variant.optimizer != "mezo" and self.length_buckets != 1:
            _fail("length_buckets", "applies to MeZO variants only (leave it 1 for first-order ones)",
                  self.length_buckets)
        if variant.optimizer == "mezo" and self.max_grad_norm is not None:
            _fail("max_grad_norm", "applies to first-order variants only (MeZO has no gradient to clip)",
                  self.max_grad_norm)
        if variant.optimizer != "mezo" and len(self.eps) != 1:
            _fail("eps", "is a grid for MeZO variants only (first-order variants do not use it)", list(self.eps))
        if variant.backend == "sglang" and self.lm_decoder != "tied":
            _fail("lm_decoder", "must be \"tied\" for the SGLang backend (its model class ties the decoder "
                  "to the word embeddings)", self.lm_decoder)
        if variant.parameters in ("lm-head", "lora+lm-head") and self.lm_decoder != "untied":
            _fail("lm_decoder", f"must be \"untied\" for {variant.name!r}: it trains the LM head, whose decoder "
                  "is its own parameter in the reference", self.lm_decoder)
        if variant.parameters in ("lora", "lora+lm-head"):
            for name in ("lora_r", "lora_alpha", "lora_targets"):
                if getattr(self, name) is None:
                    _fail(name, "must be set for a LoRA variant", None)

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
            if f.name == "batch_size":
                value = {str(k): list(v) for k, v in sorted(value.items())}
            elif isinstance(value, tuple):
                value = list(value)
            values[f.name] = value
        return values


def _check_int_list(name: str, values, minimum: int) -> None:
    if not isinstance(values, tuple) or not values or not all(_is_int(v) and v >= minimum for v in values):
        _fail(name, f"must be a non-empty list of integers >= {minimum}", list(values) if isinstance(values, tuple) else values)
    if len(set(values)) != len(values):
        _fail(name, "must not repeat values", list(values))


SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(RunSettings))
DEFAULTS_KEYS = SETTINGS_KEYS + ("variants",)
PROFILE_KEYS = SETTINGS_KEYS + ("variants", "overrides")
TOP_LEVEL_KEYS = ("name", "version", "task", "description", "auto_profile", "defaults", "variants", "profiles")


@dataclass(frozen=True)
class Protocol:
    path: Path
    name: str
    version: int
    task: str
    description: str
    auto_profile: dict[str, str]
    profile_variants: dict[str, tuple[str, ...]]          # profile -> the variants it runs
    settings: dict[tuple[str, str], RunSettings]           # (profile, variant) -> resolved settings

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".lock.json")

    @property
    def profiles(self) -> list[str]:
        return list(self.profile_variants)

    def check_profile(self, name: str) -> None:
        if name not in self.profile_variants:
            raise HarnessError(
                f"unknown profile {name!r} in {self.path}; profiles: {', '.join(self.profile_variants)} (or 'auto')")

    def run_settings(self, profile: str, variant: str) -> RunSettings:
        self.check_profile(profile)
        if (profile, variant) not in self.settings:
            raise HarnessError(f"variant {variant!r} is not part of profile {profile!r}; "
                               f"its variants: {list(self.profile_variants[profile])}")
        return self.settings[(profile, variant)]

    def resolve_profile_name(self, name: str, device_kind: str) -> str:
        """'auto' picks the protocol's profile for this kind of device."""
        resolved = self.auto_profile[device_kind] if name == "auto" else name
        self.check_profile(resolved)
        return resolved

    def settings_hash(self, profile: str, variant: str) -> str:
        """sha256 over everything that defines a result of this variant in this profile."""
        settings = self.run_settings(profile, variant).to_dict()
        payload = {"protocol": self.name, "version": self.version, "task": self.task, "variant": variant,
                   "settings": settings}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def current_hashes(self) -> dict[str, str]:
        return {f"{profile}/{variant}": self.settings_hash(profile, variant) for profile, variant in self.settings}

    def read_lock(self) -> dict[str, dict[str, str]]:
        if not self.lock_path.exists():
            return {}
        try:
            return json.loads(self.lock_path.read_text())
        except json.JSONDecodeError as error:
            raise HarnessError(f"{self.lock_path}: not valid JSON ({error})") from None

    def check_lock(self) -> None:
        """Fail if a setting changed without a version bump, or a (profile, variant) is unlocked.

        Adding a variant to a profile adds a hash without changing any existing one, so it is
        locked into the current version (`--lock`); changing or removing one needs a new version."""
        locked = self.read_lock().get(str(self.version))
        if locked is None:
            raise HarnessError(
                f"{self.path}: version {self.version} is not locked in {self.lock_path.name}; "
                f"run `mezo-bench protocol --protocol {self.path} --lock` after choosing the version")
        current = self.current_hashes()
        changed = sorted(key for key in locked if locked[key] != current.get(key))
        if changed:
            raise HarnessError(
                f"{self.path}: {', '.join(changed)} differ from what version {self.version} "
                f"locked; bump `version` (results would otherwise change meaning) and run "
                f"`mezo-bench protocol --protocol {self.path} --lock`")
        added = sorted(current.keys() - locked.keys())
        if added:
            raise HarnessError(
                f"{self.path}: {', '.join(added)} are not locked in version {self.version}; "
                f"run `mezo-bench protocol --protocol {self.path} --lock` to add them")

    def write_lock(self) -> dict[str, str]:
        """Lock the current version's hashes: a new version, or new (profile, variant) pairs
        added to an existing one. Refuses to change or drop a locked hash."""
        lock = self.read_lock()
        current = self.current_hashes()
        existing = lock.get(str(self.version), {})
        if any(current.get(key) != value for key, value in existing.items()):
            raise HarnessError(
                f"{self.path}: version {self.version} is already locked with other hashes; "
                f"bump `version` instead of relocking it")
        lock[str(self.version)] = current
        _write_text_atomic(self.lock_path, json.dumps(lock, indent=2, sort_keys=True) + "\n")
        return current


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _normalise(key: str, value, ks):
    """TOML values to the dataclass's types: lists become tuples; batch_size becomes {k: sizes}."""
    if key in ("eps", "weight_decay") and _is_number(value):
        return (value,)
    if key == "batch_size":
        if _is_int(value):
            return {k: (value,) for k in ks}
        if isinstance(value, list):
            return {k: tuple(value) for k in ks}
        if isinstance(value, dict):
            by_k = {int(k): v for k, v in value.items() if str(k).isdigit()}
            if len(by_k) != len(value):
                _fail("batch_size", "table keys must be k values", list(value))
            return {k: tuple(by_k[k]) if isinstance(by_k.get(k), list) else by_k.get(k, ()) for k in ks}
        return value
    return tuple(value) if isinstance(value, list) else value


def _resolve(merged: dict, variant: Variant, num_labels: int, where: str) -> RunSettings:
    required = [f.name for f in dataclasses.fields(RunSettings) if f.default is dataclasses.MISSING]
    missing = [key for key in required if key not in merged]
    if missing:
        raise HarnessError(f"{where}: missing key(s) {', '.join(missing)}")
    ks = tuple(merged["k"]) if isinstance(merged["k"], list) else ()
    try:
        settings = RunSettings(**{key: _normalise(key, value, ks) for key, value in merged.items()})
        settings.check_for(variant)
        if len(settings.label_words) != num_labels:
            _fail("label_words", f"needs {num_labels} words for this task", list(settings.label_words))
    except HarnessError as error:
        raise HarnessError(f"{where}: {error}") from None
    return settings


def load_protocol(path: str | Path) -> Protocol:
    """Load and validate a protocol. Settings of a variant in a profile are layered:
    [defaults] < [profiles.P] < [variants.V] < [profiles.P.overrides.V]."""
    path = Path(path)
    raw = read_toml(path, "protocol file")

    check_keys(raw, TOP_LEVEL_KEYS, str(path))
    for key in ("name", "version", "task", "profiles"):
        if key not in raw:
            raise HarnessError(f"{path}: missing required key {key!r}")
    if not _is_int(raw["version"]) or raw["version"] < 1:
        raise HarnessError(f"{path}: field 'version' must be an integer >= 1, got {raw['version']!r}")
    if raw["task"] not in TASKS:
        raise HarnessError(f"{path}: field 'task' must be one of {sorted(TASKS)}, got {raw['task']!r}")
    num_labels = TASKS[raw["task"]].num_labels

    defaults = dict(raw.get("defaults", {}))
    check_keys(defaults, DEFAULTS_KEYS, f"{path} [defaults]")
    default_variants = defaults.pop("variants", None)
    variant_tables = raw.get("variants", {})
    for name, table in variant_tables.items():
        if name not in VARIANTS:
            raise HarnessError(f"{path} [variants.{name}]: unknown variant; known: {', '.join(sorted(VARIANTS))}")
        check_keys(table, SETTINGS_KEYS, f"{path} [variants.{name}]")

    profile_variants: dict[str, tuple[str, ...]] = {}
    settings: dict[tuple[str, str], RunSettings] = {}
    for profile, table in raw["profiles"].items():
        where = f"{path} [profiles.{profile}]"
        check_keys(table, PROFILE_KEYS, where)
        table = dict(table)
        overrides = table.pop("overrides", {})
        variants = table.pop("variants", default_variants)
        if (not isinstance(variants, list) or not variants
                or not all(isinstance(v, str) and v in VARIANTS for v in variants)):
            raise HarnessError(f"{where}: field 'variants' must be a non-empty list of known variants "
                               f"{sorted(VARIANTS)}, got {variants!r}")
        for name, override in overrides.items():
            if name not in variants:
                raise HarnessError(f"{where}: overrides.{name} is for a variant the profile does not run")
            check_keys(override, SETTINGS_KEYS, f"{path} [profiles.{profile}.overrides.{name}]")
        profile_variants[profile] = tuple(variants)
        for name in variants:
            merged = {**defaults, **table, **variant_tables.get(name, {}), **overrides.get(name, {})}
            settings[(profile, name)] = _resolve(merged, VARIANTS[name], num_labels, f"{where} variant {name}")
    if not profile_variants:
        raise HarnessError(f"{path}: no profiles defined")

    auto_profile = raw.get("auto_profile", {})
    check_keys(auto_profile, DEVICE_KINDS, f"{path} [auto_profile]")
    for kind in DEVICE_KINDS:
        target = auto_profile.get(kind)
        if target not in profile_variants:
            raise HarnessError(f"{path} [auto_profile]: field {kind!r} must name a profile "
                               f"({', '.join(profile_variants)}), got {target!r}")

    return Protocol(path=path, name=str(raw["name"]), version=raw["version"], task=raw["task"],
                    description=str(raw.get("description", "")), auto_profile=dict(auto_profile),
                    profile_variants=profile_variants, settings=settings)
