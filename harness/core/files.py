"""Files: reading the project's TOML data files (protocol, paper, claims, gate) with errors
that name the file and the offending key, and writing any file atomically."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.core.errors import HarnessError


def read_toml(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise HarnessError(f"{path}: not valid TOML ({error})") from None


def check_keys(table: dict, allowed, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise HarnessError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}")


def atomic_write_bytes(path: str | Path, data: bytes, *, exclusive: bool = False) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a
    part: into a uniquely named temporary file beside it (`.<name>.<random>.tmp`), then
    renamed over `path` (os.replace). exclusive: the name must not exist yet -- the temporary
    file is hard-linked to it (os.link), which raises FileExistsError if the name is taken, so
    an existing file is never replaced (append-only stores). The temporary file is removed
    whatever happens; the folder must exist. Returns `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())   # on disk before the name points at it: a crash leaves old or new
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str, *, exclusive: bool = False) -> Path:
    """atomic_write_bytes of `text` encoded as UTF-8 (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse an output folder that cannot be written, before any work: `path` must be a folder
    or not exist yet, its nearest existing ancestor a folder we can create files in (checked by
    creating and removing a probe file there). Creates nothing that stays. Returns `path`."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise HarnessError(f"{what} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise HarnessError(f"{what} {path} {where}, not a folder")
    probe = existing / f".mezo-bench-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        target = "" if existing == path else f" (creating it needs {existing})"
        raise HarnessError(f"{what} {path} is not writable{target}: {reason}") from None
    probe.unlink(missing_ok=True)
    return path
