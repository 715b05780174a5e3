"""The prompt-based masked-LM objective, computed without waste.

Only the hidden state at <mask> goes through the LM head (dense -> GELU -> LayerNorm), and
only the label words' rows of the decoder are used. The full head would build a
[batch, length, vocab] tensor: 64 x 128 x 50265 fp32 = 1.6 GB per roberta-large forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.prompt import Batch


class LabelWordObjective:
    def __init__(self, model, label_token_ids: list[int]):
        self.model = model
        self.label_token_ids = torch.tensor(label_token_ids, device=model.device)

    def logits(self, batch: Batch) -> torch.Tensor:
        """[batch, num_labels] label-word logits at the mask position."""
        hidden = self.model.roberta(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.mask_positions]
        head = self.model.lm_head
        features = head.layer_norm(F.gelu(head.dense(at_mask)))
        weight = head.decoder.weight[self.label_token_ids]
        bias = head.decoder.bias[self.label_token_ids]
        return (features @ weight.T + bias).float()

    def loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch.labels)

    @torch.no_grad()
    def accuracy(self, batches: list[Batch]) -> float:
        correct = total = 0
        for batch in batches:
            correct += int((self.logits(batch).argmax(dim=-1) == batch.labels).sum())
            total += batch.labels.numel()
        return correct / total

    @torch.no_grad()
    def mean_loss(self, batches: list[Batch]) -> float:
        """Example-weighted mean cross-entropy over the batches."""
        total = sum(float(self.loss(b)) * b.labels.numel() for b in batches)
        return total / sum(b.labels.numel() for b in batches)
