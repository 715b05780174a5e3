"""A protocol is data: a versioned TOML file loaded into validated dataclasses.

Each profile's hash covers every value that can change a result. The hashes of each
version are locked in `protocol.lock.json` beside the protocol file, so changing a value
without bumping `version` is an error, not a silent change of meaning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.data import TASKS
from harness.errors import HarnessError
from harness.model_configs import RANDOM_INIT_CONFIGS, RANDOM_INIT_PREFIX, TRAINED_BPE_PREFIX
from harness.variants import VARIANTS

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


@dataclass(frozen=True)
class Profile:
    """One runnable setting of a protocol. Validated on construction."""

    model: str
    tokenizer: str
    k: tuple[int, ...]
    seeds: tuple[int, ...]
    lr: tuple[float, ...]
    steps: int
    eval_every: int
    batch_size: int
    eval_batch_size: int
    eps: float
    weight_decay: float
    max_length: int
    dtype: str
    init_seed: int
    template: tuple[str, ...]
    label_words: tuple[str, ...]
    variants: tuple[str, ...]

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
            values = getattr(self, name)
            if not values or not all(_is_int(v) and v >= minimum for v in values):
                _fail(name, f"must be a non-empty list of integers >= {minimum}", list(values))
            if len(set(values)) != len(values):
                _fail(name, "must not repeat values", list(values))
        if not self.lr or not all(_is_number(v) and v > 0 for v in self.lr):
            _fail("lr", "must be a non-empty list of positive numbers", list(self.lr))
        for name in ("steps", "eval_every", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                _fail(name, "must be an integer >= 1", value)
        if self.eval_every > self.steps:
            _fail("eval_every", f"must be <= steps ({self.steps})", self.eval_every)
        if not _is_number(self.eps) or self.eps <= 0:
            _fail("eps", "must be a positive number", self.eps)
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            _fail("weight_decay", "must be a number >= 0", self.weight_decay)
        if not _is_int(self.max_length) or not 8 <= self.max_length <= 4096:
            _fail("max_length", "must be an integer in [8, 4096]", self.max_length)
        if self.dtype not in DTYPES:
            _fail("dtype", f"must be one of {list(DTYPES)}", self.dtype)
        if not _is_int(self.init_seed) or self.init_seed < 0:
            _fail("init_seed", "must be an integer >= 0", self.init_seed)
        if not all(isinstance(p, str) and p for p in self.template):
            _fail("template", "must be a list of non-empty strings", list(self.template))
        for slot in (SENTENCE_SLOT, MASK_SLOT):
            if self.template.count(slot) != 1:
                _fail("template", f"must contain {slot!r} exactly once", list(self.template))
        if len(self.label_words) < 2 or not all(isinstance(w, str) and w.strip() for w in self.label_words):
            _fail("label_words", "must be a list of at least two non-empty strings", list(self.label_words))
        if len(set(self.label_words)) != len(self.label_words):
            _fail("label_words", "must be distinct", list(self.label_words))
        unknown = [v for v in self.variants if v not in VARIANTS]
        if not self.variants or unknown:
            _fail("variants", f"must be a non-empty list of known variants {sorted(VARIANTS)}", list(self.variants))

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


PROFILE_KEYS = tuple(f.name for f in dataclasses.fields(Profile))
TOP_LEVEL_KEYS = ("name", "version", "task", "description", "auto_profile", "defaults", "profiles")


@dataclass(frozen=True)
class Protocol:
    path: Path
    name: str
    version: int
    task: str
    description: str
    auto_profile: dict[str, str]
    profiles: dict[str, Profile]

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".lock.json")

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise HarnessError(
                f"unknown profile {name!r} in {self.path}; profiles: {', '.join(self.profiles)} (or 'auto')")
        return self.profiles[name]

    def resolve_profile_name(self, name: str, device_kind: str) -> str:
        """'auto' picks the protocol's profile for this kind of device."""
        resolved = self.auto_profile[device_kind] if name == "auto" else name
        self.profile(resolved)
        return resolved

    def profile_hash(self, profile_name: str) -> str:
        """sha256 over everything that defines a result of this profile."""
        payload = {"protocol": self.name, "version": self.version, "task": self.task,
                   "profile": self.profile(profile_name).to_dict()}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def current_hashes(self) -> dict[str, str]:
        return {name: self.profile_hash(name) for name in self.profiles}

    def read_lock(self) -> dict[str, dict[str, str]]:
        if not self.lock_path.exists():
            return {}
        try:
            return json.loads(self.lock_path.read_text())
        except json.JSONDecodeError as error:
            raise HarnessError(f"{self.lock_path}: not valid JSON ({error})") from None

    def check_lock(self) -> None:
        """Fail if a profile changed without a version bump, or the version is unlocked."""
        locked = self.read_lock().get(str(self.version))
        if locked is None:
            raise HarnessError(
                f"{self.path}: version {self.version} is not locked in {self.lock_path.name}; "
                f"run `mezo-bench protocol --protocol {self.path} --lock` after choosing the version")
        changed = sorted(name for name, digest in self.current_hashes().items() if locked.get(name) != digest)
        if changed:
            raise HarnessError(
                f"{self.path}: profile(s) {', '.join(changed)} differ from what version {self.version} "
                f"locked; bump `version` (results would otherwise change meaning) and run "
                f"`mezo-bench protocol --protocol {self.path} --lock`")

    def write_lock(self) -> dict[str, str]:
        """Lock the current version's hashes. Refuses to rewrite an existing version."""
        lock = self.read_lock()
        current = self.current_hashes()
        existing = lock.get(str(self.version))
        if existing is not None and existing != current:
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


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise HarnessError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}")


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def load_protocol(path: str | Path) -> Protocol:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"protocol file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise HarnessError(f"{path}: not valid TOML ({error})") from None

    _check_keys(raw, TOP_LEVEL_KEYS, str(path))
    for key in ("name", "version", "task", "profiles"):
        if key not in raw:
            raise HarnessError(f"{path}: missing required key {key!r}")
    if not _is_int(raw["version"]) or raw["version"] < 1:
        raise HarnessError(f"{path}: field 'version' must be an integer >= 1, got {raw['version']!r}")
    if raw["task"] not in TASKS:
        raise HarnessError(f"{path}: field 'task' must be one of {sorted(TASKS)}, got {raw['task']!r}")

    defaults = raw.get("defaults", {})
    _check_keys(defaults, PROFILE_KEYS, f"{path} [defaults]")
    profiles: dict[str, Profile] = {}
    for name, table in raw["profiles"].items():
        where = f"{path} [profiles.{name}]"
        _check_keys(table, PROFILE_KEYS, where)
        merged = {**defaults, **table}
        missing = [key for key in PROFILE_KEYS if key not in merged]
        if missing:
            raise HarnessError(f"{where}: missing key(s) {', '.join(missing)}")
        try:
            profile = Profile(**{key: _as_tuple(value) for key, value in merged.items()})
        except HarnessError as error:
            raise HarnessError(f"{where}: {error}") from None
        num_labels = TASKS[raw["task"]].num_labels
        if len(profile.label_words) != num_labels:
            raise HarnessError(f"{where}: field 'label_words' needs {num_labels} words for task "
                               f"{raw['task']!r}, got {list(profile.label_words)!r}")
        profiles[name] = profile
    if not profiles:
        raise HarnessError(f"{path}: no profiles defined")

    auto_profile = raw.get("auto_profile", {})
    _check_keys(auto_profile, DEVICE_KINDS, f"{path} [auto_profile]")
    for kind in DEVICE_KINDS:
        target = auto_profile.get(kind)
        if target not in profiles:
            raise HarnessError(f"{path} [auto_profile]: field {kind!r} must name a profile "
                               f"({', '.join(profiles)}), got {target!r}")

    return Protocol(path=path, name=str(raw["name"]), version=raw["version"], task=raw["task"],
                    description=str(raw.get("description", "")), auto_profile=dict(auto_profile),
                    profiles=profiles)
