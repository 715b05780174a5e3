"""RoBERTa masked-LM as an SGLang model class, built on SGLang's own encoder layers.

The encoder is SGLang's `XLMRobertaBaseModel` (fused QKV projection, RadixAttention in
ENCODER_ONLY mode, ragged batches); the LM head has Hugging Face's layout (dense -> GELU ->
LayerNorm -> decoder tied to the word embeddings, plus a bias), so the same checkpoint
loads into both backends. It returns logits at the <mask> of each request -- only for the
label words once `configure_output` names them -- as an `EmbeddingPoolerOutput`, which is
how SGLang passes an encoder's per-request results back (`--is-embedding`).

The class name is the Hugging Face architecture string it serves; `runner.register_model`
adds it to SGLang's model registry in-process (no fork of SGLang).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from sglang.srt.layers.pooler import EmbeddingPoolerOutput
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.models.roberta import XLMRobertaBaseModel
from torch import nn


class RobertaLMHead(nn.Module):
    """Hugging Face's RobertaLMHead parameters; the decoder weight is the word embeddings."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))


class RobertaForMaskedLM(nn.Module):
    def __init__(self, *, config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.config = config
        self.roberta = XLMRobertaBaseModel(config=config, quant_config=quant_config, prefix=prefix)
        self.lm_head = RobertaLMHead(config)
        self.mask_token_id: int | None = None
        self.output_token_ids: torch.Tensor | None = None   # None: the whole vocabulary

    def configure_output(self, mask_token_id: int, output_token_ids: list[int] | None) -> None:
        self.mask_token_id = mask_token_id
        self.output_token_ids = (None if output_token_ids is None else
                                 torch.tensor(output_token_ids, device=self.lm_head.bias.device))

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: torch.Tensor | None = None, get_embedding: bool = True) -> EmbeddingPoolerOutput:
        if self.mask_token_id is None:
            raise RuntimeError("call configure_output(mask_token_id, ...) before the first forward")
        hidden = self.roberta(input_ids, positions, forward_batch, input_embeds, get_embedding=True)
        is_mask = input_ids == self.mask_token_id
        if int(is_mask.sum()) != forward_batch.batch_size:
            raise ValueError(f"every request needs exactly one <mask> token: {int(is_mask.sum())} masks "
                             f"in {forward_batch.batch_size} requests")
        at_mask = hidden[is_mask]   # request order: the batch is packed request after request
        head = self.lm_head
        features = head.layer_norm(F.gelu(head.dense(at_mask)))
        weight = self.roberta.embeddings.word_embeddings.weight[: self.config.vocab_size]  # rows padded to 64
        bias = head.bias
        if self.output_token_ids is not None:
            weight, bias = weight[self.output_token_ids], bias[self.output_token_ids]
        return EmbeddingPoolerOutput(embeddings=features @ weight.T + bias)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        encoder_weights, head_weights = [], {}
        for name, tensor in weights:
            if name.startswith("roberta."):
                encoder_weights.append((name[len("roberta."):], tensor))
            elif name.startswith("lm_head.") and not name.startswith("lm_head.decoder."):  # decoder: tied
                head_weights[name[len("lm_head."):]] = tensor
        self.roberta.load_weights(encoder_weights)
        for name, param in self.lm_head.named_parameters():
            if name not in head_weights:
                raise KeyError(f"checkpoint has no lm_head.{name}")
            param.data.copy_(head_weights[name])


EntryClass = [RobertaForMaskedLM]
