"""Offline model and tokenizer stand-ins, and the hub/local loading paths' errors."""

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from conftest import MICRO_CORPUS
from harness.errors import HarnessError
from harness.model_configs import RANDOM_INIT_CONFIGS
from harness.modeling import load_model, load_tokenizer

CPU = torch.device("cpu")


@pytest.mark.parametrize("name, count", [("roberta-base", 124_697_433), ("roberta-large", 355_412_057)])
def test_random_init_configs_are_the_published_architectures(name, count):
    """RobertaForMaskedLM parameter counts of the hub's roberta-base / roberta-large."""
    with torch.device("meta"):
        model = RobertaForMaskedLM(RobertaConfig(**RANDOM_INIT_CONFIGS[name]))
    assert model.num_parameters() == count


def test_trained_bpe_is_deterministic_and_has_roberta_special_ids():
    first = load_tokenizer("trained-bpe:300", MICRO_CORPUS)
    second = load_tokenizer("trained-bpe:300", MICRO_CORPUS)
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


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path):
    big = load_tokenizer("trained-bpe:300", MICRO_CORPUS).tokenizer
    small_model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32))
    small_model.save_pretrained(tmp_path / "small")
    with pytest.raises(HarnessError, match=r"tokenizer has \d+ tokens but model .* only 100 embeddings"):
        load_model(str(tmp_path / "small"), big, init_seed=0, dtype="float32", device=CPU)
