"""Prompt templates and label words.

A template is a list of parts, each tokenized on its own as LM-BFF does: "{sentence}" is
the input (encoded without a leading space), a part equal to one of the tokenizer's special
tokens ("<s>", "</s>", "<mask>") is that token, any other part is text. Masked-LM variants
have one "<mask>"; classification-head variants none.
Truncation shortens the sentence only, never the template (LM-BFF cuts the tail of the token
list, which can cut the mask). Label words must each be one token of the tokenizer; otherwise
the run fails with an error naming the word and its pieces.
"""

from __future__ import annotations

from harness.core.errors import HarnessError
from harness.tasks.batching import EncodedExample
from harness.tasks.spec import MASK_SLOT, SENTENCE_SLOT, Example


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
    def __init__(self, tokenizer, template: tuple[str, ...], max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        special = set(tokenizer.all_special_tokens)
        self.parts: list[list[int] | None] = []   # None marks the sentence slot
        for part in template:
            if part == SENTENCE_SLOT:
                self.parts.append(None)
            elif part in special:
                self.parts.append([tokenizer.convert_tokens_to_ids(part)])
            elif part.startswith("<") and part.endswith(">") and " " not in part:
                raise HarnessError(f"template part {part!r} looks like a special token but this "
                                   f"tokenizer has none of that name; its special tokens: {sorted(special)}")
            else:
                self.parts.append(tokenizer.encode(part, add_special_tokens=False))
        if MASK_SLOT in template and tokenizer.mask_token != MASK_SLOT:
            raise HarnessError(f"the template's {MASK_SLOT!r} is not this tokenizer's mask token "
                               f"({tokenizer.mask_token!r})")
        # Templates without <mask> (classification-head variants) report position 0.
        self._mask_index = template.index(MASK_SLOT) if MASK_SLOT in template else None
        self.template_length = sum(len(p) for p in self.parts if p is not None)
        self.sentence_budget = max_length - self.template_length
        if self.sentence_budget < 1:
            raise HarnessError(f"max_length={max_length} leaves no room for the sentence: the "
                               f"template alone takes {self.template_length} tokens")

    def encode(self, example: Example) -> EncodedExample:
        sentence = self.tokenizer.encode(example.sentence, add_special_tokens=False)[: self.sentence_budget]
        ids: list[int] = []
        mask_position = 0
        for index, part in enumerate(self.parts):
            if index == self._mask_index:
                mask_position = len(ids)
            ids.extend(sentence if part is None else part)
        return EncodedExample(input_ids=tuple(ids), mask_position=mask_position, label=example.label)

    def encode_all(self, examples: list[Example]) -> list[EncodedExample]:
        return [self.encode(example) for example in examples]
