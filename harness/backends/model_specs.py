"""Architectures for random-init models (no weights needed), by name.

roberta-base / roberta-large are the published configs of those checkpoints, so memory
and throughput measured on them are those of the real models; bert-tiny is BERT-Tiny's
(google/bert_uncased_L-2_H-128_A-2), the architecture of the pretrained stand-in. `tiny` is for
tests and CPU smoke runs; its vocabulary size is taken from the tokenizer. Each config's family
(harness.backends.families) is RANDOM_INIT_FAMILIES' entry, RoBERTa where there is none.
"""

_ROBERTA_COMMON = dict(
    vocab_size=50265,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

RANDOM_INIT_CONFIGS: dict[str, dict] = {
    "roberta-base": dict(
        _ROBERTA_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072,
    ),
    "roberta-large": dict(
        _ROBERTA_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096,
    ),
    "tiny": dict(
        _ROBERTA_COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, vocab_size=None,
    ),
    "bert-tiny": dict(
        vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
    ),
}
RANDOM_INIT_FAMILIES = {"bert-tiny": "bert"}

RANDOM_INIT_PREFIX = "random-init:"
TRAINED_BPE_PREFIX = "trained-bpe:"
# `trained-bpe:<size>+label-words`: the same BPE, plus each label word it would split as a token of
# its own (a word-level BPE of a few thousand merges learns " Maybe" or " Description" only if the
# task's text uses it often; RoBERTa's vocabulary has every label word of the paper's tasks).
LABEL_WORDS_SUFFIX = "+label-words"


def parse_trained_bpe(spec: str) -> tuple[str, bool]:
    """`trained-bpe:<size>[+label-words]` -> (the size as written, whether label words are added)."""
    body = spec[len(TRAINED_BPE_PREFIX):]
    if body.endswith(LABEL_WORDS_SUFFIX):
        return body[: -len(LABEL_WORDS_SUFFIX)], True
    return body, False
