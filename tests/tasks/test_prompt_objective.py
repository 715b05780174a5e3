"""Prompt encoding, label words, batching, and the label-word objective."""

import pytest
import torch

from harness.backends.hf import MaskedLMLabelWordHead
from harness.core.errors import HarnessError
from harness.tasks.batching import EpochSampler, collate, eval_batches
from harness.tasks.objective import Objective
from harness.tasks.prompt import PromptEncoder, label_word_ids
from harness.tasks.spec import Example


def test_template_is_lm_bff_layout(prompt_template, micro_tokenizer):
    tok = micro_tokenizer
    encoded = PromptEncoder(tok, prompt_template, 128).encode(Example("a great movie", 1))
    expected = ([tok.bos_token_id] + tok.encode("a great movie", add_special_tokens=False)
                + tok.encode(" It was", add_special_tokens=False) + [tok.mask_token_id]
                + tok.encode(".", add_special_tokens=False) + [tok.eos_token_id])
    assert list(encoded.input_ids) == expected
    assert encoded.input_ids[encoded.mask_position] == tok.mask_token_id
    assert encoded.label == 1


def test_template_longer_than_max_length(prompt_template, micro_tokenizer):
    with pytest.raises(HarnessError, match="leaves no room for the sentence"):
        PromptEncoder(micro_tokenizer, prompt_template, max_length=4)


def test_unknown_special_token_in_template(micro_tokenizer):
    with pytest.raises(HarnessError, match="template part '<cls>' looks like a special token"):
        PromptEncoder(micro_tokenizer, ("<cls>", "{sentence}", "<mask>", "</s>"), 32)


def test_label_words_must_be_single_tokens(micro_tokenizer):
    assert len(label_word_ids(micro_tokenizer, (" terrible", " great"))) == 2
    with pytest.raises(HarnessError, match=r"label word ' wonderful' must be a single token, but the tokenizer splits it into \d+: \["):
        label_word_ids(micro_tokenizer, (" terrible", " wonderful"))


def test_label_word_logits_equal_full_masked_lm_logits(prompt_template, micro_tokenizer, micro_model):
    encoder = PromptEncoder(micro_tokenizer, prompt_template, 64)
    examples = [Example(s, i % 2) for i, s in enumerate(["a great movie", "the acting was terrible and dull", "great fun"])]
    batch = collate(encoder.encode_all(examples), micro_tokenizer.pad_token_id, torch.device("cpu"))
    label_ids = label_word_ids(micro_tokenizer, (" terrible", " great"))
    ours = MaskedLMLabelWordHead(micro_model, label_ids)(batch)
    with torch.no_grad():
        full = micro_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    reference = full[torch.arange(3), batch.mask_positions][:, label_ids]
    assert ours.shape == (3, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def encoded_examples(tokenizer, template, n):
    encoder = PromptEncoder(tokenizer, template, 64)
    return encoder.encode_all([Example("great " * (1 + i % 5), i % 2) for i in range(n)])


def test_eval_batches_cover_every_example_once(prompt_template, micro_tokenizer):
    examples = encoded_examples(micro_tokenizer, prompt_template, 10)
    batches = eval_batches(examples, 4, micro_tokenizer.pad_token_id, torch.device("cpu"))
    assert [b.labels.numel() for b in batches] == [4, 4, 2]
    assert sum(b.real_tokens for b in batches) == sum(len(e.input_ids) for e in examples)


def test_sampler_uses_the_whole_set_when_it_fits_in_a_batch(prompt_template, micro_tokenizer):
    sampler = EpochSampler(encoded_examples(micro_tokenizer, prompt_template, 6), 64, 13, micro_tokenizer.pad_token_id, torch.device("cpu"))
    assert sampler.next() is sampler.next()
    assert sampler.next().labels.numel() == 6


def test_sampler_epochs_visit_each_example_once(prompt_template, micro_tokenizer):
    encoder = PromptEncoder(micro_tokenizer, prompt_template, 64)
    # Every example has its own length, so a batch row's token count identifies the example.
    examples = encoder.encode_all([Example("great " * n, n % 2) for n in range(1, 11)])
    lengths = sorted(len(e.input_ids) for e in examples)
    assert len(set(lengths)) == 10

    def epoch(sampler):
        batches = [sampler.next() for _ in range(3)]
        assert [b.labels.numel() for b in batches] == [4, 4, 2]
        return [int(n) for b in batches for n in b.attention_mask.sum(dim=1)]

    sampler = EpochSampler(examples, 4, 13, micro_tokenizer.pad_token_id, torch.device("cpu"))
    first, second = epoch(sampler), epoch(sampler)
    assert sorted(first) == sorted(second) == lengths
    assert first != second   # reshuffled each epoch
    same_seed = EpochSampler(examples, 4, 13, micro_tokenizer.pad_token_id, torch.device("cpu"))
    assert epoch(same_seed) == first


def test_split_by_length_pads_each_bucket_to_its_own_longest_row(micro_tokenizer, micro_model):
    from harness.tasks.batching import split_by_length

    sentences = ["great", "a terrible movie", "it was terrible and dull", "great film",
                 "the film is a great ride", "a terrible mess of a script", "terrible", "the plot was great"]
    encoder = PromptEncoder(micro_tokenizer, ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>"), 64)
    encoded = encoder.encode_all([Example(s, int("great" in s)) for s in sentences])
    batch = collate(encoded, micro_tokenizer.pad_token_id, torch.device("cpu"))
    lengths = sorted(len(e.input_ids) for e in encoded)

    one = split_by_length(batch, 1)
    assert len(one) == 1 and one[0].padded_tokens == batch.padded_tokens
    buckets = split_by_length(batch, 3)
    assert sum(b.labels.numel() for b in buckets) == len(sentences)
    assert sum(b.real_tokens for b in buckets) == batch.real_tokens
    assert [b.input_ids.shape[1] for b in buckets] == sorted({b.input_ids.shape[1] for b in buckets})
    # optimal for 3 buckets over these lengths (exhaustive check)
    best = min(sum((j - i) * lengths[j - 1] for i, j in zip((0, a, b), (a, b, len(lengths))))
               for a in range(1, len(lengths) - 1) for b in range(a + 1, len(lengths)))
    assert sum(b.padded_tokens for b in buckets) == best < batch.padded_tokens

    objective = Objective(MaskedLMLabelWordHead(micro_model, label_word_ids(micro_tokenizer, (" terrible", " great"))))
    with torch.no_grad():
        assert float(objective.loss_over(buckets)) == pytest.approx(float(objective.loss(batch)), abs=1e-6)
    with pytest.raises(ValueError, match="buckets"):
        split_by_length(batch, 0)
