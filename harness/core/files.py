"""Reading the project's TOML data files (protocol, paper, claims, gate) with errors that
name the file and the offending key."""

from __future__ import annotations

import sys
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
