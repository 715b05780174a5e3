"""The claims ledger: verdicts computed from records, and a validated ledger file."""

import re
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.results.claims import Claim, judge, load_all_ledgers, load_claims, load_ledgers
from harness.results.paper import load_paper

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sst2"
PAPER = BENCH.parent / "paper.toml"


def claim(**overrides):
    values = dict(id="c", source="s", statement="t", task="sst2", metric="test_accuracy", variant="hf-mlm", expected=90.5,
                  tolerance=2.4, k=16, conditions={"protocol_version": 3, "model": "roberta-large", "hardware": "any",
                                                   "min_seeds": 2})
    return Claim(**{**values, **overrides})


@pytest.fixture
def pretrained(make_record):
    """make_record for a roberta-large run of the paper profile."""
    return lambda **kw: make_record(**{"model": "roberta-large", "profile": "paper", **kw})


def test_committed_ledger_loads_and_covers_the_required_claims():
    claims = {c.id: c for c in load_claims(BENCH / "claims.toml", load_paper(PAPER))}
    assert claims["paper-mezo-k16"].expected == 90.5 and claims["paper-mezo-k512"].expected == 93.3
    assert claims["paper-mezo-lora-k16"].expected == 91.4 and claims["paper-ft-k512"].expected == 93.9
    assert claims["paper-accuracy-objective-k512"].expected == 92.7
    assert claims["paper-no-prompt-k16"].expected == 51.9 and claims["paper-prompt-10k-k16"].expected == 89.6
    assert claims["seed001-radix-hit-rate"].expected == 48.5 and claims["seed001-memory-saved"].expected == 41.7
    assert claims["seed003-mlm-zero-gradients"].expected == 0.1
    assert claims["seed004-mlm-nonzero-gradients"].expected == 100.0
    assert claims["paper-zero-shot"].expected == 79.0 and claims["paper-zero-shot"].metric == "zero_shot_test_accuracy"
    # the paper's MeZO (LoRA) numbers are judged on the variant that reproduces what the reference ran
    assert {claims[f"paper-mezo-lora-k{k}"].variant for k in (16, 512)} == {"hf-mlm-lora-ref"}
    assert {claims[f"paper-{name}-k16"].conditions["profile"] for name in ("no-prompt", "prompt-10k")} == {
        "prompt-ablation"}
    for c in claims.values():
        assert c.conditions["protocol_version"] == 3, c.id          # every verdict names its protocol
        if c.id.startswith("paper-"):
            assert c.conditions["model"] == "roberta-large", c.id   # the paper's numbers need the paper's model
    assert {c.task for c in claims.values()} == {"sst2"}


NEW_LEDGERS = ("sst5", "trec", "rte", "mnli", "snli")


def test_every_task_has_a_ledger_with_the_papers_claims():
    paper = load_paper(PAPER)
    ledgers = sorted(BENCH.parent.glob("*/claims.toml"))
    assert [path.parent.name for path in ledgers] == sorted(["sst2", *NEW_LEDGERS])
    claims = load_ledgers(ledgers, paper)        # ids unique across the ledgers
    for c in claims:
        assert c.task == Path(c.ledger).parent.name, c.id
    new = {c.id: c for c in claims if c.task in NEW_LEDGERS}
    for task in NEW_LEDGERS:
        wanted = {f"paper-{task}-{name}" for name in (
            "zero-shot", "mezo-k16", "mezo-k512", "mezo-lora-k16", "mezo-lora-k512", "mezo-lora-merged-k16",
            "mezo-lora-merged-k512", "ft-k16", "ft-k512", "lp-k16", "lp-k512", "mezo-prefix-k16", "mezo-prefix-k512",
            "ft-lora-k16", "ft-lora-k512")}
        wanted |= {f"paper-{task}-accuracy-objective-k512"} if task in ("sst5", "snli", "trec") else set()
        assert {i for i, c in new.items() if c.task == task} == wanted, task
    assert new["paper-sst5-mezo-k16"].expected == 45.5 and new["paper-sst5-mezo-k16"].tolerance == 4.0
    assert new["paper-mnli-ft-k512"].expected == 84.4 and new["paper-mnli-ft-k512"].variant == "hf-ft"
    assert new["paper-trec-mezo-lora-merged-k512"].expected == 95.0
    assert new["paper-trec-mezo-lora-merged-k512"].variant == "hf-mlm-lora-ref-merged"
    assert new["paper-rte-zero-shot"].expected == 51.4 and new["paper-rte-zero-shot"].metric == "zero_shot_test_accuracy"
    assert new["paper-snli-accuracy-objective-k512"].expected == 82.7
    assert new["paper-snli-accuracy-objective-k512"].tolerance == 2.0    # 2 x MeZO k=512's std: Table 3 has none
    assert (new["paper-rte-lp-k16"].expected, new["paper-rte-lp-k16"].tolerance) == (59.4, 10.6)
    assert new["paper-rte-lp-k16"].variant == "hf-lp" and new["paper-mnli-mezo-prefix-k512"].variant == "hf-mlm-prefix"
    assert (new["paper-trec-ft-lora-k512"].variant, new["paper-trec-ft-lora-k512"].tolerance) == ("hf-ft-lora", 1.0)
    by_paper_id = {(e["task"], e["method"], e.get("k")): e for e in paper.values() if e["source"] == "Table 18"}
    for c in new.values():
        # zero-shot: any profile and seed (deterministic); the rest: the published grid, 5 seeds
        assert c.conditions == {"protocol_version": 1, "model": "roberta-large", "hardware": "any",
                                **({} if c.metric == "zero_shot_test_accuracy" else {"profile": "paper", "min_seeds": 5})}
        method = {"hf-mlm": "MeZO", "hf-ft": "FT", "hf-lp": "LP", "hf-mlm-prefix": "MeZO (prefix)",
                  "hf-ft-lora": "FT (LoRA)"}.get(c.variant, "MeZO (LoRA)")
        entry = by_paper_id.get((c.task, method, c.k))
        if c.variant != "hf-mlm-acc" and c.k is not None:   # 2 x std, at least 1 point (below: seed noise)
            assert entry["mean"] == c.expected and c.tolerance == pytest.approx(max(2 * entry["std"], 1.0)), c.id


def test_only_records_of_the_claims_task_count(pretrained):
    sst5 = [pretrained(seed=seed, test=0.45, task="sst5", version=1) for seed in (13, 42)]
    sst2 = [pretrained(seed=seed, test=0.90, task="sst2", version=1) for seed in (13, 42)]
    on_sst2 = claim(conditions={"protocol_version": 1, "model": "roberta-large", "profile": "paper"})
    on_sst5 = claim(task="sst5", expected=45.5, tolerance=4.0, conditions=on_sst2.conditions)
    # the same variant, k and protocol version on another task never counts
    verdict = judge(on_sst2, sst5)
    assert verdict.outcome == "not measured"
    assert verdict.detail == "no completed records of task sst2 variant hf-mlm k=16 (only of other tasks: sst5)"
    assert judge(on_sst5, sst5 + sst2).measured == pytest.approx(45.0)
    assert judge(on_sst2, sst5 + sst2).measured == pytest.approx(90.0)
    assert judge(on_sst5, sst5 + sst2).verdict == judge(on_sst2, sst5 + sst2).verdict == "reproduced"   # not 67.5


def test_a_protocol_version_is_one_of_the_tasks_shipped_protocol(pretrained):
    """Records of a renamed copy (another identity, e.g. sst2-mezo-short v1) never count for a claim
    on sst2-mezo v1 unless the claim names that protocol."""
    shipped = [pretrained(seed=seed, test=0.90, version=1) for seed in (13, 42)]
    copy = [pretrained(seed=seed, test=0.50, version=1, protocol_name="sst2-mezo-short", protocol_hash="c" * 64)
            for seed in (13, 42)]
    conditions = {"protocol_version": 1, "model": "roberta-large", "profile": "paper"}
    assert judge(claim(conditions=conditions), shipped + copy).measured == pytest.approx(90.0)
    verdict = judge(claim(conditions=conditions), copy)
    assert verdict.outcome == "not measured" and "protocol sst2-mezo v1" in verdict.detail
    on_copy = claim(conditions={**conditions, "protocol_name": "sst2-mezo-short"})
    assert judge(on_copy, shipped + copy).measured == pytest.approx(50.0)


def test_a_claim_id_in_two_ledgers_is_an_error_naming_both_files(tmp_path, capsys):
    from harness.cli import main

    text = '[[claim]]\nid="same"\nsource="s"\nstatement="t"\ntask="{task}"\nmetric="test_accuracy"\n' \
           'variant="hf-mlm"\nexpected=1\ntolerance=1\nconditions={{protocol_version=1}}\n'
    first, second = tmp_path / "sst2" / "claims.toml", tmp_path / "sst5" / "claims.toml"
    for path, task in ((first, "sst2"), (second, "sst5")):
        path.parent.mkdir()
        path.write_text(text.format(task=task))
    assert [c.task for c in load_ledgers([first], load_paper(PAPER))] == ["sst2"]
    message = (f"claim id 'same' is in both {first} and {second}; claim and comparison ids must be unique "
               f"across ledgers")
    with pytest.raises(HarnessError, match=re.escape(message)):
        load_ledgers([first, second], load_paper(PAPER))
    assert main(["claims", "--claims", str(first), "--claims", str(second), "--paper", str(PAPER)]) == 2
    assert capsys.readouterr().err == f"mezo-bench: error: {message}\n"


def test_claims_reads_every_ledger_by_default(make_record, tmp_path, capsys, monkeypatch):
    from harness.cli import main
    from harness.results.store import write_record

    for seed in (13, 42):
        write_record(make_record(variant="hf-mlm-acc", seed=seed, zero_fraction=0.99),
                     tmp_path / "results" / "sst2" / "sst2-mezo-v3" / "smoke" / f"{seed}.json")
    monkeypatch.chdir(BENCH.parents[1])     # the defaults are relative to the repository root
    assert main(["claims", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    ledgers = sorted(BENCH.parent.glob("*/claims.toml"))
    count = len(load_ledgers(ledgers, load_paper(PAPER)))
    lines = out.splitlines()
    assert f"1 reproduced, 0 refuted, {count - 1} not measured" in lines
    compared = len(load_all_ledgers(ledgers, load_paper(PAPER))[1])
    assert lines[-2] == f"0 holds, 0 contradicted, 0 inconclusive, {compared} not measured"
    assert "paper-snli-mezo-k16                not measured" in out and "paper-mezo-k16  " in out
    markdown = (tmp_path / "out" / "claims.md").read_text()
    assert "see " + ", ".join(str(path.relative_to(BENCH.parents[1])) for path in ledgers) + "." in markdown
    assert "| paper-trec-ft-k512: Fine-tuning (Adam) reaches 97.3 (0.2) on TREC with k=512 | trec |" in markdown
    monkeypatch.chdir(tmp_path)             # no benchmarks/*/claims.toml here
    assert main(["claims", "--results", str(tmp_path / "results"), "--paper", str(PAPER)]) == 2
    assert "no claims ledger found (benchmarks/*/claims.toml under" in capsys.readouterr().err


def test_reproduced_and_refuted_from_best_dev_mean(pretrained):
    grid = {"seeds": [13, 42], "lr": [1e-3, 1e-4], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
    records = [pretrained(seed=13, test=0.90, grid=grid), pretrained(seed=42, test=0.92, grid=grid),
               pretrained(seed=13, lr=1e-4, dev=0.1, test=0.10, grid=grid),
               pretrained(seed=42, lr=1e-4, dev=0.1, test=0.10, grid=grid)]          # not the best-dev points
    reproduced = judge(claim(), records)
    assert reproduced.verdict == "reproduced" and reproduced.measured == pytest.approx(91.0)
    assert reproduced.scope == ""                                                  # pretrained: no qualifier
    refuted = judge(claim(), [pretrained(seed=13, test=0.80), pretrained(seed=42, test=0.82)])
    assert refuted.verdict == "refuted" and refuted.measured == pytest.approx(81.0)


def test_not_measured_says_what_is_missing(pretrained, make_record):
    tiny = [make_record(seed=13), make_record(seed=42)]
    verdict = judge(claim(), tiny)
    assert verdict.verdict == "not measured" and verdict.measured is None
    assert "needs protocol sst2-mezo v3, model roberta-large (pretrained)" in verdict.detail
    assert "random-init:tiny / profile smoke / v3 / cpu" in verdict.detail
    assert "no completed records of task sst2 variant sglang-mlm" in judge(claim(variant="sglang-mlm"), tiny).detail
    one_seed = {"seeds": [13], "lr": [1e-3], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
    assert "needs 2 seeds, the complete grids have 1" in judge(claim(), [pretrained(seed=13, grid=one_seed)]).detail
    gpu_only = judge(claim(conditions={"protocol_version": 3, "model": "any", "hardware": "cuda"}), tiny)
    assert "needs protocol sst2-mezo v3, model any, hardware cuda" in gpu_only.detail
    radix = judge(claim(metric="radix_prefix_hit_percent", conditions={"protocol_version": 3}), tiny)
    assert radix.verdict == "not measured" and "no matching record has radix.prefix_hit_rate" in radix.detail


def test_sparsity_claims_use_the_runs_that_measured_it(make_record):
    records = [make_record(variant="hf-mlm-acc", seed=13, zero_fraction=0.99),
               make_record(variant="hf-mlm-acc", seed=42, zero_fraction=0.97)]
    accuracy = claim(metric="zero_gradient_percent", variant="hf-mlm-acc", expected=100.0, tolerance=5.0, k=None,
                     conditions={"protocol_version": 3, "model": "any"})
    verdict = judge(accuracy, records)
    assert verdict.outcome == "reproduced" and verdict.measured == pytest.approx(98.0)
    # reached on a random-init model, and the verdict itself says so
    assert verdict.verdict == "reproduced on a random-init model (random-init:tiny), not a pretrained checkpoint"
    # a verdict over several models names every one that is not the paper's kind
    standin = [make_record(variant="hf-mlm-acc", seed=seed, zero_fraction=0.98, model="pretrained:bert-tiny-splade",
                           profile="standin") for seed in (13, 42)]
    both = judge(accuracy, records + standin)
    assert both.verdict == ("reproduced on a random-init model (random-init:tiny), not a pretrained checkpoint; on the "
                            "stand-in (BERT-Tiny, 4.4M), not the paper's RoBERTa-large (pretrained:bert-tiny-splade)")
    nonzero = claim(metric="nonzero_gradient_percent", variant="hf-mlm-acc", expected=100.0, tolerance=0.0, k=None,
                    conditions={"protocol_version": 3})
    assert judge(nonzero, records).outcome == "refuted"


def test_only_records_of_the_named_protocol_version_count(pretrained):
    old = [pretrained(seed=seed, test=0.91, version=2) for seed in (13, 42)]
    verdict = judge(claim(), old)
    assert verdict.outcome == "not measured" and "needs protocol sst2-mezo v3" in verdict.detail
    assert "profile paper / v2 /" in verdict.detail
    by_hash = claim(conditions={"protocol_hash": "h" * 64, "model": "roberta-large"})
    assert judge(by_hash, old).outcome == "reproduced"
    assert judge(claim(conditions={"protocol_hash": "x" * 64, "model": "any"}), old).outcome == "not measured"


def test_incomplete_grids_are_not_measured_and_say_what_is_missing(pretrained):
    grid = {"seeds": [13, 42], "lr": [1e-5, 1e-6], "batch_size": [16, 64], "eps": [1e-3], "weight_decay": [0.0, 0.1]}
    full = [pretrained(seed=seed, lr=lr, batch_size=batch, weight_decay=wd, test=0.9, grid=grid)
            for seed in (13, 42) for lr in (1e-5, 1e-6) for batch in (16, 64) for wd in (0.0, 0.1)]
    assert judge(claim(), full).outcome == "reproduced"
    missing_one = full[:-1]
    verdict = judge(claim(), missing_one)
    assert verdict.outcome == "not measured"
    assert "1 of 16 grid points have no completed or diverged run (e.g. seed 42 lr 1e-06 batch 64 eps 0.001 wd 0.1)" in (
        verdict.detail)
    failed = missing_one + [pretrained(seed=42, lr=1e-6, batch_size=64, weight_decay=0.1, grid=grid, status="failed")]
    assert judge(claim(), failed).outcome == "not measured"              # a failed run is no grid point
    diverged = dict(pretrained(seed=42, lr=1e-6, batch_size=64, weight_decay=0.1, grid=grid, dev=0.2, test=0.5),
                    status="diverged", diverged_at=7)
    assert judge(claim(), missing_one + [diverged]).outcome == "reproduced"   # diverged counts, is not the best
    schema_2 = [dict(r, protocol={**r["protocol"], "grid": None}) for r in full]
    assert "do not say their grid" in judge(claim(), schema_2).detail


def test_a_selection_claim_needs_one_grid(pretrained):
    records = [pretrained(seed=seed, test=0.9) for seed in (13, 42)]
    records += [pretrained(seed=seed, test=0.9, protocol_hash="q" * 64, profile="quick") for seed in (13, 42)]
    verdict = judge(claim(), records)
    assert verdict.outcome == "not measured" and "complete grids of several protocol hashes match" in verdict.detail
    profiled = claim(conditions={"protocol_version": 3, "model": "roberta-large", "profile": "paper"})
    assert judge(profiled, records).outcome == "reproduced"


HEAD = '[[claim]]\nid="a"\nsource="s"\nstatement="t"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (HEAD + 'task="sst2"\nmetric="nope"\nvariant="v"\nexpected=1\ntolerance=1\n', "field 'metric' must be one of"),
        (HEAD + 'task="sst2"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\npaper="sst2/mezo-k16"\ntolerance=1\n',
         "give exactly one of 'expected' or 'paper'"),
        (HEAD + 'task="sst2"\nmetric="test_accuracy"\nvariant="v"\npaper="sst2/mezo-k9"\ntolerance=1\n',
         "field 'paper' names no result in the paper file: 'sst2/mezo-k9'"),
        (HEAD + 'task="sst2"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=-1\n',
         "field 'tolerance' must be a number >= 0"),
        ('[[claim]]\nid="a"\nsource="s"\ntask="sst2"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\n',
         "claim 'a': missing key 'statement'"),
        (HEAD + 'task="sst2"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\nconditions={gpu="h100"}\n',
         r"conditions: unknown key .gpu."),
        (HEAD + 'task="sst2"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\nconditions={model="any"}\n',
         "conditions need exactly one of 'protocol_version' or 'protocol_hash'"),
        # every claim names its task, a task of the paper's table, and cites a number of that task
        (HEAD + 'metric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\n', "claim 'a': missing key 'task'"),
        (HEAD + 'task="cola"\nmetric="test_accuracy"\nvariant="v"\nexpected=1\ntolerance=1\n',
         "claim 'a': field 'task' must be one of sst2, sst5, snli, mnli, rte, trec, got 'cola'"),
        (HEAD + 'task="sst5"\nmetric="test_accuracy"\nvariant="hf-mlm"\npaper="sst2/mezo-k16"\ntolerance=1\n',
         "claim 'a': field 'paper' names a result of task 'sst2', not of the claim's task 'sst5'"),
    ],
)
def test_bad_ledger_entries_name_the_claim_and_field(tmp_path, text, message):
    path = tmp_path / "claims.toml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=message):
        load_claims(path, load_paper(PAPER))


def test_claims_and_report_commands(make_record, tmp_path, capsys):
    from harness.cli import main
    from harness.results.store import write_record

    for seed in (13, 42):
        write_record(make_record(variant="hf-mlm-acc", seed=seed, zero_fraction=0.99),
                     tmp_path / "results" / "sst2" / "sst2-mezo-v3" / "smoke" / f"{seed}.json")
    assert main(["claims", "--results", str(tmp_path / "results"), "--claims", str(BENCH / "claims.toml"),
                 "--paper", str(PAPER), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "seed003-accuracy-zero-gradients    reproduced on a random-init model (random-init:tiny)" in out
    assert "paper-mezo-k16                     not measured" in out
    assert "| seed003-accuracy-zero-gradients:" in (tmp_path / "out" / "claims.md").read_text()
    assert main(["report", "--results", str(tmp_path / "results"), "--paper", str(PAPER),
                 "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "summary.csv").is_file()
    assert main(["report", "--results", str(tmp_path / "empty-nowhere")]) == 2
    assert "results not found" in capsys.readouterr().err
    assert main(["claims", "--claims", str(tmp_path / "missing.toml"), "--paper", str(PAPER)]) == 2
    assert "file not found" in capsys.readouterr().err
