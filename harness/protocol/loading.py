"""A protocol is data: a versioned TOML file loaded into validated dataclasses.

Each (profile, variant) pair resolves to one RunSettings; its hash covers every value
that can change a result. The hashes of each version are locked in `protocol.lock.json`
beside the protocol file, so changing a value without bumping `version` is an error, not a
silent change of meaning.

Where the lock lives: a protocol's name belongs to one file. The names of the protocols this
checkout ships (benchmarks/<task>/protocol.toml) are locked only in the lock beside the shipped
file, wherever a file of that name is loaded from: an unchanged copy is the same protocol, a
changed copy under the same name is refused, and `--lock` refuses to lock one (a protocol from
elsewhere must carry a new `name`). A protocol with a name of its own is locked beside its file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, check_keys, read_toml
from harness.protocol.settings import (
    DEVICE_KINDS,
    CheckpointPolicy,
    RunSettings,
    invalid,
    is_int,
    is_number,
)
from harness.protocol.variants import VARIANTS, Variant
from harness.tasks.spec import TASKS, TaskSpec
from harness.tasks.template import sentence_indices

SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(RunSettings))
DEFAULTS_KEYS = SETTINGS_KEYS + ("variants",)
PROFILE_KEYS = SETTINGS_KEYS + ("variants", "overrides")
TOP_LEVEL_KEYS = ("name", "version", "task", "description", "auto_profile", "checkpoints", "defaults", "variants",
                  "profiles")
CHECKPOINT_KEYS = tuple(f.name for f in dataclasses.fields(CheckpointPolicy))


BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def shipped_protocols() -> dict[str, Path]:
    """name -> file of the protocols this checkout ships (benchmarks/*/protocol.toml)."""
    shipped: dict[str, Path] = {}
    for path in sorted(BENCHMARKS_DIR.glob("*/protocol.toml")):
        name = read_toml(path, "protocol file").get("name")
        if isinstance(name, str):
            shipped.setdefault(name, path.resolve())
    return shipped


def shipped_protocol_of_task(task: str) -> Path:
    """benchmarks/<task>/protocol.toml of this checkout (`--task`)."""
    path = BENCHMARKS_DIR / task / "protocol.toml"
    if not path.is_file():
        have = sorted(p.parent.name for p in BENCHMARKS_DIR.glob("*/protocol.toml"))
        raise HarnessError(f"--task {task!r}: no protocol {path}; tasks with one: {', '.join(have)}")
    return path


@dataclass(frozen=True)
class Protocol:
    """A loaded protocol file: its profiles, the variants each runs, and the resolved settings
    of every (profile, variant) pair."""

    path: Path
    name: str
    version: int
    task: str
    description: str
    auto_profile: dict[str, str]
    profile_variants: dict[str, tuple[str, ...]]          # profile -> the variants it runs
    settings: dict[tuple[str, str], RunSettings]           # (profile, variant) -> resolved settings
    checkpoints: CheckpointPolicy = CheckpointPolicy()      # how often runs checkpoint (hashed nowhere)
    home: Path | None = None                                # the shipped file owning this name, if any

    @property
    def lock_path(self) -> Path:
        owner = self.home or self.path
        return owner.with_name(owner.stem + ".lock.json")

    @property
    def is_foreign_copy(self) -> bool:
        """A file that carries a shipped protocol's name but is not that file."""
        return self.home is not None and self.path.resolve() != self.home

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
        if self.is_foreign_copy:
            self._check_copy()
            return
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

    def _check_copy(self) -> None:
        """A copy of a shipped protocol is valid only while it is that protocol: the same hashes."""
        locked = self.read_lock().get(str(self.version), {})
        current = self.current_hashes()
        differing = sorted(key for key in current.keys() | locked.keys() if current.get(key) != locked.get(key))
        if differing:
            raise HarnessError(
                f"{self.path} carries the name {self.name!r} of {self.home} but is not that protocol "
                f"(version {self.version}: {', '.join(differing[:4])}{' ...' if len(differing) > 4 else ''} "
                f"differ from {self.lock_path}); give the changed protocol a new `name` (it is a new "
                f"identity) and lock it with `mezo-bench protocol --protocol {self.path} --lock`")

    def write_lock(self) -> dict[str, str]:
        """Lock the current version's hashes: a new version, or new (profile, variant) pairs
        added to an existing one. Refuses to change or drop a locked hash, and to lock a copy
        under a shipped protocol's name."""
        if self.is_foreign_copy:
            raise HarnessError(f"{self.path} carries the name {self.name!r} of {self.home}, whose lock is "
                               f"{self.lock_path}; give your protocol a new `name` before locking it")
        lock = self.read_lock()
        current = self.current_hashes()
        existing = lock.get(str(self.version), {})
        if any(current.get(key) != value for key, value in existing.items()):
            raise HarnessError(
                f"{self.path}: version {self.version} is already locked with other hashes; "
                f"bump `version` instead of relocking it")
        lock[str(self.version)] = current
        atomic_write_text(self.lock_path, json.dumps(lock, indent=2, sort_keys=True) + "\n")
        return current


def _normalise(key: str, value, ks):
    """TOML values to the dataclass's types: lists become tuples; batch_size becomes {k: sizes}."""
    if key in ("eps", "weight_decay") and is_number(value):
        return (value,)
    if key == "batch_size":
        if is_int(value):
            return {k: (value,) for k in ks}
        if isinstance(value, list):
            return {k: tuple(value) for k in ks}
        if isinstance(value, dict):
            by_k = {int(k): v for k, v in value.items() if str(k).isdigit()}
            if len(by_k) != len(value):
                invalid("batch_size", "table keys must be k values", list(value))
            return {k: tuple(by_k[k]) if isinstance(by_k.get(k), list) else by_k.get(k, ()) for k in ks}
        return value
    return tuple(value) if isinstance(value, list) else value


def _resolve(merged: dict, variant: Variant, task: TaskSpec, where: str) -> RunSettings:
    required = [f.name for f in dataclasses.fields(RunSettings) if f.default is dataclasses.MISSING]
    missing = [key for key in required if key not in merged]
    if missing:
        raise HarnessError(f"{where}: missing key(s) {', '.join(missing)}")
    ks = tuple(merged["k"]) if isinstance(merged["k"], list) else ()
    try:
        settings = RunSettings(**{key: _normalise(key, value, ks) for key, value in merged.items()})
        settings.check_for(variant)
        if len(settings.label_words) != task.num_labels:
            invalid("label_words", f"needs {task.num_labels} words for this task", list(settings.label_words))
        sentences = 2 if task.is_pair else 1
        if len(sentence_indices(settings.template)) != sentences:
            invalid("template", f"must use the task's {sentences} sentence(s) ({task.name} is "
                    f"{'a sentence-pair' if task.is_pair else 'a single-sentence'} task)", list(settings.template))
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
    if not is_int(raw["version"]) or raw["version"] < 1:
        raise HarnessError(f"{path}: field 'version' must be an integer >= 1, got {raw['version']!r}")
    if raw["task"] not in TASKS:
        raise HarnessError(f"{path}: field 'task' must be one of {sorted(TASKS)}, got {raw['task']!r}")
    task = TASKS[raw["task"]]

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
            settings[(profile, name)] = _resolve(merged, VARIANTS[name], task, f"{where} variant {name}")
    if not profile_variants:
        raise HarnessError(f"{path}: no profiles defined")

    auto_profile = raw.get("auto_profile", {})
    check_keys(auto_profile, DEVICE_KINDS, f"{path} [auto_profile]")
    for kind in DEVICE_KINDS:
        target = auto_profile.get(kind)
        if target not in profile_variants:
            raise HarnessError(f"{path} [auto_profile]: field {kind!r} must name a profile "
                               f"({', '.join(profile_variants)}), got {target!r}")

    checkpoints = raw.get("checkpoints", {})
    check_keys(checkpoints, CHECKPOINT_KEYS, f"{path} [checkpoints]")
    try:
        policy = CheckpointPolicy(**checkpoints)
    except HarnessError as error:
        raise HarnessError(f"{path} [checkpoints]: {error}") from None

    return Protocol(path=path, name=str(raw["name"]), version=raw["version"], task=raw["task"],
                    description=str(raw.get("description", "")), auto_profile=dict(auto_profile),
                    profile_variants=profile_variants, settings=settings, checkpoints=policy,
                    home=shipped_protocols().get(str(raw["name"])))
