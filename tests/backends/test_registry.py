"""The backend registry and contract: backends by name, imported lazily, each satisfying
harness.backends.base.Backend and agreeing with what its registry entry declares."""

import importlib
import importlib.util
import subprocess
import sys

import pytest

from harness.backends.base import Backend
from harness.backends.registry import BACKENDS, backend_entry, get_backend
from harness.core.errors import HarnessError


def test_choosing_a_backend_imports_nothing_heavy_until_it_is_used():
    code = ("import sys; import harness.backends.registry, harness.protocol.loading, harness.protocol.variants, "
            "harness.results.report, harness.results.claims, harness.results.gate; "
            "print(sorted(m for m in ('torch', 'transformers', 'sglang') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


def test_the_hf_backend_satisfies_the_contract_and_its_entry():
    backend = get_backend("hf")
    assert isinstance(backend, Backend)
    assert backend.name == "hf" and get_backend("hf") is backend
    assert backend.ragged_batches is False and backend.memory_in_process is False
    assert backend.memory_phases == ("inference", "mezo_step", "first_order_step")


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(HarnessError, match=r"unknown backend 'vllm'; known backends: hf, sglang"):
        backend_entry("vllm")


def test_every_entry_points_at_a_class_of_its_name():
    for name, entry in BACKENDS.items():
        module, cls = entry.target.split(":")
        source = importlib.util.find_spec(module)
        assert source is not None, f"{name}: module {module} not found"
        assert f"class {cls}" in open(source.origin).read()
        assert entry.heads and entry.parameter_sets and entry.lm_decoders


def test_each_backend_class_agrees_with_its_entry_and_the_memory_phases():
    from harness.measure.memory import PHASES

    for name in BACKENDS:
        module, cls = BACKENDS[name].target.split(":")
        backend = getattr(importlib.import_module(module), cls)   # the class: SGLang itself is imported lazily
        assert backend.name == name
        assert set(backend.memory_phases) <= set(PHASES) and "inference" in backend.memory_phases
