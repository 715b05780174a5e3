"""Masked-LM model families, as data: what differs between RoBERTa and BERT for every variant.

One record per family (a `MODEL_FAMILIES` entry), looked up from a checkpoint's `config.model_type`:
the transformers classes (named, imported lazily), where the encoder and the LM head sit, the
head's transform (dense -> activation -> LayerNorm: the LM head decoder's input at <mask>, which
the label-word head and linear probing read), its decoder and the decoder's own bias, the LoRA
targets, the self-attention class that prefix tuning extends and its prefix subclass.

Templates need nothing per family: they are written once, in LM-BFF's notation with RoBERTa's
token names (`"<s>"` is LM-BFF's `cls`, `"</s>"` its `sep+`, `"<mask>"` its `mask`), which the
prompt encoder resolves through the tokenizer's cls/sep/mask tokens (BERT: `[CLS]`, `[SEP]`,
`[MASK]`), as LM-BFF maps `*cls*` to `tokenizer.cls_token_id` whatever the model
(harness.tasks.prompt). Text parts and label words keep their leading space:
LM-BFF looks a label word up as `tokenizer.tokenize(' ' + word)` for every model, and BERT's
WordPiece (basic tokenizer: whitespace split, lower-casing in the uncased vocabularies) drops the
space, so `" great"` is `great` there, `Ġgreat` for RoBERTa's BPE. A label word must still be one
token of the family's vocabulary (harness.tasks.prompt.label_word_ids says which is not).

Adding a family: one entry here (and a random-init config in model_specs if tests need one);
nothing else tests a model's name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from harness.core.errors import HarnessError


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_types: tuple[str, ...]     # config.model_type values of the family
    masked_lm: str                   # transformers class names, imported lazily (`cls`)
    config: str
    sequence_classifier: str
    encoder: str                     # the masked LM's attribute holding the encoder ("roberta", "bert")
    head: str                        # the LM head's module path; its parameters start with this + "."
    head_dense: str                  # the head transform's modules, paths from the masked LM
    head_activation: str | None      # a module path, or None: torch.nn.functional.gelu (RoBERTa calls it)
    head_layer_norm: str
    decoder: str                     # the decoder (nn.Linear to the vocabulary)
    decoder_bias: str                # the head's output bias parameter (the decoder's bias is tied to it)
    self_attention: str              # "module:Class" of the self-attention that prefix tuning extends
    prefix_attention: str            # "module:Class" of its prefix-tuning subclass (harness.backends.prefix)
    lora_targets: tuple[str, ...] = ("query", "value")   # module names, as the reference's LoRA (q and v)

    def cls(self, which: str):
        """The transformers class named by field `which` ("masked_lm", "config", "sequence_classifier")."""
        import transformers

        return getattr(transformers, getattr(self, which))

    def self_attention_class(self):
        return _named_class(self.self_attention)

    def prefix_attention_class(self):
        return _named_class(self.prefix_attention)

    def encoder_of(self, model):
        return getattr(model, self.encoder)

    def module(self, model, path: str):
        """model.<path> (dotted)."""
        target = model
        for part in path.split("."):
            target = getattr(target, part)
        return target

    def head_features(self, model, hidden):
        """The head transform of hidden states: what the decoder reads."""
        import torch.nn.functional as F

        dense = self.module(model, self.head_dense)(hidden)
        activated = self.module(model, self.head_activation)(dense) if self.head_activation else F.gelu(dense)
        return self.module(model, self.head_layer_norm)(activated)

    def untie_decoder(self, model, decoder_weight) -> None:
        """Give the LM head its own decoder weight (the reference's RobertaForPromptFinetuning: "input
        embeddings and the output embeddings are NOT tied"); the decoder's bias stays the head's bias."""
        import torch

        decoder = self.module(model, self.decoder)
        decoder.weight = torch.nn.Parameter(decoder_weight.detach().clone())
        decoder.bias = self.module(model, self.decoder_bias)
        model.config.tie_word_embeddings = False   # nothing may tie it again


def _named_class(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


MODEL_FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (
        ModelFamily(
            name="roberta", model_types=("roberta",), masked_lm="RobertaForMaskedLM", config="RobertaConfig",
            sequence_classifier="RobertaForSequenceClassification", encoder="roberta", head="lm_head",
            head_dense="lm_head.dense", head_activation=None, head_layer_norm="lm_head.layer_norm",
            decoder="lm_head.decoder", decoder_bias="lm_head.bias",
            self_attention="transformers.models.roberta.modeling_roberta:RobertaSelfAttention",
            prefix_attention="harness.backends.prefix:PrefixRobertaSelfAttention"),
        ModelFamily(
            name="bert", model_types=("bert",), masked_lm="BertForMaskedLM", config="BertConfig",
            sequence_classifier="BertForSequenceClassification", encoder="bert", head="cls",
            head_dense="cls.predictions.transform.dense", head_activation="cls.predictions.transform.transform_act_fn",
            head_layer_norm="cls.predictions.transform.LayerNorm", decoder="cls.predictions.decoder",
            decoder_bias="cls.predictions.bias",
            self_attention="transformers.models.bert.modeling_bert:BertSelfAttention",
            prefix_attention="harness.backends.prefix:PrefixBertSelfAttention"),
    )
}


def family_of_model_type(model_type: str, what: str) -> ModelFamily:
    """The family of a `config.model_type`; `what` names the model for the error."""
    for family in MODEL_FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in MODEL_FAMILIES.values())
    raise HarnessError(f"model {what}: model type {model_type!r} is not a supported masked-LM family; "
                       f"supported: {known} (harness/backends/families.py)")


def family_of(model) -> ModelFamily:
    """The family of a built masked LM (or a classifier on its encoder)."""
    return family_of_model_type(model.config.model_type, type(model).__name__)
