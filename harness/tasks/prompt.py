"""Prompt encoding and label words, as LM-BFF's `tokenize_multipart_input` (prompt mode) does it.

Each template part (harness.tasks.template) is tokenized on its own, without special tokens:
a special-token part is that token (`"<s>"`, `"</s>"`, `"<mask>"` name LM-BFF's cls, sep and mask
slots: the tokenizer's `cls_token`, `sep_token`, `mask_token`, so one template serves RoBERTa's BPE
and BERT's WordPiece, as LM-BFF's `*cls*` is `tokenizer.cls_token_id` for every model; another
special token of the tokenizer stands for itself), a sentence part is the edited sentence, encoded, then cut
to `first_sent_limit` tokens (sentence 0) or `other_sent_limit` (the others) when set; a
one-character text part is looked up as a token (`convert_tokens_to_ids`), longer text is
encoded. The parts are concatenated and the tail cut at `max_length`. Like LM-BFF (which asserts
there), an example whose `<mask>` the cut removes is an error, raised when the examples are
encoded, before any training. Masked-LM variants have one "<mask>"; classification-head
variants none. Label words must each be one token of the tokenizer; otherwise the run fails
with an error naming the word and its pieces.
"""

from __future__ import annotations

from harness.core.errors import HarnessError
from harness.tasks.batching import EncodedExample
from harness.tasks.spec import Example
from harness.tasks.template import MASK_SLOT, SentencePart, parse_template

# The template's names of LM-BFF's slots -> the tokenizer attribute holding that token
SLOT_TOKENS = {"<s>": "cls_token", "</s>": "sep_token", MASK_SLOT: "mask_token"}


def slot_token(tokenizer, part: str) -> str | None:
    """The tokenizer's token for a template slot ("<s>" -> "[CLS]" for BERT), or None for other parts."""
    attribute = SLOT_TOKENS.get(part)
    return getattr(tokenizer, attribute, None) if attribute else None


def label_word_ids(tokenizer, label_words: tuple[str, ...]) -> list[int]:
    ids = []
    for word in label_words:
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if len(pieces) != 1:
            raise HarnessError(
                f"label word {word!r} must be a single token, but the tokenizer splits it into "
                f"{len(pieces)}: {tokenizer.convert_ids_to_tokens(pieces)}")
        ids.append(pieces[0])
    return ids


class PromptEncoder:
    def __init__(self, tokenizer, template: tuple[str, ...], max_length: int,
                 first_sent_limit: int | None = None, other_sent_limit: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.limits = (first_sent_limit, other_sent_limit)
        special = set(tokenizer.all_special_tokens)
        self.parts: list[list[int] | SentencePart] = []
        for part in parse_template(template):
            if isinstance(part, SentencePart):
                self.parts.append(part)
            elif slot_token(tokenizer, part) in special:
                self.parts.append([tokenizer.convert_tokens_to_ids(slot_token(tokenizer, part))])
            elif part in special:
                self.parts.append([tokenizer.convert_tokens_to_ids(part)])
            elif part.startswith("<") and part.endswith(">") and " " not in part:
                raise HarnessError(f"template part {part!r} looks like a special token but this "
                                   f"tokenizer has none of that name; its special tokens: {sorted(special)}")
            elif len(part) == 1:   # LM-BFF looks a single character up as a token
                self.parts.append([tokenizer.convert_tokens_to_ids(part)])
            else:
                self.parts.append(tokenizer.encode(part, add_special_tokens=False))
        if MASK_SLOT in template and tokenizer.mask_token is None:
            raise HarnessError(f"the template has {MASK_SLOT!r} but this tokenizer has no mask token")
        self._mask_index = template.index(MASK_SLOT) if MASK_SLOT in template else None
        template_length = sum(len(p) for p in self.parts if not isinstance(p, SentencePart))
        if max_length - template_length < 1:
            raise HarnessError(f"max_length={max_length} leaves no room for the sentence: the "
                               f"template alone takes {template_length} tokens")

    def _sentence_ids(self, part: SentencePart, example: Example) -> list[int]:
        text = example.sentence if part.index == 0 else example.sentence2
        if text is None:
            raise HarnessError(f"the template uses sentence {part.index}, but the example has one sentence")
        ids = self.tokenizer.encode(part.edit(text), add_special_tokens=False)
        limit = self.limits[0] if part.index == 0 else self.limits[1]
        return ids if limit is None else ids[:limit]

    def encode(self, example: Example) -> EncodedExample:
        """Templates without <mask> (classification-head variants) report position 0."""
        ids: list[int] = []
        mask_position = 0
        for index, part in enumerate(self.parts):
            if index == self._mask_index:
                mask_position = len(ids)
            ids.extend(self._sentence_ids(part, example) if isinstance(part, SentencePart) else part)
        if self._mask_index is not None and mask_position >= self.max_length:
            raise HarnessError(f"the example {example.sentence[:60]!r}... is {len(ids)} tokens, and cutting it to "
                               f"max_length={self.max_length} cuts its {MASK_SLOT} (token {mask_position}); "
                               "LM-BFF stops there too. Set first_sent_limit (or a larger max_length)")
        return EncodedExample(input_ids=tuple(ids[: self.max_length]), mask_position=mask_position,
                              label=example.label)

    def encode_all(self, examples: list[Example]) -> list[EncodedExample]:
        return [self.encode(example) for example in examples]
