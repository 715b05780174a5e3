"""`--executor ray` refuses what cannot work before starting anything: no Ray installed, or a
relative results root on a remote cluster."""

import sys

import pytest

from harness.cli import main


def test_without_ray_it_says_how_to_install_it(sst2_protocol, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    code = main(["bench", "--protocol", str(sst2_protocol), "--profile", "smoke", "--variant", "hf-mlm",
                 "--executor", "ray", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert code == 2 and "--executor ray needs Ray: pip install 'mezo-bench[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_remote_cluster_needs_an_absolute_results_root(sst2_protocol, capsys):
    pytest.importorskip("ray")
    code = main(["bench", "--protocol", str(sst2_protocol), "--profile", "smoke", "--variant", "hf-mlm",
                 "--executor", "ray", "--address", "10.0.0.1:6379", "--out", "relative/results", "--device", "cpu"])
    assert code == 2 and "--out relative/results is relative: on a Ray cluster give an absolute path" in (
        capsys.readouterr().err)
