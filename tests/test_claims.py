"""The claims ledger: verdicts computed from records, and a validated ledger file."""

from pathlib import Path

import pytest

from conftest import make_record
from harness.claims import Claim, judge, load_claims, load_paper
from harness.errors import HarnessError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "sst2"


def claim(**overrides):
    values = dict(id="c", source="s", statement="t", metric="test_accuracy", variant="hf-mlm", expected=90.5,
                  tolerance=2.4, k=16, conditions={"model": "roberta-large", "hardware": "any", "min_seeds": 2})
    return Claim(**{**values, **overrides})


def pretrained(**kw):
    return make_record(model="roberta-large", profile="paper", **kw)


def test_committed_ledger_loads_and_covers_the_required_claims():
    claims = {c.id: c for c in load_claims(BENCH / "claims.toml", load_paper(BENCH / "paper.toml"))}
    assert claims["paper-mezo-k16"].expected == 90.5 and claims["paper-mezo-k512"].expected == 93.3
    assert claims["paper-mezo-lora-k16"].expected == 91.4 and claims["paper-ft-k512"].expected == 93.9
    assert claims["paper-accuracy-objective-k512"].expected == 92.7
    assert claims["paper-no-prompt-k16"].expected == 51.9 and claims["paper-prompt-10k-k16"].expected == 89.6
    assert claims["seed001-radix-hit-rate"].expected == 48.5 and claims["seed001-memory-saved"].expected == 41.7
    assert claims["seed003-mlm-zero-gradients"].expected == 0.1
    assert claims["seed004-mlm-nonzero-gradients"].expected == 100.0


def test_reproduced_and_refuted_from_best_dev_mean():
    records = [pretrained(seed=13, test=0.90), pretrained(seed=42, test=0.92),
               pretrained(seed=42, lr=1e-4, dev=0.1, test=0.10)]          # not the best-dev point
    reproduced = judge(claim(), records)
    assert reproduced.verdict == "reproduced" and reproduced.measured == pytest.approx(91.0)
    refuted = judge(claim(), [pretrained(seed=13, test=0.80), pretrained(seed=42, test=0.82)])
    assert refuted.verdict == "refuted" and refuted.measured == pytest.approx(81.0)


def test_not_measured_says_what_is_missing():
    tiny = [make_record(seed=13), make_record(seed=42)]
    verdict = judge(claim(), tiny)
    assert verdict.verdict == "not measured" and verdict.measured is None
    assert "needs model roberta-large (pretrained)" in verdict.detail
    assert "random-init:tiny / profile smoke / cpu" in verdict.detail
    assert "no completed records of variant sglang-mlm" in judge(claim(variant="sglang-mlm"), tiny).detail
    assert "needs 2 seeds, records have 1" in judge(claim(), [pretrained(seed=13)]).detail
    gpu_only = judge(claim(conditions={"model": "any", "hardware": "cuda"}), tiny)
    assert "needs model any, hardware cuda" in gpu_only.detail
    radix = judge(claim(metric="radix_prefix_hit_percent", conditions={}), tiny)
    assert radix.verdict == "not measured" and "no matching record has radix.prefix_hit_rate" in radix.detail


def test_sparsity_claims_use_the_runs_that_measured_it():
    records = [make_record(variant="hf-mlm-acc", seed=13, zero_fraction=0.99),
               make_record(variant="hf-mlm-acc", seed=42, zero_fraction=0.97)]
    accuracy = claim(metric="zero_gradient_percent", variant="hf-mlm-acc", expected=100.0, tolerance=5.0, k=None,
                     conditions={"model": "any"})
    verdict = judge(accuracy, records)
    assert verdict.verdict == "reproduced" and verdict.measured == pytest.approx(98.0)
    nonzero = claim(metric="nonzero_gradient_percent", variant="hf-mlm-acc", expected=100.0, tolerance=0.0, k=None,
                    conditions={})
    assert judge(nonzero, records).verdict == "refuted"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[claim]]\nid="a"\nsource="s"\nstatement="t"\nmetric="nope"\nvariant="v"\nexpected=1\ntolerance=1\n',
         "field 'metric' must be one of"),
        ('[[claim]]\nid="a"\nsource="s"\nstatement="t"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\npaper="mezo-k16"\ntolerance=1\n',
         "give exactly one of 'expected' or 'paper'"),
        ('[[claim]]\nid="a"\nsource="s"\nstatement="t"\nmetric="test_accuracy"\nvariant="v"\npaper="mezo-k9"\ntolerance=1\n',
         "field 'paper' names no result in the paper file: 'mezo-k9'"),
        ('[[claim]]\nid="a"\nsource="s"\nstatement="t"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=-1\n',
         "field 'tolerance' must be a number >= 0"),
        ('[[claim]]\nid="a"\nsource="s"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\n',
         "claim 'a': missing key 'statement'"),
        ('[[claim]]\nid="a"\nsource="s"\nstatement="t"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\nconditions={gpu="h100"}\n',
         r"conditions: unknown key .gpu."),
    ],
)
def test_bad_ledger_entries_name_the_claim_and_field(tmp_path, text, message):
    path = tmp_path / "claims.toml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=message):
        load_claims(path, load_paper(BENCH / "paper.toml"))


def test_claims_and_report_commands(tmp_path, capsys):
    from harness.cli import main
    from harness.record import write_record

    for seed in (13, 42):
        write_record(make_record(variant="hf-mlm-acc", seed=seed, zero_fraction=0.99),
                     tmp_path / "results" / "sst2" / "sst2-mezo-v2" / "smoke" / f"{seed}.json")
    assert main(["claims", "--results", str(tmp_path / "results"), "--claims", str(BENCH / "claims.toml"),
                 "--paper", str(BENCH / "paper.toml"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "seed003-accuracy-zero-gradients    reproduced" in out
    assert "paper-mezo-k16                     not measured" in out
    assert "| seed003-accuracy-zero-gradients:" in (tmp_path / "out" / "claims.md").read_text()
    assert main(["report", "--results", str(tmp_path / "results"), "--paper", str(BENCH / "paper.toml"),
                 "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "summary.csv").is_file()
    assert main(["report", "--results", str(tmp_path / "empty-nowhere")]) == 2
    assert "results not found" in capsys.readouterr().err
    assert main(["claims", "--claims", str(tmp_path / "missing.toml"), "--paper", str(BENCH / "paper.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
