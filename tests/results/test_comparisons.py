"""Seed-paired comparisons (harness.results.comparisons): loading, pairing by seed, settings,
completeness, verdicts with hand-computed intervals, and what is reported as not measured."""

import json
import math

import pytest

from harness.core.errors import HarnessError
from harness.results.claims import load_all_ledgers, write_claims
from harness.results.comparisons import judge_comparison, load_comparisons, summary_line

STANDIN = "pretrained:bert-tiny-splade"
T_975_2 = 4.302652729911275   # t(0.975, 2 degrees of freedom)

BASE = '''
[[comparison]]
id = "mezo-over-zero-shot"
source = "MeZO paper, Table 18"
statement = "MeZO beats zero-shot"
paper_direction = "MeZO above zero-shot"
task = "sst2"
a = { variant = "hf-mlm", k = 512, metric = "test_accuracy" }
b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }
direction = "up"
conditions = { protocol_version = 3, model = "pretrained:bert-tiny-splade" }
'''


def ledger(tmp_path, text=BASE, name="claims.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def runs(make_record, variant="hf-mlm", k=512, tests=(0.60, 0.62, 0.64), zero_shot=0.5, seeds=(13, 21, 42), **kw):
    grid = {"seeds": list(seeds), "lr": [1e-5], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
    return [make_record(variant=variant, k=k, seed=seed, lr=1e-5, test=test, dev=test, zero_shot=zero_shot,
                        model=STANDIN, profile="standin", grid=grid, **kw)
            for seed, test in zip(seeds, tests)]


def test_mezo_over_zero_shot_holds_with_the_hand_computed_interval(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    [verdict] = judge_comparison(c, runs(make_record))
    # differences 10, 12, 14 points: mean 12, s 2, interval 12 +- t(2) * 2 / sqrt(3)
    half = T_975_2 * 2 / math.sqrt(3)
    assert verdict.outcome == "holds" and verdict.paired.n == 3
    assert verdict.paired.mean_difference == pytest.approx(12)
    assert (verdict.paired.low, verdict.paired.high) == pytest.approx((12 - half, 12 + half))
    assert verdict.verdict == "holds on the stand-in (BERT-Tiny, 4.4M), not the paper's RoBERTa-large"
    assert "profile standin" in verdict.setting and STANDIN in verdict.setting
    assert "seed 13: 60 - 50" in verdict.detail
    assert "2 degrees of freedom" in summary_line(verdict)


def test_pairs_are_by_seed_across_variants_and_a_seed_on_one_side_only_is_left_out(tmp_path, make_record):
    text = BASE.replace('b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }',
                        'b = { variant = "hf-ft", k = 512, metric = "test_accuracy" }').replace('"up"', '"down"')
    [c] = load_comparisons(ledger(tmp_path, text))
    records = runs(make_record, tests=(0.60, 0.62, 0.64)) + runs(make_record, variant="hf-ft", tests=(0.70, 0.69),
                                                                  seeds=(21, 13))
    [verdict] = judge_comparison(c, records)
    # seed 13: 60 - 69 = -9; seed 21: 62 - 70 = -8 (seed 42 has no FT run: the FT grid has only 13 and 21)
    assert verdict.paired.n == 2 and verdict.paired.mean_difference == pytest.approx(-8.5)
    # s = sqrt(0.5), se 0.5, t(0.975, 1) = 12.7062: [-14.853, -2.147], wholly below 0: "down" holds
    assert verdict.outcome == "holds"
    assert (verdict.paired.low, verdict.paired.high) == pytest.approx((-14.853102, -2.146898), abs=1e-5)
    assert "seeds on one side only: 42" in verdict.detail


def test_an_incomplete_grid_is_not_measured_and_says_what_is_missing(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    records = runs(make_record)[:2]   # seed 42 of the grid never ran
    [verdict] = judge_comparison(c, records)
    assert verdict.outcome == "not measured" and verdict.paired is None
    assert "1 of 3 grid points not run (e.g. seed 42" in verdict.detail


def test_no_runs_of_the_model_is_not_measured(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    [verdict] = judge_comparison(c, [make_record(k=512)])   # a random-init record: another model
    assert verdict.outcome == "not measured" and "model pretrained:bert-tiny-splade" in verdict.detail
    assert verdict.verdict == "not measured"


def test_settings_are_judged_apart_and_a_profile_condition_selects_them(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    records = runs(make_record) + [dict(r, protocol={**r["protocol"], "profile": "standin-main", "hash": "m" * 64})
                                   for r in runs(make_record, tests=(0.49, 0.50, 0.48))]
    verdicts = judge_comparison(c, records)
    assert [v.outcome for v in verdicts] == ["holds", "inconclusive"]
    assert "profile standin," in verdicts[0].setting and "profile standin-main" in verdicts[1].setting
    [c] = load_comparisons(ledger(tmp_path, BASE.replace('bert-tiny-splade" }', 'bert-tiny-splade", profile = ["standin-main"] }')))
    assert [v.setting.split(", ")[1] for v in judge_comparison(c, records)] == ["profile standin-main"]


def test_within_a_margin_and_a_constant_side(tmp_path, make_record):
    text = BASE.replace('b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }', 'b = { value = 1.0 }')
    text = text.replace('metric = "test_accuracy" }', 'metric = "memory_peak_ratio_mezo_over_inference" }')
    text = text.replace('direction = "up"', 'direction = "within"\nmargin = 0.1')
    [c] = load_comparisons(ledger(tmp_path, text))
    [verdict] = judge_comparison(c, runs(make_record, memory_peak=(100, 102, 150)))
    assert verdict.outcome == "holds" and verdict.paired.mean_difference == pytest.approx(0.02)
    assert verdict.paired.low == pytest.approx(0.02) and verdict.paired.margin == 0.1
    [verdict] = judge_comparison(c, runs(make_record, memory_peak=(100, 150, 150)))
    assert verdict.outcome == "contradicted"


def test_equal_forward_passes_are_checked(tmp_path, make_record):
    text = BASE.replace('b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }',
                        'b = { variant = "hf-cls", k = 512, metric = "test_accuracy" }')
    text = text.replace('direction = "up"', 'direction = "up"\nequal_forward_passes = true')
    [c] = load_comparisons(ledger(tmp_path, text))
    records = runs(make_record, steps=400) + runs(make_record, variant="hf-cls", steps=200, tests=(0.5, 0.5, 0.51))
    [verdict] = judge_comparison(c, records)
    assert verdict.outcome == "not measured" and "seed 13: (400, 64) vs (200, 64)" in verdict.detail


@pytest.mark.parametrize("edit, message", [
    (('direction = "up"', 'direction = "sideways"'), "field 'direction' must be one of up, down, within"),
    (('direction = "up"', 'direction = "within"'), "field 'margin' is required with direction 'within'"),
    (('direction = "up"', 'direction = "up"\nmargin = 1'), "field 'margin' is required with direction 'within' and only then"),
    (('metric = "test_accuracy"', 'metric = "loss"'), "field 'metric' must be one of"),
    (('a = { variant = "hf-mlm", k = 512, metric = "test_accuracy" }', 'a = { value = 3 }'), "only 'b' may be a constant"),
    (('k = 512, metric = "zero_shot', 'k = 0, metric = "zero_shot'), "field 'k' must be an integer >= 1"),
    (('model = "pretrained:bert-tiny-splade"', 'hardware = "cpu"'), "missing key 'model'"),
    (('paper_direction = "MeZO above zero-shot"\n', ''), "missing key 'paper_direction'"),
    (('task = "sst2"', 'task = "cola"'), "field 'task' must be one of"),
    (('model = "pretrained:bert-tiny-splade"', 'model = "pretrained:bert-tiny-splade", profile = "standin"'),
     "'profile' must be a list of profile names"),
    (('direction = "up"', 'direction = "up"\nmystery = 1'), "mystery"),
    (('variant = "hf-mlm", k = 512, metric = "test_accuracy"', 'variant = "hf-mlmm", k = 512, metric = "test_accuracy"'),
     "field 'variant' must be a registered variant"),
    (('protocol_version = 3', 'protocol_version = "3"'), "'protocol_version' must be an integer"),
    (('b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }', 'b = { value = 1.0 }\nequal_forward_passes = true'),
     "'equal_forward_passes' needs runs on both sides"),
])
def test_bad_entries_are_refused_naming_the_field(tmp_path, edit, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_comparisons(ledger(tmp_path, BASE.replace(*edit)))


def test_ids_are_unique_across_claims_and_comparisons_and_both_are_written(tmp_path, make_record):
    first = ledger(tmp_path, BASE, "one.toml")
    second = ledger(tmp_path, BASE, "two.toml")
    with pytest.raises(HarnessError, match="is in both .*one.toml and .*two.toml"):
        load_all_ledgers([first, second], {})
    claims, comparisons = load_all_ledgers([first], {})
    assert claims == [] and [c.id for c in comparisons] == ["mezo-over-zero-shot"]
    verdicts = judge_comparison(comparisons[0], runs(make_record))
    markdown, data = write_claims([], tmp_path / "out", verdicts)
    assert "## Comparisons, seed-paired" in markdown.read_text() and "MeZO above zero-shot" in markdown.read_text()
    [entry] = json.loads(data.read_text())
    assert entry["kind"] == "comparison" and entry["outcome"] == "holds" and entry["n"] == 3


def test_inconclusive_and_contradicted_up_verdicts(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    # differences +5, -5, +3: mean 1, interval straddles 0
    [mixed] = judge_comparison(c, runs(make_record, tests=(0.55, 0.45, 0.53)))
    assert mixed.outcome == "inconclusive" and mixed.paired.low < 0 < mixed.paired.high
    # differences -10, -11, -12: wholly below 0 against a claim of "up"
    [worse] = judge_comparison(c, runs(make_record, tests=(0.40, 0.39, 0.38)))
    assert worse.outcome == "contradicted" and worse.paired.high < 0


def test_one_seed_or_a_seed_without_a_value_or_an_evaluation_is_not_measured(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    [one] = judge_comparison(c, runs(make_record, tests=(0.6,), seeds=(13,)))
    assert one.outcome == "not measured" and "needs 2 or more seed pairs: 1 seed(s) on both sides" in one.detail
    records = runs(make_record)
    records[1] = dict(records[1], metrics={**records[1]["metrics"], "zero_shot_test_accuracy": None})
    [lacking] = judge_comparison(c, records)
    assert lacking.outcome == "not measured" and "seed(s) 21 lack a finite value" in lacking.detail
    records = runs(make_record)
    records[2] = dict(records[2], metrics={**records[2]["metrics"], "best_dev_accuracy": None}, status="diverged")
    [unevaluated] = judge_comparison(c, records)
    assert unevaluated.outcome == "not measured" and "seed(s) 42 have no evaluated run" in unevaluated.detail


def test_each_seed_reads_its_best_dev_grid_point(tmp_path, make_record):
    [c] = load_comparisons(ledger(tmp_path))
    grid = {"seeds": [13, 21], "lr": [1e-5, 3e-5], "batch_size": [64], "eps": [1e-3], "weight_decay": [0.0]}
    records = [make_record(k=512, seed=seed, lr=lr, dev=dev, test=test, zero_shot=0.5, model=STANDIN,
                           profile="standin", grid=grid)
               for seed, lr, dev, test in ((13, 1e-5, 0.70, 0.61), (13, 3e-5, 0.65, 0.99),
                                           (21, 1e-5, 0.60, 0.99), (21, 3e-5, 0.72, 0.63))]
    [verdict] = judge_comparison(c, records)
    assert "seed 13: 61 - 50; seed 21: 63 - 50" in verdict.detail   # the best dev run of each seed, never test


def test_every_markdown_row_has_the_header_s_cells(tmp_path, make_record):
    from harness.results.comparisons import to_markdown

    text = BASE.replace('b = { variant = "hf-mlm", k = 512, metric = "zero_shot_test_accuracy" }', 'b = { value = 1.0 }')
    text = text.replace('metric = "test_accuracy" }', 'metric = "memory_peak_ratio_mezo_over_inference" }')
    text = text.replace('direction = "up"', 'direction = "within"\nmargin = 0.1')
    [c] = load_comparisons(ledger(tmp_path, text))
    rows = [line for line in to_markdown(judge_comparison(c, runs(make_record))).splitlines() if line.startswith("|")]
    assert len({row.count("|") for row in rows}) == 1, rows
