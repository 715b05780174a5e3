"""The committed report is what the committed records make: `mezo-bench report` and `mezo-bench claims`
regenerate results/report byte for byte (tables, CSVs, claims; figures too where this matplotlib is the
one that drew them, since a PNG embeds matplotlib's version and its rendering), and nothing else is there."""

from pathlib import Path

import matplotlib

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "results" / "report"


def _comparable(name: Path) -> bool:
    """A PNG is compared byte for byte only if this matplotlib drew the committed one."""
    return name.suffix != ".png" or f"Matplotlib version{matplotlib.__version__}".encode() in (REPORT / name).read_bytes()


def test_results_report_regenerates_byte_identically(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)   # the ledgers, protocols, paper file and perf folder are found relative to the root
    out = tmp_path / "report"
    assert main(["report", "--results", "results", "--out", str(out)]) == 0
    assert main(["claims", "--results", "results", "--out", str(out)]) == 0
    capsys.readouterr()
    made = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    committed = sorted(path.relative_to(REPORT) for path in REPORT.rglob("*") if path.is_file())
    assert committed == made, "results/report has files the records do not make, or lacks some: regenerate it"
    assert any(name.suffix == ".md" for name in made)
    differ = [str(name) for name in made if _comparable(name) and (out / name).read_bytes() != (REPORT / name).read_bytes()]
    assert differ == [], (f"regenerate results/report (mezo-bench report, then mezo-bench claims --out "
                          f"results/report): these differ from what the committed records make: {differ}")
