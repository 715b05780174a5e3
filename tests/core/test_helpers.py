"""The core helpers: atomic writes, slugs, means, dtype names."""

import os
import statistics

import pytest

from harness.core.dtypes import DTYPE_NAMES
from harness.core.files import atomic_write_bytes, atomic_write_text
from harness.core.stats import mean, population_std
from harness.core.text import slug


def test_atomic_write_replaces_and_leaves_only_the_file(tmp_path):
    path = tmp_path / "out.md"
    assert atomic_write_text(path, "one ±\n") == path
    atomic_write_text(path, "two\n")
    assert path.read_bytes() == b"two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.md"]


def test_atomic_write_refuses_an_existing_name_when_exclusive(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write_text(path, "second", exclusive=True)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]   # the temporary file is gone


@pytest.mark.parametrize("exclusive, step", [(False, "replace"), (True, "link")])
def test_a_failed_write_leaves_no_temporary_file_and_the_old_content(tmp_path, monkeypatch, exclusive, step):
    path = tmp_path / "table.csv"
    if not exclusive:
        path.write_text("old")

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, step, fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new", exclusive=exclusive)
    assert [p.name for p in tmp_path.iterdir()] == ([] if exclusive else ["table.csv"])
    if not exclusive:
        assert path.read_text() == "old"


def test_temporary_names_are_unique(tmp_path, monkeypatch):
    names = []
    original = os.replace

    def spy(source, target):
        names.append(os.path.basename(source))
        original(source, target)
    monkeypatch.setattr(os, "replace", spy)
    for _ in range(2):
        atomic_write_text(tmp_path / "x.txt", "x")
    assert len(set(names)) == 2 and all(n.startswith(".x.txt.") and n.endswith(".tmp") for n in names)


def test_slug_names_report_folders_and_perf_machines():
    assert slug("sst2", "sst2-mezo", 3, "smoke", "cpu", "random-init:tiny") == (
        "sst2_sst2-mezo_3_smoke_cpu_random-init-tiny")
    assert slug("sst2", "cuda:NVIDIA H100 80GB HBM3", "org/roberta-large") == (
        "sst2_cuda-NVIDIA-H100-80GB-HBM3_org-roberta-large")
    assert slug("AMD EPYC (2 cores)", lower=True, keep="") == "amd-epyc-2-cores"
    assert slug("NVIDIA H100 (CUDA)", lower=True, keep="") == "nvidia-h100-cuda"
    assert slug("a_b.c", lower=True, keep="") == "a-b-c"


def test_mean_is_fmean_and_none_for_no_values():
    values = [0.1, 0.2, 0.7, 1e-17]
    assert mean(values) == statistics.fmean(values)
    assert mean([]) is None
    assert population_std([80.0, 90.0]) == 5.0


def test_dtype_names_are_torch_dtypes():
    torch = pytest.importorskip("torch")
    from harness.backends.hf import torch_dtype

    assert DTYPE_NAMES == ("float32", "bfloat16", "float16")
    assert [torch_dtype(name) for name in DTYPE_NAMES] == [torch.float32, torch.bfloat16, torch.float16]
    from harness.core.errors import HarnessError
    with pytest.raises(HarnessError, match="unknown dtype 'fp8'"):
        torch_dtype("fp8")
