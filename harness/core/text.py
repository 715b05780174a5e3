"""Text helpers shared by the writers of results."""

from __future__ import annotations

import re


def slug(*parts, lower: bool = False, keep: str = "_.-") -> str:
    """A file or folder name made of `parts`: joined with "_", lowercased if `lower`, every run
    of characters other than ASCII letters, digits and those in `keep` replaced by one "-",
    and "-" stripped from both ends.

        slug("sst2", "sst2-mezo", 3, "random-init:tiny")        -> "sst2_sst2-mezo_3_random-init-tiny"
        slug("AMD EPYC (2 cores)", lower=True, keep="")       -> "amd-epyc-2-cores"
    """
    text = "_".join(str(part) for part in parts)
    if lower:
        text = text.lower()
    return re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", "-", text).strip("-")
