"""Prompt templates, parsed (no tokenizer, no torch: the protocol layer validates with this).

A template is a list of parts, each one part of an LM-BFF template string
(`tokenize_multipart_input` in LM-BFF's and MeZO's `src/dataset.py`, whose `*`-separated parts
map one to one onto ours):

| ours | LM-BFF | what it becomes |
|---|---|---|
| `"<s>"`, `"</s>"`, `"<mask>"` | `cls`, `sep+`, `mask` | that special token of the tokenizer |
| `"{sent_0}"` (or `"{sentence}"`) | `sent_0` | sentence 0, encoded as is |
| `"{+sent_0}"` | `+sent_0` | a space, then the sentence |
| `"{sent-_0}"` | `sent-_0` | the sentence without its last character |
| `"{sentl_1}"`, `"{+sentl_1}"`, `"{sentl-_1}"` | the same | first character lower-cased (+ space / - last character) |
| `"{sentu_1}"`, `"{+sentu_1}"`, `"{+sentu-_1}"` | the same | first character upper-cased |
| any other text, e.g. `" It was"` | `_It_was` (`_` is a space) | the text: one character is looked up as a token, longer text is encoded |

Sentence 0 is the first sentence (SST-2's sentence, RTE's sentence1, MNLI/SNLI's premise),
sentence 1 the second. "{sentence}" is kept as the name of sentence 0 that sst2-mezo's
locked templates use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.core.errors import HarnessError

SENTENCE_SLOT = "{sentence}"    # sentence 0, as sst2-mezo's templates name it
MASK_SLOT = "<mask>"            # the masked-LM part whose logits give the label words'
# LM-BFF's sentence forms (no others exist there: `+sent-_0`, say, would be taken as text).
SENTENCE_FORMS = ("sent", "+sent", "sent-", "sentl", "+sentl", "sentl-", "sentu", "+sentu", "+sentu-")
_SENTENCE_PART = re.compile(r"^\{([^{}]*)_(\d+)\}$")


@dataclass(frozen=True)
class SentencePart:
    """A template part that is one of the example's sentences, edited as LM-BFF's form says."""

    index: int          # 0: the first sentence, 1: the second
    form: str           # one of SENTENCE_FORMS

    def edit(self, text: str) -> str:
        if "l" in self.form:
            text = text[:1].lower() + text[1:]
        elif "u" in self.form:
            text = text[:1].upper() + text[1:]
        if self.form.endswith("-"):
            text = text[:-1]
        return " " + text if self.form.startswith("+") else text


def parse_part(part: str) -> str | SentencePart:
    """A sentence part as a SentencePart; any other part (special token or text) as is."""
    if part == SENTENCE_SLOT:
        return SentencePart(0, "sent")
    match = _SENTENCE_PART.match(part)
    if match is None:
        if part.startswith("{") and part.endswith("}"):
            raise HarnessError(f"template part {part!r} is not a sentence part: write {{FORM_I}} with FORM one of "
                               f"{', '.join(SENTENCE_FORMS)} (LM-BFF's forms) and I the sentence index, or {SENTENCE_SLOT!r}")
        return part
    form, index = match.groups()
    if form not in SENTENCE_FORMS:
        raise HarnessError(f"template part {part!r}: {form!r} is not one of LM-BFF's sentence forms "
                           f"({', '.join(SENTENCE_FORMS)})")
    return SentencePart(int(index), form)


def parse_template(template: tuple[str, ...]) -> list[str | SentencePart]:
    return [parse_part(part) for part in template]


def sentence_indices(template: tuple[str, ...]) -> list[int]:
    """The sentence index of every sentence part, in template order."""
    return [part.index for part in parse_template(template) if isinstance(part, SentencePart)]


def from_lm_bff(template: str, special_tokens: dict[str, str]) -> tuple[str, ...]:
    """An LM-BFF template string (`*cls**sent_0*_It_was*mask*.*sep+*`) as our parts, its special
    parts named by `special_tokens` (RoBERTa: cls -> "<s>", sep+ -> "</s>", mask -> "<mask>")."""
    parts = []
    for part in template.split("*"):
        if not part:
            continue   # LM-BFF encodes an empty part as no tokens
        if part in special_tokens:
            parts.append(special_tokens[part])
        elif any(part.startswith(form + "_") and part[len(form) + 1:].isdigit() for form in SENTENCE_FORMS):
            parts.append("{" + part + "}")
        else:
            parts.append(part.replace("_", " "))
    return tuple(parts)
