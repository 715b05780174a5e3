"""Prompts of the six tasks exactly as LM-BFF / MeZO build them (issue 14).

The reference below is the prompt branch of `tokenize_multipart_input` from MeZO's
`medium_models/src/dataset.py` (github.com/princeton-nlp/MeZO at 552cb1b7, the same as LM-BFF's
`src/dataset.py`; MIT licence), copied line for line except for what prompt mode never reaches
(demonstrations' label parts, BERT segment ids, padding, the warning). Our encoder must give the
same token ids and mask position on real examples of every task, with the templates and limits of
MeZO's `medium_models/run_fewshot.sh`, and every shipped protocol must hold those templates.
"""

from pathlib import Path

import pytest

from harness.backends.tokenizers import load_tokenizer
from harness.core.errors import HarnessError
from harness.protocol.loading import load_protocol
from harness.tasks.data import load_task_data, make_k_shot_split
from harness.tasks.prompt import PromptEncoder
from harness.tasks.spec import Example
from harness.tasks.template import from_lm_bff

REPO = Path(__file__).resolve().parents[2]
ROBERTA_SPECIAL = {"cls": "<s>", "sep+": "</s>", "mask": "<mask>"}

# medium_models/run_fewshot.sh: TEMPLATE, MAPPING and TASK_EXTRA per task. Every call passes
# `--max_seq_length 128` and then TASK_EXTRA; `--max_seq_len 256` sets max_seq_length to 256
# (argparse takes a unique prefix of an option, and run.py has no other `max_seq_len*` option).
RUN_FEWSHOT = {
    "sst2": ("*cls**sent_0*_It_was*mask*.*sep+*", ("terrible", "great"), 128, None, None),
    "sst5": ("*cls**sent_0*_It_was*mask*.*sep+*", ("terrible", "bad", "okay", "good", "great"), 128, 110, 20),
    "trec": ("*cls**mask*:*+sent_0**sep+*",
             ("Description", "Entity", "Expression", "Human", "Location", "Number"), 128, 110, None),
    "rte": ("*cls**sent-_0*?*mask*,*+sentl_1**sep+*", ("Yes", "No"), 256, 240, None),
    "mnli": ("*cls**sent-_0*?*mask*,*+sentl_1**sep+*", ("No", "Yes", "Maybe"), 256, 240, None),
    "snli": ("*cls**sent-_0*?*mask*,*+sentl_1**sep+*", ("No", "Yes", "Maybe"), 256, None, None),
}


def reference_tokenize(input_text_list, max_length, tokenizer, template, first_sent_limit=None,
                       other_sent_limit=None):
    """LM-BFF's tokenize_multipart_input, prompt=True, truncate_head=False: (input_ids, mask_pos)."""
    def enc(text):
        return tokenizer.encode(text, add_special_tokens=False)

    input_ids = []
    special_token_mapping = {
        'bos': tokenizer.bos_token_id, 'cls': tokenizer.cls_token_id, 'eos': tokenizer.eos_token_id,
        'mask': tokenizer.mask_token_id, 'sep': tokenizer.sep_token_id, 'sep+': tokenizer.sep_token_id,
    }
    template_list = template.split('*')
    for part_id, part in enumerate(template_list):
        new_tokens = []
        if part in special_token_mapping:
            new_tokens.append(special_token_mapping[part])
        elif part[:5] == 'sent_':
            sent_id = int(part.split('_')[1])
            new_tokens += enc(input_text_list[sent_id])
        elif part[:6] == '+sent_':
            sent_id = int(part.split('_')[1])
            new_tokens += enc(' ' + input_text_list[sent_id])
        elif part[:6] == 'sent-_':
            sent_id = int(part.split('_')[1])
            new_tokens += enc(input_text_list[sent_id][:-1])
        elif part[:6] == 'sentl_':
            sent_id = int(part.split('_')[1])
            text = input_text_list[sent_id]
            text = text[:1].lower() + text[1:]
            new_tokens += enc(text)
        elif part[:7] == '+sentl_':
            sent_id = int(part.split('_')[1])
            text = input_text_list[sent_id]
            text = text[:1].lower() + text[1:]
            new_tokens += enc(' ' + text)
        else:
            part = part.replace('_', ' ')
            if len(part) == 1:
                new_tokens.append(tokenizer.convert_tokens_to_ids(part))
            else:
                new_tokens += enc(part)

        if part[:4] == 'sent' or part[1:5] == 'sent':
            sent_id = int(part.split('_')[1])
            if sent_id == 0:
                if first_sent_limit is not None:
                    new_tokens = new_tokens[:first_sent_limit]
            else:
                if other_sent_limit is not None:
                    new_tokens = new_tokens[:other_sent_limit]
        input_ids += new_tokens

    if len(input_ids) > max_length:
        input_ids = input_ids[:max_length]
    assert tokenizer.mask_token_id in input_ids, \
        "Mask token not found for input: {} {}".format(input_text_list, input_ids)
    mask_pos = [input_ids.index(tokenizer.mask_token_id)]
    assert mask_pos[0] < max_length
    return input_ids, mask_pos[0]


@pytest.fixture(scope="module")
def task_prompt(shared_data):
    """task -> (tokenizer, split k=16 seed 13): a trained-bpe tokenizer with the label words added."""
    cache = {}

    def get(task):
        if task not in cache:
            data = load_task_data(task, shared_data(task))
            words = tuple(" " + word for word in RUN_FEWSHOT[task][1])
            tokenizer = load_tokenizer("trained-bpe:4096+label-words", data.train_sentences(), words).tokenizer
            cache[task] = tokenizer, make_k_shot_split(data, 16, 13)
        return cache[task]
    return get


@pytest.mark.parametrize("task", sorted(RUN_FEWSHOT))
def test_shipped_protocols_hold_mezo_templates_and_limits(task):
    template, words, max_length, first, other = RUN_FEWSHOT[task]
    protocol = load_protocol(REPO / "benchmarks" / task / "protocol.toml")
    for profile, variant in protocol.settings:
        settings = protocol.run_settings(profile, variant)
        if "<mask>" not in settings.template:
            continue   # classification-head variants have no prompt
        assert settings.template == from_lm_bff(template, ROBERTA_SPECIAL) or (
            task == "sst2" and settings.template == ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>"))
        assert settings.label_words == tuple(" " + word for word in words)
        assert (settings.max_length, settings.first_sent_limit, settings.other_sent_limit) == (max_length, first, other)


@pytest.mark.parametrize("task", sorted(RUN_FEWSHOT))
def test_encoder_equals_lm_bff_on_real_examples(task, task_prompt):
    template, _, max_length, first, other = RUN_FEWSHOT[task]
    tokenizer, split = task_prompt(task)
    tokenizer.model_type = "roberta"   # MeZO's run.py sets it; the reference reads it
    encoder = PromptEncoder(tokenizer, from_lm_bff(template, ROBERTA_SPECIAL), max_length, first, other)
    examples = split.examples("train") + split.examples("dev") + split.examples("test")[:200]
    for example in examples:
        texts = [example.sentence] if example.sentence2 is None else [example.sentence, example.sentence2]
        ids, mask = reference_tokenize(texts, max_length, tokenizer, template, first, other)
        ours = encoder.encode(example)
        assert (list(ours.input_ids), ours.mask_position) == (ids, mask), example


# Pinned prompts of real examples (k=16, seed 13, the first training example of each task): the
# decoded prompt, the mask position and the length in tokens of the trained-bpe:4096+label-words
# tokenizer. The pair tasks show `sent-_0` (the premise's final "." dropped) and `+sentl_1`.
PINNED = {
    "sst5": ("<s>what 's surprising about this traditional thriller , moderately successful but not completely "
             "satisfying , is exactly how genteel and unsurprising the execution turns out to be . It was<mask>.</s>",
             41, 44),
    "trec": ("<s><mask>: What 2th-century American poet wrote a four-volume biography of Abraham Lincoln ?</s>", 1, 25),
    "rte": ("<s>Reagan was seriously wounded by a bullet fired by John Hinckley Jr. in an attempted assassination, "
            "but made a remarkably speedy recovery?<mask>, reagan survived an attempted assassin's bullets.</s>", 37, 53),
    "mnli": ("<s>Price caps may sound more attractive with every passing rate case?<mask>, rate cases make price "
             "caps sound more attractive.</s>", 17, 31),
    "snli": ("<s>The girl sitting by a rock is wearing a black coat, black hat, black gloves but is covered by a pink "
             "blanket?<mask>, a girl wears black</s>", 26, 33),
}


@pytest.mark.parametrize("task", sorted(PINNED))
def test_pinned_prompts_of_real_examples(task, task_prompt):
    template, _, max_length, first, other = RUN_FEWSHOT[task]
    tokenizer, split = task_prompt(task)
    encoded = PromptEncoder(tokenizer, from_lm_bff(template, ROBERTA_SPECIAL), max_length, first, other).encode(
        split.examples("train")[0])
    assert (tokenizer.decode(encoded.input_ids), encoded.mask_position, len(encoded.input_ids)) == PINNED[task]
    assert encoded.input_ids[encoded.mask_position] == tokenizer.mask_token_id


# Real training examples (index into the task's training lines) whose premise is over 240 tokens
# of the trained tokenizer: cut at first_sent_limit, and where the hypothesis then does not fit,
# the tail cut at max_length=256 (the hypothesis' end and </s> lost, as in LM-BFF).
LONG_PREMISES = [("rte", 478, False), ("rte", 394, True), ("mnli", 49, True)]


@pytest.mark.parametrize("task, index, tail_cut", LONG_PREMISES)
def test_real_examples_at_the_limits(task, index, tail_cut, task_prompt, shared_data):
    from harness.tasks.data import _parse_line

    template, _, max_length, first, other = RUN_FEWSHOT[task]
    tokenizer, _ = task_prompt(task)
    data = load_task_data(task, shared_data(task))
    example = _parse_line(data.train_lines[index], data.task)
    premise = tokenizer.encode(example.sentence[:-1], add_special_tokens=False)
    assert len(premise) > first
    encoded = PromptEncoder(tokenizer, from_lm_bff(template, ROBERTA_SPECIAL), max_length, first, other).encode(example)
    texts = [example.sentence, example.sentence2]
    assert (list(encoded.input_ids), encoded.mask_position) == reference_tokenize(texts, max_length, tokenizer, template,
                                                                                  first, other)
    assert list(encoded.input_ids[1:1 + first]) == premise[:first]
    assert encoded.mask_position == 1 + first + 1
    assert (len(encoded.input_ids) == max_length) is tail_cut
    assert (encoded.input_ids[-1] != tokenizer.sep_token_id) is tail_cut


def test_sentence_pair_edits(micro_tokenizer):
    tok = micro_tokenizer
    template = ("<s>", "{sent-_0}", "?", "<mask>", ",", "{+sentl_1}", "</s>")
    encoded = PromptEncoder(tok, template, 64).encode(Example("a great movie.", 1, "The plot was great"))
    expected = ([tok.bos_token_id] + tok.encode("a great movie", add_special_tokens=False)
                + [tok.convert_tokens_to_ids("?"), tok.mask_token_id, tok.convert_tokens_to_ids(",")]
                + tok.encode(" the plot was great", add_special_tokens=False) + [tok.eos_token_id])
    assert list(encoded.input_ids) == expected
    assert encoded.mask_position == expected.index(tok.mask_token_id)


def test_limits_cut_each_sentence_then_max_length_cuts_the_tail(micro_tokenizer):
    tok = micro_tokenizer
    template = ("<s>", "{sent-_0}", "?", "<mask>", ",", "{+sentl_1}", "</s>")
    premise, hypothesis = "great " * 30 + "x", "The plot was great " * 10
    premise_ids = tok.encode(premise[:-1], add_special_tokens=False)
    hypothesis_ids = tok.encode(" the plot was great " + "The plot was great " * 9, add_special_tokens=False)
    assert len(premise_ids) > 20 and len(hypothesis_ids) > 8
    encoded = PromptEncoder(tok, template, 30, first_sent_limit=20, other_sent_limit=8).encode(
        Example(premise, 0, hypothesis))
    full = [tok.bos_token_id] + premise_ids[:20] + [tok.convert_tokens_to_ids("?"), tok.mask_token_id,
                                                    tok.convert_tokens_to_ids(",")] + hypothesis_ids[:8] + [tok.eos_token_id]
    assert len(full) == 33
    assert list(encoded.input_ids) == full[:30]   # the tail (</s> and the hypothesis' end) is cut
    assert encoded.mask_position == 22


def test_a_cut_mask_is_an_error_naming_the_example(micro_tokenizer):
    template = ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")
    with pytest.raises(HarnessError, match=r"the example 'great great .*cuts its <mask> \(token \d+\).*first_sent_limit"):
        PromptEncoder(micro_tokenizer, template, 12).encode(Example("great " * 20, 1))
    encoded = PromptEncoder(micro_tokenizer, template, 12, first_sent_limit=5).encode(Example("great " * 20, 1))
    assert len(encoded.input_ids) <= 12


@pytest.mark.parametrize("part, message", [
    ("{sent+_0}", "not one of LM-BFF's sentence forms"),
    ("{sentence_x}", "is not a sentence part"),
])
def test_bad_sentence_parts(part, message, micro_tokenizer):
    with pytest.raises(HarnessError, match=message):
        PromptEncoder(micro_tokenizer, ("<s>", part, "<mask>", "</s>"), 32)
