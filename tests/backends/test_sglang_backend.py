"""The SGLang backend against the Hugging Face one (runs where SGLang is installed:
`nox -s tests-sglang`). One ModelRunner per process, so every test here shares one runner
built on the micro model; the end-to-end run goes through the CLI in a child process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if os.environ.get("MEZO_BENCH_REQUIRE_SGLANG") == "1":
    import sglang  # noqa: F401  -- `nox -s tests-sglang`: a broken install must fail, not skip
else:
    pytest.importorskip("sglang")

from harness.backends.sglang.runner import (  # noqa: E402
    SGLangLabelWordHead,
    SGLangMaskedLM,
    ragged_sequences,
)
from harness.measure import radix  # noqa: E402
from harness.tasks.objective import Objective  # noqa: E402
from harness.tasks.prompt import label_word_ids  # noqa: E402
from harness.zo.mezo import MeZO  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOGIT_TOLERANCE = 1e-6   # fp32 CPU; measured max error ~2e-8


@pytest.fixture(scope="module")
def hf_model(build_micro_model, micro_tokenizer):
    return build_micro_model(micro_tokenizer, seed=0)


@pytest.fixture(scope="module")
def served(hf_model, micro_tokenizer):
    return SGLangMaskedLM.build(hf_model, dtype="float32", mask_token_id=micro_tokenizer.mask_token_id,
                                max_total_tokens=4096, max_requests=64)


@pytest.fixture
def fresh(served, hf_model):
    """The served model reset to the HF model's weights (tests change them in place)."""
    served.load_state_dict(dict(hf_model.named_parameters()))
    return served


def sglang_objective(model, tokenizer):
    return Objective(SGLangLabelWordHead(model, label_word_ids(tokenizer, (" terrible", " great"))))


def test_torchvision_imports_through_the_cpu_shim():
    import torchvision  # noqa: F401  -- fails with "torchvision::nms does not exist" without the shim


def test_parameters_have_hugging_face_names_shapes_and_values(fresh, hf_model):
    names = [name for name, _ in hf_model.named_parameters()]
    assert [name for name, _ in fresh.named_parameters()] == names
    for (_, view), (_, original) in zip(fresh.named_parameters(), hf_model.named_parameters()):
        assert view.shape == original.shape and torch.equal(view, original)


def test_label_word_logits_match_hugging_face(micro_batch, mlm_objective, fresh, hf_model, micro_tokenizer):
    _, batch = micro_batch(micro_tokenizer, n=16)
    assert batch.padded_tokens > batch.real_tokens   # the HF side is padded, SGLang's ragged
    expected = mlm_objective(micro_tokenizer, hf_model).logits(batch)
    got = sglang_objective(fresh, micro_tokenizer).logits(batch)
    assert got.shape == expected.shape == (16, 2)
    assert (got - expected).abs().max() < LOGIT_TOLERANCE


def test_full_vocabulary_logits_match_robertaformaskedlm(micro_batch, fresh, hf_model, micro_tokenizer):
    _, batch = micro_batch(micro_tokenizer, n=4)
    fresh.set_output_tokens(None)
    got = fresh.label_word_logits(batch)
    with torch.no_grad():
        full = hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = full[torch.arange(4), batch.mask_positions]
    assert got.shape == (4, len(micro_tokenizer))
    assert (got - expected).abs().max() < LOGIT_TOLERANCE


def test_mezo_draws_the_same_z_for_each_canonical_parameter(build_micro_model, fresh, micro_tokenizer):
    hf = build_micro_model(micro_tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in hf.named_parameters()}
    MeZO(list(hf.named_parameters()), lr=0, eps=1, weight_decay=0).perturb(seed=1234, scale=1.0)
    MeZO(list(fresh.named_parameters()), lr=0, eps=1, weight_decay=0).perturb(seed=1234, scale=1.0)
    for (name, view), (_, moved) in zip(fresh.named_parameters(), hf.named_parameters()):
        assert torch.equal(view - before[name], moved.detach() - before[name]), name


def test_projected_gradients_match_hugging_face_over_steps(micro_batch, mlm_objective, build_micro_model, fresh, micro_tokenizer):
    hf = build_micro_model(micro_tokenizer, seed=0)
    _, batch = micro_batch(micro_tokenizer, n=16)
    runs = {}
    for backend, objective, model in [("hf", mlm_objective(micro_tokenizer, hf), hf),
                                      ("sglang", sglang_objective(fresh, micro_tokenizer), fresh)]:
        engine = MeZO(list(model.named_parameters()), lr=1e-2, eps=1e-3, weight_decay=0.0)
        runs[backend] = [engine.step(lambda: float(objective.loss(batch)), seed=step).projected_grad
                         for step in range(8)]
    assert runs["sglang"] == pytest.approx(runs["hf"], rel=1e-3, abs=1e-4)
    assert any(abs(g) > 1e-2 for g in runs["hf"])   # the steps did move the model
    # The weights may differ by what the arithmetic allows: each step adds -lr * g * z, so projected
    # gradients that differ by |dg| (float rounding in each backend's kernels; ~3e-5 on another CPU model)
    # move a weight apart by lr * |dg| * |z| per step. Plus the rounding of the in-place passes: 4
    # roundings a step (+eps z, -2 eps z, the fused restore-and-update's two), 32 over 8 steps, each at
    # most half an ulp of the weight: 32 * 2**-24 * |w| on each side, at least 1e-6.
    replay = MeZO(list(hf.named_parameters()), lr=0.0, eps=1e-3, weight_decay=0.0)
    allowed = [(32 * 2.0**-23 * param.detach().abs()).clamp_min(1e-6) for param in hf.parameters()]
    for step, (g_hf, g_sglang) in enumerate(zip(runs["hf"], runs["sglang"])):
        for bound, (_, z) in zip(allowed, replay.noise(seed=step)):
            bound.add_(z.abs(), alpha=1e-2 * abs(g_sglang - g_hf))
    for (name, view), (_, param), bound in zip(fresh.named_parameters(), hf.named_parameters(), allowed):
        assert bool(((view - param.detach()).abs() <= bound).all()), name


def test_simulated_radix_hits_pinned():
    # two sequences sharing a 2-token prefix: +eps pass hits 2 (the second on the first), the
    # -eps pass hits all 8; 10 of 16 step tokens
    result = radix.simulated_hits([[[0, 5, 6, 2], [0, 5, 7, 2]]], [[0, 5, 6, 2], [0, 5, 7, 2], [0, 9, 2]])
    assert result["prefix_hit_rate"] == pytest.approx(10 / 16)
    assert result["minus_pass_hit_rate"] == 1.0
    assert result["across_examples_hit_rate"] == pytest.approx(3 / 11)


def test_no_key_or_value_survives_a_perturbation_but_all_do_without_one(micro_batch, fresh, micro_tokenizer):
    _, batch = micro_batch(micro_tokenizer, n=8)
    sequences = [ragged_sequences(batch)]
    perturbed = radix.valid_reuse(fresh, sequences, MeZO(list(fresh.named_parameters()), lr=0, eps=1e-3,
                                                          weight_decay=0), seeds=[7])
    unperturbed = radix.valid_reuse(fresh, sequences, MeZO(list(fresh.named_parameters()), lr=0, eps=0.0,
                                                            weight_decay=0), seeds=[7])
    assert perturbed["token_reuse_rate"] == 0.0 and perturbed["tokens"] == batch.real_tokens
    assert unperturbed["token_reuse_rate"] == 1.0


def test_sglang_prefix_cache_on_this_model_fails_on_the_minus_pass(micro_batch, fresh, micro_tokenizer):
    _, batch = micro_batch(micro_tokenizer, n=8)
    fresh.set_output_tokens(label_word_ids(micro_tokenizer, (" terrible", " great")))
    engine = MeZO(list(fresh.named_parameters()), lr=0, eps=1e-3, weight_decay=0)
    result = radix.prefix_cache_on_vs_off(fresh, [batch, batch], engine, seeds=[1, 2])
    assert result["off"]["steps_per_second"] > 0
    on = result["on"]
    assert on["error"] == "AssertionError" and on["raised_at"] == "sglang/srt/models/roberta.py:94"
    # the +eps pass ran (nothing cached yet); the -eps pass matched all but each last token, then failed
    assert on["passes_completed"] == 1
    assert on["prefix_hit_tokens"] == batch.real_tokens - 8
    assert "memory_saved_fraction" not in result
    # the runner still works after the failure
    assert fresh.label_word_logits(batch).shape == (8, 2)


@pytest.fixture(scope="module")
def six_steps(short_protocol):
    """The smoke profile cut to 6 steps, locked as its own file."""
    return short_protocol(6, 3)


@pytest.mark.slow
def test_sglang_run_end_to_end_matches_the_pinned_hf_trajectory(six_steps, sst2_dir, tmp_path):
    child = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--protocol", str(six_steps),
                            "--profile", "smoke", "--variant", "sglang-mlm", "--seed", "13",
                            "--data-dir", str(sst2_dir), "--out", str(tmp_path), "--no-progress"],
                           capture_output=True, text=True, cwd=REPO, env={**os.environ}, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    [path] = sorted(tmp_path.rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["variant"]["backend"] == "sglang" and record["model"]["backend"]["name"] == "sglang"
    # the hf-mlm smoke run's pinned first losses (tests/recipes/test_run.py): same data, weights, z
    assert record["loss_curve"]["loss_plus"][:3] == pytest.approx([0.7060897, 0.7050856, 0.7049613], rel=1e-5)
    radix_result = record["radix"]
    assert radix_result["token_reuse_rate"] == 0.0
    assert 0.5 < radix_result["prefix_hit_rate"] < 0.55
    assert radix_result["prefix_cache"]["on"]["error"] == "AssertionError"
    assert set(record["memory"]["phases"]) == {"inference", "mezo_step"}
    assert record["throughput"]["padding_fraction"] == 0.0   # ragged batches
    assert record["environment"]["packages"]["sglang"] == "0.5.23"
    # its weights rebuild on Hugging Face from the trajectory (same parameter names, same z)
    rebuilt = subprocess.run([sys.executable, "-m", "harness.cli", "reconstruct", str(path), "--step", "final",
                              "--out", str(tmp_path / "rebuilt"), "--data-dir", str(sst2_dir)],
                             capture_output=True, text=True, cwd=REPO, env={**os.environ}, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (tmp_path / "rebuilt" / "model.safetensors").is_file()


def test_the_backend_refuses_a_bert_model_with_the_reason(micro_tokenizer):
    """Only RoBERTa's parity with Hugging Face is established; a BERT model is refused before SGLang
    builds anything (issue 23)."""
    import dataclasses

    from harness.backends.sglang.backend import SGLangBackend
    from harness.core.errors import HarnessError
    from harness.protocol.loading import load_protocol
    from harness.protocol.variants import get_variant

    settings = dataclasses.replace(load_protocol(REPO / "benchmarks" / "sst2" / "protocol.toml").run_settings(
        "smoke", "sglang-mlm"), model="random-init:bert-tiny")
    with pytest.raises(HarnessError, match=r"serves RoBERTa only .* is bert: its parity is not established"):
        SGLangBackend().build_model(get_variant("sglang-mlm"), settings, micro_tokenizer, 2, torch.device("cpu"), 13)
