"""Variants and their measurements: liveness, LoRA, the accuracy objective, memory, and
every variant of the smoke profile running end to end."""

import importlib.util
import json

import pytest
import torch

from harness.backends.hf import (
    SequenceClassifierHead,
    apply_lora,
    as_sequence_classifier,
    load_model,
)
from harness.cli import main
from harness.core.errors import HarnessError
from harness.measure.liveness import check_liveness, group_name
from harness.measure.memory import measure_memory
from harness.measure.sparsity import summarize_projected_grads
from harness.protocol.loading import load_protocol
from harness.protocol.variants import VARIANTS, ZEROTH_ORDER
from harness.recipes.train import train_mezo
from harness.tasks.batching import EpochSampler, eval_batches

CPU = torch.device("cpu")


def lora_model(model):
    return apply_lora(model, r=4, alpha=8, targets=("query", "value"), seed=0)


def trainable(model):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def test_lora_groups_pair_a_with_b():
    assert group_name("roberta.encoder.layer.0.attention.self.query.lora_A.default.weight") == \
        "roberta.encoder.layer.0.attention.self.query"
    assert group_name("roberta.encoder.layer.0.attention.self.query.lora_B.default.weight") == \
        "roberta.encoder.layer.0.attention.self.query"
    assert group_name("lm_head.dense.bias") == "lm_head.dense"


def test_liveness_accepts_live_lora_and_rejects_merged_lora(micro_batch, mlm_objective, build_micro_model, micro_tokenizer):
    model = lora_model(build_micro_model(micro_tokenizer))
    objective = mlm_objective(micro_tokenizer, model)
    _, batch = micro_batch(micro_tokenizer)
    named = trainable(model)
    assert named and all("lora_" in name for name, _ in named)

    report = check_liveness(lambda: objective.logits(batch), named, eps=1e-3)
    assert report.dead == [] and len(report.live) == 2     # query and value of the one layer
    assert report.parameters_to_perturb(named, include_dead=False, variant="hf-mlm-lora") == named

    # Merge the adapters into the base weights, as loralib does in eval mode in the reference
    # code: the forward then bypasses A and B, so perturbing them cannot change the loss.
    from peft.tuners.lora import LoraLayer
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    merged = check_liveness(lambda: objective.logits(batch), named, eps=1e-3)
    assert merged.live == [] and len(merged.dead) == 2
    with pytest.raises(HarnessError, match=r"variant 'hf-mlm-lora': no trainable parameter group can change the "
                                           r"loss; dead groups: roberta.encoder.layer.0.attention.self.query, "):
        merged.parameters_to_perturb(named, include_dead=False, variant="hf-mlm-lora")


def test_an_unused_pooler_is_dead_and_not_perturbed_unless_asked(micro_batch, mlm_objective, micro_tokenizer, micro_model):
    from transformers.models.roberta.modeling_roberta import RobertaPooler

    micro_model.roberta.pooler = RobertaPooler(micro_model.config)   # as in the reference's model class
    objective = mlm_objective(micro_tokenizer, micro_model)
    _, batch = micro_batch(micro_tokenizer)
    named = list(micro_model.named_parameters())
    report = check_liveness(lambda: objective.logits(batch), named, eps=1e-3)
    assert report.dead == ["roberta.pooler.dense"]
    kept = report.parameters_to_perturb(named, include_dead=False, variant="hf-mlm")
    assert {n for n, _ in named} - {n for n, _ in kept} == {"roberta.pooler.dense.weight", "roberta.pooler.dense.bias"}
    assert report.parameters_to_perturb(named, include_dead=True, variant="hf-mlm") == named


def test_liveness_restores_parameters_bit_for_bit(micro_batch, mlm_objective, micro_tokenizer, micro_model):
    before = {n: p.clone() for n, p in micro_model.named_parameters()}
    objective = mlm_objective(micro_tokenizer, micro_model)
    _, batch = micro_batch(micro_tokenizer)
    check_liveness(lambda: objective.logits(batch), list(micro_model.named_parameters()), eps=1e-3)
    assert all(torch.equal(p, before[n]) for n, p in micro_model.named_parameters())


def run_micro_mezo(objective, named, tokenizer, encoded, steps=60, lr=1e-3):
    sampler = EpochSampler(encoded, 64, 13, tokenizer.pad_token_id, CPU)
    dev = eval_batches(encoded, 16, tokenizer.pad_token_id, CPU)
    return train_mezo(objective=objective, trainable=named, sampler=sampler, dev_batches=dev, steps=steps, lr=lr,
                      eps=1e-3, weight_decay=0.0, lr_schedule="constant", eval_every=steps, seed=13, progress=False)


def test_lora_mezo_changes_only_adapter_weights(micro_batch, mlm_objective, build_micro_model, micro_tokenizer):
    model = lora_model(build_micro_model(micro_tokenizer))
    before = {n: p.clone() for n, p in model.named_parameters()}
    encoded, _ = micro_batch(micro_tokenizer)
    run_micro_mezo(mlm_objective(micro_tokenizer, model), trainable(model), micro_tokenizer, encoded, steps=20, lr=0.5)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_B" in name for name in changed)


def test_accuracy_objective_gives_zero_gradients_cross_entropy_none(micro_batch, mlm_objective, build_micro_model, micro_tokenizer):
    """Pinned on the micro model: -accuracy is flat except where a prediction flips."""
    encoded, _ = micro_batch(micro_tokenizer)
    fractions = {}
    for loss in ("neg-accuracy", "ce"):
        model = build_micro_model(micro_tokenizer)
        result = run_micro_mezo(mlm_objective(micro_tokenizer, model, loss), list(model.named_parameters()),
                                micro_tokenizer, encoded)
        fractions[loss] = summarize_projected_grads(result.projected_grads, 1e-6)["zero_fraction"]
    assert fractions == {"neg-accuracy": pytest.approx(58 / 60), "ce": 0.0}


def test_sparsity_summary_pinned():
    summary = summarize_projected_grads([0.0, 0.0, 1e-9, -2.0, 4.0], threshold=1e-6)
    assert summary["zero_fraction"] == 0.4 and summary["tiny_fraction"] == 0.6
    assert summary["mean_abs"] == pytest.approx(6.000000001 / 5)
    assert summary["abs_quantiles"]["p50"] == 1e-9 and summary["abs_quantiles"]["p100"] == 4.0


def test_classifier_shares_the_encoder_and_has_a_seeded_head(micro_batch, micro_tokenizer, micro_model):
    a = as_sequence_classifier(micro_model, 2, head_seed=0)
    b = as_sequence_classifier(micro_model, 2, head_seed=0)
    c = as_sequence_classifier(micro_model, 2, head_seed=1)
    for name, tensor in micro_model.roberta.state_dict().items():
        assert torch.equal(a.roberta.state_dict()[name], tensor)
    assert torch.equal(a.classifier.out_proj.weight, b.classifier.out_proj.weight)
    assert not torch.equal(a.classifier.out_proj.weight, c.classifier.out_proj.weight)
    _, batch = micro_batch(micro_tokenizer, template=("<s>", "{sentence}", "</s>"))
    assert SequenceClassifierHead(a)(batch).shape == (16, 2)


def test_memory_orders_inference_mezo_first_order(micro_batch, mlm_objective, micro_tokenizer):
    """Excess over the pre-phase baseline, each phase in its own child process (CPU)."""
    model = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU).model
    objective = mlm_objective(micro_tokenizer, model)
    _, batch = micro_batch(micro_tokenizer, n=32)
    memory = measure_memory(objective, list(model.named_parameters()), batch, lr=1e-3, eps=1e-3,
                            weight_decay=0.0, dropout=False)
    excess = {phase: values["excess_bytes"] for phase, values in memory["phases"].items()}
    assert excess["inference"] > 0
    # RSS peaks move by a few hundred KiB between identical runs, so "MeZO costs what inference
    # costs" is checked against the first-order overhead instead of as a strict ordering
    first_order_overhead = excess["first_order_step"] - excess["inference"]
    assert abs(excess["mezo_step"] - excess["inference"]) < 0.25 * first_order_overhead
    # backprop keeps activations, gradients and two AdamW moments: far above a MeZO step
    assert excess["first_order_step"] > 2 * excess["mezo_step"]
    assert memory["ratios"]["first_order_over_mezo"] > 1


@pytest.fixture(scope="module")
def six_steps(short_protocol):
    """The smoke profile cut to 6 steps, locked as its own file."""
    return short_protocol(6, 3)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(name for name, v in VARIANTS.items() if v.backend == "hf"))
def test_every_variant_runs_in_the_smoke_profile(variant, six_steps, sst2_dir, tmp_path):
    assert main(["run", "--protocol", str(six_steps), "--profile", "smoke", "--variant", variant,
                 "--seed", "13", "--data-dir", str(sst2_dir), "--out", str(tmp_path), "--no-progress",
                 "--no-memory"]) == 0
    [path] = tmp_path.rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["variant"]["name"] == variant
    assert record["memory"] == {"error": "not measured (--no-memory)"}
    optimizer = VARIANTS[variant].optimizer
    if optimizer == "none":   # one evaluation of the model as it is, no training
        assert record["metrics"]["dev_history"] == [{"step": 0, "dev_accuracy": record["metrics"]["best_dev_accuracy"]}]
        assert record["sparsity"] is None and record["throughput"] is None
        return
    assert len(record["metrics"]["dev_history"]) == 2
    if optimizer in ZEROTH_ORDER:
        assert record["sparsity"]["steps"] == 6 and record["throughput"]["forward_passes"] == 12
    else:
        assert record["sparsity"] is None and record["throughput"]["forward_passes"] == 6
    if variant.endswith("-acc"):
        assert record["sparsity"]["zero_fraction"] > 0.5
    if optimizer == "mezo" and not VARIANTS[variant].linear_probe and VARIANTS[variant].parameters != "prefix":
        check_reconstruct(path, record, six_steps, sst2_dir, tmp_path)
    elif optimizer == "mezo":   # the trajectory alone does not rebuild a probed head or a prefix model
        assert main(["reconstruct", str(path), "--out", str(tmp_path / "rebuilt"), "--data-dir", str(sst2_dir)]) == 2


def check_reconstruct(path, record, protocol_path, sst2_dir, tmp_path):
    """The tested checkpoint rebuilt from the trajectory loads as a plain model (LoRA merged, no key
    missing) and, where nothing was merged, gives the record's test accuracy exactly."""
    from transformers import (
        AutoTokenizer,
        RobertaForMaskedLM,
        RobertaForSequenceClassification,
    )

    from harness.backends.hf import MaskedLMLabelWordHead, SequenceClassifierHead
    from harness.tasks.data import load_task_data, make_k_shot_split
    from harness.tasks.objective import Objective
    from harness.tasks.prompt import PromptEncoder, label_word_ids

    variant = VARIANTS[record["variant"]["name"]]
    out = tmp_path / "rebuilt"
    assert main(["reconstruct", str(path), "--step", "best", "--out", str(out), "--data-dir", str(sst2_dir)]) == 0
    model_class = RobertaForSequenceClassification if variant.head == "cls" else RobertaForMaskedLM
    model, loading = model_class.from_pretrained(out, output_loading_info=True)
    assert not loading["missing_keys"] and not [name for name in model.state_dict() if "lora" in name]
    if variant.parameters in ("lora", "lora+lm-head"):
        return   # merged adapters compute the same function up to float rounding
    tokenizer, settings = AutoTokenizer.from_pretrained(out), load_protocol(protocol_path).run_settings("smoke", variant.name)
    split = make_k_shot_split(load_task_data("sst2", sst2_dir), 16, 13)
    test = PromptEncoder(tokenizer, settings.template, settings.max_length).encode_all(split.examples("test"))
    head = (SequenceClassifierHead(model.eval()) if variant.head == "cls"
            else MaskedLMLabelWordHead(model.eval(), label_word_ids(tokenizer, settings.label_words)))
    accuracy = Objective(head).accuracy(eval_batches(test, settings.eval_batch_size, tokenizer.pad_token_id, CPU))
    assert accuracy == record["metrics"]["test_accuracy"]


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="checks the error without SGLang")
def test_the_sglang_variant_without_sglang_names_the_extra(six_steps, sst2_dir, tmp_path, capsys):
    code = main(["run", "--protocol", str(six_steps), "--profile", "smoke", "--variant", "sglang-mlm",
                 "--seed", "13", "--data-dir", str(sst2_dir), "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "variant 'sglang-mlm' needs sglang: pip install 'mezo-bench[sglang]'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))
