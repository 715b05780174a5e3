"""Backends by name, imported only when first used (as lm-evaluation-harness registers its
models): choosing `hf` never imports SGLang. Each entry also says, as data, what the backend
can serve, so protocols and variants are validated without importing it."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.core.errors import HarnessError

if TYPE_CHECKING:
    from harness.backends.base import Backend


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str                         # "module:Class" implementing harness.backends.base.Backend
    label: str                          # its name in messages
    heads: tuple[str, ...]              # variant heads it serves
    parameter_sets: tuple[str, ...]     # variant parameter sets it can train
    lm_decoders: tuple[str, ...]        # protocol `lm_decoder` values its model class supports
    limits: str = ""                    # why it serves only these, for error messages
    requires: tuple[str, ...] = ()      # optional packages it imports


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in [
        BackendEntry("hf", "harness.backends.hf:HFBackend", "Hugging Face",
                     heads=("mlm", "cls"), parameter_sets=("full", "lora", "lora+lm-head", "lm-head", "prefix", "none"),
                     lm_decoders=("tied", "untied")),
        BackendEntry("sglang", "harness.backends.sglang.backend:SGLangBackend", "SGLang",
                     heads=("mlm",), parameter_sets=("full",), lm_decoders=("tied",),
                     limits="its model class ties the decoder to the word embeddings and runs inference only",
                     requires=("sglang",)),
    ]
}


def backend_entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


@functools.cache
def get_backend(name: str) -> Backend:
    module_name, class_name = backend_entry(name).target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()
