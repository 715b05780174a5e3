"""The committed report is what the committed records make: `mezo-bench report` and `mezo-bench claims`
regenerate results/report byte for byte (tables, CSVs, figures, claims), and nothing else is there."""

from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "results" / "report"


def test_results_report_regenerates_byte_identically(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)   # the ledgers, paper file and perf folder are found relative to the root
    out = tmp_path / "report"
    assert main(["report", "--results", "results", "--out", str(out)]) == 0
    assert main(["claims", "--results", "results", "--out", str(out)]) == 0
    capsys.readouterr()
    made = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    committed = sorted(path.relative_to(REPORT) for path in REPORT.rglob("*") if path.is_file())
    assert committed == made, "results/report has files the records do not make, or lacks some: regenerate it"
    differ = [str(name) for name in made if (out / name).read_bytes() != (REPORT / name).read_bytes()]
    assert differ == [], (f"regenerate results/report (mezo-bench report, then mezo-bench claims --out "
                          f"results/report): these differ from what the committed records make: {differ}")
