"""Linear probing (harness.recipes.linear_probe) against the reference's LinearHeadTrainer.train
(MeZO medium_models/src/linearhead_trainer.py), whose fit and weight assignment are copied below,
on fixed features: the same solver call, the same rows written, the same numbers."""

import pytest
import torch

from harness.core.errors import HarnessError
from harness.recipes.linear_probe import SOLVER, fit_linear_probe
from harness.tasks.batching import Batch

pytest.importorskip("sklearn")
VOCAB, HIDDEN = 20, 8


def reference_assignment(decoder: torch.nn.Linear, label_word_list: list[int], features, targets, num_labels: int):
    """LinearHeadTrainer.train from `reg = LogisticRegressionCV(...)` to the decoder assignment
    (RoBERTa, no --lp_early_stopping, no --prob_as_feature), as in the reference."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reg = LogisticRegressionCV(max_iter=5000, fit_intercept=True, multi_class="multinomial", random_state=0,
                                   tol=1e-4).fit(features.numpy(), targets.numpy())
    coef_torch = torch.tensor(reg.coef_, device=decoder.weight.device, dtype=decoder.weight.dtype)
    bias_torch = torch.tensor(reg.intercept_, device=decoder.weight.device, dtype=decoder.weight.dtype)
    if num_labels == 2 and coef_torch.size(0) == 1:
        coef_torch = torch.cat([-coef_torch / 2, coef_torch / 2], dim=0)
        bias_torch = torch.cat([-bias_torch / 2, bias_torch / 2], dim=0)
    decoder.weight.data[label_word_list, :] = coef_torch
    decoder.bias.data[label_word_list] = bias_torch
    return reg


class FixedFeatureHead:
    """A label-word head whose features are given (features, label_rows, label_token_ids, model)."""

    def __init__(self, features: torch.Tensor, label_token_ids: list[int]):
        torch.manual_seed(0)
        self.model = torch.nn.Module()
        self.model.decoder = torch.nn.Linear(HIDDEN, VOCAB)
        self.table = features
        self.label_token_ids = torch.tensor(label_token_ids)

    def features(self, batch: Batch) -> torch.Tensor:
        return self.table[batch.input_ids[:, 0]]

    def label_rows(self):
        return self.model.decoder.weight, self.model.decoder.bias


def batches(labels: torch.Tensor, size: int = 8) -> list[Batch]:
    index = torch.arange(len(labels))
    return [Batch(input_ids=index[i:i + size, None], attention_mask=torch.ones(len(index[i:i + size]), 1),
                  mask_positions=torch.zeros(len(index[i:i + size]), dtype=torch.long), labels=labels[i:i + size])
            for i in range(0, len(labels), size)]


@pytest.mark.parametrize("num_labels", [2, 3])
def test_probe_writes_what_the_reference_writes(num_labels):
    generator = torch.Generator().manual_seed(num_labels)
    labels = torch.arange(40) % num_labels
    features = torch.randn(40, HIDDEN, generator=generator) + labels[:, None].float()   # separable-ish
    rows = [7, 3, 11][:num_labels]
    head = FixedFeatureHead(features, rows)
    untouched = head.model.decoder.weight.detach().clone()
    record = fit_linear_probe(head, batches(labels))

    reference = torch.nn.Linear(HIDDEN, VOCAB)
    reference.load_state_dict({"weight": untouched, "bias": head.model.decoder.bias.detach().clone()})
    reg = reference_assignment(reference, rows, features, labels, num_labels)
    torch.testing.assert_close(head.model.decoder.weight, reference.weight, atol=0, rtol=0)
    torch.testing.assert_close(head.model.decoder.bias, reference.bias, atol=0, rtol=0)
    others = [i for i in range(VOCAB) if i not in rows]
    assert torch.equal(head.model.decoder.weight[others], untouched[others])

    logits = features @ head.model.decoder.weight[rows].T + head.model.decoder.bias[rows]
    assert torch.equal(logits.argmax(dim=1), torch.as_tensor(reg.predict(features.numpy())))
    assert record["solver"] == SOLVER and record["features"] == HIDDEN and record["examples"] == 40
    assert record["C"] == [float(c) for c in reg.C_]
    assert record["train_accuracy"] == pytest.approx(reg.score(features.numpy(), labels.numpy()))


def test_a_label_without_examples_is_an_error():
    labels = torch.zeros(10, dtype=torch.long)
    labels[5:] = 1
    head = FixedFeatureHead(torch.randn(10, HIDDEN), [7, 3, 11])   # three label words, two labels seen
    with pytest.raises(HarnessError, match="coefficient rows for 3 label words"):
        fit_linear_probe(head, batches(labels))
