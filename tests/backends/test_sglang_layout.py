"""Unit: how Hugging Face parameter names map onto SGLang's fused layout (no SGLang needed)."""

import torch

from harness.backends.sglang.runner import sglang_parameter_view


def test_query_key_value_are_row_blocks_of_the_fused_projection():
    hidden, vocab = 4, 5
    fused_weight = torch.arange(3 * hidden * hidden, dtype=torch.float32).reshape(3 * hidden, hidden)
    fused_bias = torch.arange(3 * hidden, dtype=torch.float32)
    embeddings = torch.zeros(64, hidden)   # SGLang pads vocabulary rows to a multiple of 64
    sglang = {"roberta.encoder.layer.3.attention.self_attn.qkv_proj.weight": fused_weight,
              "roberta.encoder.layer.3.attention.self_attn.qkv_proj.bias": fused_bias,
              "roberta.embeddings.word_embeddings.weight": embeddings,
              "lm_head.bias": torch.zeros(vocab)}
    prefix = "roberta.encoder.layer.3.attention.self."
    key = sglang_parameter_view(sglang, prefix + "key.weight", vocab)
    assert torch.equal(key, fused_weight[4:8])
    assert torch.equal(sglang_parameter_view(sglang, prefix + "value.bias", vocab), torch.tensor([8.0, 9, 10, 11]))
    assert torch.equal(sglang_parameter_view(sglang, prefix + "query.bias", vocab), torch.tensor([0.0, 1, 2, 3]))
    key.add_(1000)   # a view: in-place updates land in SGLang's tensor
    assert fused_weight[4, 0] == 1016 and fused_weight[0, 0] == 0
    assert sglang_parameter_view(sglang, "roberta.embeddings.word_embeddings.weight", vocab).shape == (vocab, hidden)
    assert sglang_parameter_view(sglang, "lm_head.bias", vocab) is sglang["lm_head.bias"]
