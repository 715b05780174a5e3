"""Tokenizers: hub ids and local paths (`AutoTokenizer.from_pretrained`), a pretrained stand-in's
(`pretrained:<name>`, its folder in the installed package: harness.backends.standins), or
`trained-bpe:<vocab size>`, an offline stand-in for RoBERTa's tokenizer: a byte-level BPE
trained on the task's training sentences, with RoBERTa's special tokens `<s> <pad> </s> <unk>`
(ids 0..3) and `<mask>` (deterministic: same text and size, same tokenizer).
`trained-bpe:<vocab size>+label-words` also adds each label word the BPE splits as one token
(after the trained vocabulary; listed in the record as `added_label_words`). The record's
`tokenizer` holds its id, the sha256 of its serialised form and its vocabulary size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from harness.backends.model_specs import TRAINED_BPE_PREFIX, parse_trained_bpe
from harness.backends.standins import is_standin, resolve_standin
from harness.core.errors import HarnessError

BPE_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]   # RoBERTa's ids 0..3, then <mask>


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenizer: object            # a transformers fast tokenizer
    info: dict                   # goes into the run record


def train_bpe_tokenizer(sentences: list[str], vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=BPE_SPECIAL_TOKENS, show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
        sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def load_tokenizer(spec: str, training_sentences: list[str], label_words: tuple[str, ...] = ()) -> LoadedTokenizer:
    if spec.startswith(TRAINED_BPE_PREFIX):
        size, add_label_words = parse_trained_bpe(spec)
        tokenizer = train_bpe_tokenizer(training_sentences, int(size))
        info = {"id": spec, "trained_on": "task training sentences"}
        if add_label_words:
            from tokenizers import AddedToken

            split = [word for word in label_words if len(tokenizer.encode(word, add_special_tokens=False)) != 1]
            tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=False) for word in split])
            info["added_label_words"] = split
    else:
        from transformers import AutoTokenizer

        source = str(resolve_standin(spec)[0]) if is_standin(spec) else spec
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as error:  # hub unreachable, bad path, bad files
            raise HarnessError(f"could not load tokenizer {spec!r} ({type(error).__name__}: {error}); "
                               f"offline, use a local path, 'pretrained:<name>' or 'trained-bpe:<vocab size>'") from None
        info = {"id": spec}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    info["sha256"] = hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else None
    info["vocab_size"] = len(tokenizer)
    return LoadedTokenizer(tokenizer=tokenizer, info=info)
