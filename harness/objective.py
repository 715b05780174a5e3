"""Heads (what produces label logits) and objectives (what MeZO minimises).

The masked-LM head is computed without waste: only the hidden state at <mask> goes
through the LM head (dense -> GELU -> LayerNorm), and only the label words' rows of the
decoder are used. The full head would build a [batch, length, vocab] tensor:
64 x 128 x 50265 fp32 = 1.6 GB per roberta-large forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.prompt import Batch

LOSSES = ("ce", "neg-accuracy")


class MaskedLMLabelWordHead:
    """Label-word logits at the mask of a RobertaForMaskedLM (prompt-based classification)."""

    def __init__(self, model, label_token_ids: list[int]):
        self.model = model
        self.label_token_ids = torch.tensor(label_token_ids, device=model.device)

    def __call__(self, batch: Batch) -> torch.Tensor:
        hidden = self.model.roberta(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.mask_positions]
        head = self.model.lm_head
        features = head.layer_norm(F.gelu(head.dense(at_mask)))
        weight = head.decoder.weight[self.label_token_ids]
        bias = head.decoder.bias[self.label_token_ids]
        return (features @ weight.T + bias).float()


class SequenceClassifierHead:
    """Logits of a RobertaForSequenceClassification (its head reads the <s> token)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()


class Objective:
    """loss: "ce" (cross-entropy) or "neg-accuracy" (-(batch accuracy), piecewise constant:
    a MeZO step sees loss+ == loss- unless a prediction flips between the two passes)."""

    def __init__(self, head, loss: str = "ce"):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.head, self.loss_kind = head, loss

    @property
    def model(self):
        return self.head.model

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.head(batch)

    def cross_entropy(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.head(batch), batch.labels)

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.loss_kind == "ce":
            return self.cross_entropy(batch)
        return -(self.head(batch).argmax(dim=-1) == batch.labels).float().mean()

    def loss_over(self, buckets: list[Batch]) -> torch.Tensor:
        """The loss of the batch that `buckets` split (harness.prompt.split_by_length):
        the example-weighted mean of the buckets' losses."""
        total = sum(bucket.labels.numel() for bucket in buckets)
        return sum(self.loss(bucket) * (bucket.labels.numel() / total) for bucket in buckets)

    @torch.no_grad()
    def accuracy(self, batches: list[Batch]) -> float:
        correct = total = 0
        for batch in batches:
            correct += int((self.head(batch).argmax(dim=-1) == batch.labels).sum())
            total += batch.labels.numel()
        return correct / total

    @torch.no_grad()
    def mean_cross_entropy(self, batches: list[Batch]) -> float:
        """Example-weighted mean cross-entropy (comparable across objectives)."""
        total = sum(float(self.cross_entropy(b)) * b.labels.numel() for b in batches)
        return total / sum(b.labels.numel() for b in batches)
