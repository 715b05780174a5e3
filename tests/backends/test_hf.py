"""Offline model and tokenizer stand-ins, and the hub/local loading paths' errors."""

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from harness.backends.hf import load_model
from harness.backends.model_specs import RANDOM_INIT_CONFIGS
from harness.backends.tokenizers import load_tokenizer
from harness.core.errors import HarnessError

CPU = torch.device("cpu")


@pytest.mark.parametrize("name, count", [("roberta-base", 124_697_433), ("roberta-large", 355_412_057)])
def test_random_init_configs_are_the_published_architectures(name, count):
    """RobertaForMaskedLM parameter counts of the hub's roberta-base / roberta-large."""
    with torch.device("meta"):
        model = RobertaForMaskedLM(RobertaConfig(**RANDOM_INIT_CONFIGS[name]))
    assert model.num_parameters() == count


def test_trained_bpe_is_deterministic_and_has_roberta_special_ids(micro_corpus):
    first = load_tokenizer("trained-bpe:300", micro_corpus)
    second = load_tokenizer("trained-bpe:300", micro_corpus)
    assert first.info["sha256"] == second.info["sha256"]
    tok = first.tokenizer
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token == "<mask>"


def test_random_init_is_seeded_and_leaves_the_global_rng_alone(micro_tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    assert torch.equal(torch.rand(1), expected_next)
    b = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    c = load_model("random-init:tiny", micro_tokenizer, init_seed=1, dtype="float32", device=CPU)
    weight = "roberta.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a.model.state_dict()[weight], b.model.state_dict()[weight])
    assert not torch.equal(a.model.state_dict()[weight], c.model.state_dict()[weight])
    assert a.model.config.vocab_size == len(micro_tokenizer)
    assert a.info["revision"] is None and a.info["init_seed"] == 0
    assert not a.model.training   # MeZO passes run without dropout


def test_local_checkpoint_round_trip_records_a_weights_hash(micro_tokenizer, tmp_path):
    built = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    built.model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(str(tmp_path / "ckpt"), micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    assert loaded.info["revision"].startswith("sha256:")
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name


def test_unloadable_model_and_tokenizer_give_clear_errors(micro_tokenizer, tmp_path):
    with pytest.raises(HarnessError, match="could not load model"):
        load_model(str(tmp_path / "missing"), micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    with pytest.raises(HarnessError, match="could not load tokenizer"):
        load_tokenizer(str(tmp_path / "missing"), [])


def test_tokenizer_larger_than_the_model_vocabulary(micro_corpus, tmp_path):
    big = load_tokenizer("trained-bpe:300", micro_corpus).tokenizer
    small_model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32))
    small_model.save_pretrained(tmp_path / "small")
    with pytest.raises(HarnessError, match=r"tokenizer has \d+ tokens but model .* only 100 embeddings"):
        load_model(str(tmp_path / "small"), big, init_seed=0, dtype="float32", device=CPU)


# --- the reference's parameter set: an untied LM decoder (issue 10) ---------------------------

def _decoder(model):
    return model.lm_head.decoder.weight


def test_untied_decoder_is_its_own_parameter_initialised_from_the_embeddings(micro_tokenizer):
    tied = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU)
    untied = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU,
                        lm_decoder="untied")
    embeddings = untied.model.roberta.embeddings.word_embeddings.weight
    assert _decoder(tied.model) is tied.model.roberta.embeddings.word_embeddings.weight
    assert _decoder(untied.model) is not embeddings and torch.equal(_decoder(untied.model), embeddings)
    # the reference's RobertaLMHead keeps one bias: decoder.bias is the head's bias parameter
    assert untied.model.lm_head.decoder.bias is untied.model.lm_head.bias
    names = [name for name, _ in untied.model.named_parameters()]
    assert "lm_head.decoder.weight" in names and "lm_head.decoder.weight" not in dict(tied.model.named_parameters())
    assert "lm_head.decoder.bias" not in names            # shared, so listed (and perturbed) once
    assert untied.info["lm_decoder"] == {"tied": False, "initialised_from":
                                         "word embeddings (a random-init model has no decoder of its own)"}
    assert tied.info["lm_decoder"]["tied"] is True
    # the same function before training: identical label-word logits
    batch = torch.tensor([[0, 5, 6, 4, 2]])
    assert torch.equal(tied.model(batch).logits, untied.model(batch).logits)
    # and perturbing the untied decoder leaves the input embeddings alone
    with torch.no_grad():
        _decoder(untied.model).add_(1.0)
    assert torch.equal(embeddings, tied.model.roberta.embeddings.word_embeddings.weight)


def test_untied_decoder_comes_from_the_checkpoints_decoder_when_it_has_one(micro_tokenizer, tmp_path):
    source = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU,
                        lm_decoder="untied").model
    with torch.no_grad():
        _decoder(source).mul_(-3.0)             # a decoder that differs from the embeddings
    source.save_pretrained(tmp_path / "own-decoder")
    loaded = load_model(str(tmp_path / "own-decoder"), micro_tokenizer, init_seed=0, dtype="float32", device=CPU,
                        lm_decoder="untied")
    assert torch.equal(_decoder(loaded.model), _decoder(source))
    assert not torch.equal(_decoder(loaded.model), loaded.model.roberta.embeddings.word_embeddings.weight)
    assert loaded.info["lm_decoder"] == {"tied": False, "initialised_from": "checkpoint decoder weight"}
    assert loaded.model.lm_head.decoder.bias is loaded.model.lm_head.bias


def test_untied_decoder_falls_back_to_the_embeddings_never_random(micro_tokenizer, tmp_path):
    source = load_model("random-init:tiny", micro_tokenizer, init_seed=0, dtype="float32", device=CPU).model
    state = {name: tensor for name, tensor in source.state_dict().items() if name != "lm_head.decoder.weight"}
    source.save_pretrained(tmp_path / "no-decoder", state_dict=state)
    loaded = load_model(str(tmp_path / "no-decoder"), micro_tokenizer, init_seed=0, dtype="float32", device=CPU,
                        lm_decoder="untied")
    embeddings = loaded.model.roberta.embeddings.word_embeddings.weight
    assert torch.equal(embeddings, source.roberta.embeddings.word_embeddings.weight)
    assert torch.equal(_decoder(loaded.model), embeddings) and _decoder(loaded.model) is not embeddings
    assert loaded.info["lm_decoder"] == {"tied": False,
                                         "initialised_from": "word embeddings (the checkpoint has no decoder weight)"}


# --- new heads and adapters are drawn from the run seed (issue 10) ----------------------------

def _settings(variant_name, profile="smoke"):
    from pathlib import Path

    from harness.protocol.loading import load_protocol

    protocol = load_protocol(Path(__file__).resolve().parents[2] / "benchmarks" / "sst2" / "protocol.toml")
    return protocol.run_settings(profile, variant_name)


@pytest.mark.parametrize("variant_name, new_weight", [
    ("hf-cls", "classifier.out_proj.weight"),
    ("hf-mlm-lora", "roberta.encoder.layer.0.attention.self.query.lora_A.default.weight"),
])
def test_new_heads_and_adapters_follow_the_run_seed(micro_tokenizer, variant_name, new_weight):
    from harness.backends.hf import build_model_for_variant
    from harness.protocol.variants import get_variant

    variant, settings = get_variant(variant_name), _settings(variant_name)
    built = {seed: build_model_for_variant(variant, settings, micro_tokenizer, 2, CPU, seed) for seed in (13, 13, 42)}
    again = build_model_for_variant(variant, settings, micro_tokenizer, 2, CPU, 13)
    weights = {seed: dict(b.model.named_parameters())[new_weight] for seed, b in built.items()}
    assert torch.equal(weights[13], dict(again.model.named_parameters())[new_weight])
    assert not torch.equal(weights[13], weights[42])
    # the base model (the stand-in checkpoint) is the same for every seed
    base = "roberta.embeddings.word_embeddings.weight"
    assert torch.equal(dict(built[13].model.named_parameters())[base], dict(built[42].model.named_parameters())[base])


@pytest.mark.parametrize("variant_name, expected", [
    # the reference's MeZO (LoRA) with loralib 0.1.1: adapters and the whole LM head
    ("hf-mlm-lora-ref", {"lora_A", "lora_B", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
                         "lm_head.layer_norm.bias", "lm_head.decoder.weight", "lm_head.bias"}),
    # the same with loralib >= 0.1.2 (merged adapters): the LM head alone
    ("hf-mlm-lora-ref-merged", {"lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
                                "lm_head.layer_norm.bias", "lm_head.decoder.weight", "lm_head.bias"}),
])
def test_reference_lora_variants_train_the_reference_parameter_set(micro_tokenizer, variant_name, expected):
    from harness.backends.hf import build_model_for_variant
    from harness.protocol.variants import get_variant

    built = build_model_for_variant(get_variant(variant_name), _settings(variant_name), micro_tokenizer, 2, CPU, 13)
    trainable = [name for name, p in built.model.named_parameters() if p.requires_grad]
    kinds = {("lora_A" if ".lora_A." in n else "lora_B" if ".lora_B." in n else n) for n in trainable}
    assert kinds == expected
    assert built.info["lm_decoder"]["tied"] is False
