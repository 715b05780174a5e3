"""Prefix tuning as the MeZO reference runs it (`medium_models/src/prefix.py`, flags
`--prefix_tuning --num_prefix 5 --no_reparam --prefix_init_by_real_act`).

Every layer's self-attention gets `num_prefix` extra keys and values, parameters of shape
[num_prefix, hidden] with no reparameterisation MLP. Every token attends to them (the attention
mask gains `num_prefix` always-visible columns); they have no query and no position. They are
initialised from real activations: `num_prefix` random vocabulary tokens (drawn from the run
seed) go through the encoder once, and each layer's prefix keys and values are that layer's key
and value projections of them (the reference reads the same numbers from the model's
`past_key_values`, [heads, tokens, head size] reshaped to [tokens, hidden]). The reference then
freezes every parameter without "prefix" in its name, the LM head included; so does
`apply_prefix`.

The reference passes the prefix as `past_key_value` to `RobertaAttention` and concatenates it in
its own bundled `modeling_roberta.py` (so its behaviour does not depend on the installed
transformers); here the self-attention module's class is swapped for a subclass
(PrefixRobertaSelfAttention, PrefixBertSelfAttention: one per model family, named by the family's
`prefix_attention`, harness.backends.families) whose forward concatenates them (prefix first, as
there), with the module's own attention implementation (eager or SDPA). Parameter names stay the
model's, plus `<layer>.attention.self.prefix_keys` / `.prefix_values`. The reference's PrefixTuning
supports RoBERTa and OPT only (NotImplementedError otherwise); prefixes in BERT's self-attention are
this project's extension by the same rule.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert import modeling_bert
from transformers.models.roberta import modeling_roberta

from harness.backends.families import family_of


def _self_attention_modules(model) -> list[nn.Module]:
    return [layer.attention.self for layer in family_of(model).encoder_of(model).encoder.layer]


class _PrefixSelfAttention:
    """A family's self-attention with `num_prefix` prefix keys and values in front of the tokens' own
    (mixed into a subclass of it). The subclasses are module level classes, so a model with prefixes
    pickles (CPU memory is measured in a child process that unpickles the model)."""

    eager_attention_forward = None   # the family's eager attention (a staticmethod in each subclass)
    num_prefix: int
    prefix_keys: nn.Parameter      # [num_prefix, hidden]
    prefix_values: nn.Parameter    # [num_prefix, hidden]

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values=None, **kwargs):
        if past_key_values is not None:
            raise ValueError("prefix attention runs without a key/value cache (an encoder has none)")
        batch, length = hidden_states.shape[:2]
        per_head = (batch, length, -1, self.attention_head_size)
        query = self.query(hidden_states).view(per_head).transpose(1, 2)
        key = self.key(hidden_states).view(per_head).transpose(1, 2)
        value = self.value(hidden_states).view(per_head).transpose(1, 2)
        key = torch.cat([self._per_head(self.prefix_keys, batch), key], dim=2)
        value = torch.cat([self._per_head(self.prefix_values, batch), value], dim=2)
        if attention_mask is not None:   # every token sees the prefix: 0 (additive mask) or True (boolean)
            visible = torch.ones if attention_mask.dtype == torch.bool else torch.zeros
            prefix_columns = visible((*attention_mask.shape[:-1], self.num_prefix), dtype=attention_mask.dtype,
                                     device=attention_mask.device)
            attention_mask = torch.cat([prefix_columns, attention_mask], dim=-1)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                          type(self).eager_attention_forward)
        output, weights = attention(self, query, key, value, attention_mask,
                                    dropout=0.0 if not self.training else self.dropout.p,
                                    scaling=self.scaling, **kwargs)
        return output.reshape(batch, length, -1).contiguous(), weights

    def _per_head(self, prefix: torch.Tensor, batch: int) -> torch.Tensor:
        """[num_prefix, hidden] -> [batch, heads, num_prefix, head size]."""
        heads = prefix.view(self.num_prefix, -1, self.attention_head_size).transpose(0, 1)
        return heads.unsqueeze(0).expand(batch, *heads.shape)


class PrefixRobertaSelfAttention(_PrefixSelfAttention, modeling_roberta.RobertaSelfAttention):
    eager_attention_forward = staticmethod(modeling_roberta.eager_attention_forward)


class PrefixBertSelfAttention(_PrefixSelfAttention, modeling_bert.BertSelfAttention):
    eager_attention_forward = staticmethod(modeling_bert.eager_attention_forward)


@torch.no_grad()
def real_activation_prefixes(model, num_prefix: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer, each [num_prefix, hidden]: the layer's key and value
    projections of `num_prefix` random vocabulary tokens run through the encoder alone."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (1, num_prefix), generator=generator)
    captured: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    for index, attention in enumerate(_self_attention_modules(model)):
        for name in ("key", "value"):
            def keep(module, inputs, output, index=index, name=name):
                captured.setdefault(index, {})[name] = output[0].detach().clone()
            hooks.append(getattr(attention, name).register_forward_hook(keep))
    try:
        family_of(model).encoder_of(model)(input_ids=tokens.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return [(captured[index]["key"], captured[index]["value"]) for index in range(len(captured))]


def apply_prefix(model, *, num_prefix: int, seed: int) -> dict:
    """Add trainable prefix keys and values to every layer of a masked LM (RoBERTa, BERT) in place,
    initialised from real activations, and freeze every other parameter. Returns the record's `model.prefix`."""
    if num_prefix < 1:
        raise ValueError(f"num_prefix must be >= 1, got {num_prefix}")
    was_training = model.training
    model.eval()
    initial = real_activation_prefixes(model, num_prefix, seed)
    model.train(was_training)
    family = family_of(model)
    expected, prefixed = family.self_attention_class(), family.prefix_attention_class()
    for attention, (keys, values) in zip(_self_attention_modules(model), initial, strict=True):
        if type(attention) is not expected:
            raise ValueError(f"prefix tuning expects {expected.__name__} modules, found {type(attention).__name__}")
        attention.__class__ = prefixed
        attention.num_prefix = num_prefix
        attention.prefix_keys = nn.Parameter(keys)
        attention.prefix_values = nn.Parameter(values)
    for name, param in model.named_parameters():
        param.requires_grad_("prefix" in name)   # the reference's freezing rule
    return {"tokens": num_prefix, "layers": len(initial), "init_seed": seed,
            "initialised_from": f"key and value projections of {num_prefix} random vocabulary tokens "
                                "(one encoder pass)"}
