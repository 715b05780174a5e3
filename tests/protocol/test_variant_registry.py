"""The variant registry: variants built by keyword, their fields checked against the literal
choices and against what their backend can serve."""

import pytest

from harness.protocol.variants import VARIANTS, Variant

FIELDS = dict(name="x", backend="hf", head="mlm", loss="ce", parameters="full", optimizer="mezo",
              description="d", label="l")


def test_the_registered_variants_are_valid_and_named_by_their_key():
    assert all(name == variant.name for name, variant in VARIANTS.items())
    assert {variant.backend for variant in VARIANTS.values()} == {"hf", "sglang"}


def test_variants_take_keywords_only():
    with pytest.raises(TypeError):
        Variant("x", "hf", "mlm", "ce", "full", "mezo", "d", "l")


@pytest.mark.parametrize("field, value, message", [
    ("head", "seq2seq", r"head must be one of \('mlm', 'cls'\), got 'seq2seq'"),
    ("loss", "mse", r"loss must be one of \('ce', 'neg-accuracy'\)"),
    ("parameters", "adapters", r"parameters must be one of"),
    ("optimizer", "sgd", r"optimizer must be one of \('mezo', 'mezo-adam', 'adamw', 'none'\)"),
    ("backend", "vllm", r"backend must be one of \('hf', 'sglang'\), got 'vllm'"),
    ("label", "", r"description and label must be non-empty"),
])
def test_a_bad_field_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        Variant(**{**FIELDS, field: value})


def test_a_backend_refuses_what_it_cannot_serve():
    with pytest.raises(ValueError, match=r"the SGLang backend serves heads \('mlm',\) with parameter sets \('full',\)"):
        Variant(**{**FIELDS, "backend": "sglang", "parameters": "lora"})


def test_training_nothing_is_both_fields_and_a_probe_needs_label_words():
    with pytest.raises(ValueError, match=r'parameters "none" and optimizer "none" go together'):
        Variant(**{**FIELDS, "parameters": "none"})
    with pytest.raises(ValueError, match=r'parameters "none" and optimizer "none" go together'):
        Variant(**{**FIELDS, "optimizer": "none"})
    with pytest.raises(ValueError, match=r'linear_probe fits the label words\' decoder rows, so it needs head "mlm"'):
        Variant(**{**FIELDS, "head": "cls", "linear_probe": True})


def test_every_table18_method_has_a_variant():
    labels = {variant.label: name for name, variant in VARIANTS.items()}
    for method in ("zero-shot", "LP", "MeZO", "MeZO (prefix)", "MeZO-Adam", "FT (Adam)", "FT (LoRA)", "FT (prefix)",
                   "LP-then-MeZO"):
        assert method in labels, method
    assert VARIANTS["hf-lp"].linear_probe and VARIANTS["hf-lp-mezo"].linear_probe
    assert (VARIANTS["hf-lp"].optimizer, VARIANTS["hf-zero-shot"].optimizer) == ("none", "none")
