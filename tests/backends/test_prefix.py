"""Prefix tuning (harness.backends.prefix) against a hand-written attention over the prefix and
the tokens, its initialisation from real activations, the reference's freezing rule, and that a
model with prefixes pickles (CPU memory is measured in a child process); RoBERTa and BERT alike."""

import math
import pickle

import pytest
import torch

from harness.backends.families import MODEL_FAMILIES
from harness.backends.prefix import PrefixBertSelfAttention, PrefixRobertaSelfAttention, apply_prefix, real_activation_prefixes
from harness.measure.liveness import check_liveness

HIDDEN, HEADS, PREFIX = 32, 4, 3
FAMILIES = pytest.mark.parametrize("family", ["roberta", "bert"])
PREFIX_CLASS = {"roberta": PrefixRobertaSelfAttention, "bert": PrefixBertSelfAttention}


def tiny_model(attention: str, family: str = "roberta"):
    spec = MODEL_FAMILIES[family]
    torch.manual_seed(0)
    config = spec.cls("config")(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                                intermediate_size=64, max_position_embeddings=40, attn_implementation=attention)
    return spec.cls("masked_lm")(config).eval()


def encoder(model):
    return MODEL_FAMILIES[model.config.model_type].encoder_of(model)


def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (2, 7), generator=generator)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def by_hand(attention, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q [prefix keys; keys]^T / sqrt(d) + mask) [prefix values; values], per head."""
    batch_size, length = token_mask.shape
    size = HIDDEN // HEADS

    def heads(x):
        return x.view(batch_size, x.shape[1], HEADS, size).transpose(1, 2)

    keys = torch.cat([attention.prefix_keys.expand(batch_size, -1, -1), attention.key(hidden)], dim=1)
    values = torch.cat([attention.prefix_values.expand(batch_size, -1, -1), attention.value(hidden)], dim=1)
    scores = heads(attention.query(hidden)) @ heads(keys).transpose(-1, -2) / math.sqrt(size)
    visible = torch.cat([torch.ones(batch_size, PREFIX), token_mask.float()], dim=1)
    scores = scores + (1 - visible)[:, None, None, :] * torch.finfo(scores.dtype).min
    return (scores.softmax(-1) @ heads(values)).transpose(1, 2).reshape(batch_size, length, HIDDEN)


@FAMILIES
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_prefix_attention_equals_attention_over_prefix_and_tokens(attention, family):
    from transformers.masking_utils import create_bidirectional_mask

    model = tiny_model(attention, family)
    ids, mask = batch()
    before = encoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    apply_prefix(model, num_prefix=PREFIX, seed=13)
    layer = encoder(model).encoder.layer[0].attention.self
    assert type(layer) is PREFIX_CLASS[family]
    with torch.no_grad():
        hidden = encoder(model).embeddings(input_ids=ids)
        mask_4d = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)
        # float32 attention computed two ways: rounding only
        torch.testing.assert_close(layer(hidden, mask_4d)[0], by_hand(layer, hidden, mask), atol=1e-6, rtol=1e-5)
        after = encoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(after, before)   # the prefix takes part


@FAMILIES
def test_prefix_starts_from_real_activations_of_random_tokens(family):
    model = tiny_model("eager", family)
    prefixes = real_activation_prefixes(model, PREFIX, seed=13)
    tokens = torch.randint(0, 100, (1, PREFIX), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        layer_input = encoder(model).embeddings(input_ids=tokens)[0]   # what layer 0 sees
        attention = encoder(model).encoder.layer[0].attention.self
        torch.testing.assert_close(prefixes[0][0], attention.key(layer_input), atol=0, rtol=0)
        torch.testing.assert_close(prefixes[0][1], attention.value(layer_input), atol=0, rtol=0)
    apply_prefix(model, num_prefix=PREFIX, seed=13)
    for index, layer in enumerate(encoder(model).encoder.layer):
        assert torch.equal(layer.attention.self.prefix_keys, prefixes[index][0])
        assert torch.equal(layer.attention.self.prefix_values, prefixes[index][1])
        assert layer.attention.self.prefix_keys.shape == (PREFIX, HIDDEN)


@FAMILIES
def test_only_the_prefix_trains_and_every_layer_is_live(family):
    model = tiny_model("sdpa", family)
    info = apply_prefix(model, num_prefix=PREFIX, seed=13)
    assert info["tokens"] == PREFIX and info["layers"] == 2 and info["init_seed"] == 13
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert [name for name, _ in trainable] == [f"{family}.encoder.layer.{i}.attention.self.prefix_{kind}"
                                              for i in range(2) for kind in ("keys", "values")]
    ids, mask = batch()
    report = check_liveness(lambda: model(input_ids=ids, attention_mask=mask).logits, trainable, eps=1e-3)
    assert report.dead == [] and len(report.live) == 2


@FAMILIES
def test_a_model_with_prefixes_pickles(family):
    model = tiny_model("sdpa", family)
    apply_prefix(model, num_prefix=PREFIX, seed=13)
    ids, mask = batch()
    copy = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        assert torch.equal(copy(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits)
