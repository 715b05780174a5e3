"""Linear probing (LP) as the MeZO reference does it (`medium_models/src/linearhead_trainer.py`,
`LinearHeadTrainer.train`), for the LP row of Table 18 and LP-then-MeZO (Table 19, the
reference's `--from_linearhead`).

1. Features: the input of the LM head's decoder at <mask> (dense -> GELU -> LayerNorm of the
   last hidden state) for every training example, in eval mode, no gradient. The reference
   hooks the decoder's input; the label-word head computes the same tensor (`features`).
2. scikit-learn's `LogisticRegressionCV(max_iter=5000, fit_intercept=True,
   multi_class="multinomial", random_state=0, tol=1e-4)`, the reference's call without
   `--lp_early_stopping`, fitted on those features and the labels.
3. Its coefficients and intercepts are written into the label words' rows of the decoder
   weight and bias. A two-label task gets one coefficient row from scikit-learn; the reference
   writes -coef/2 and +coef/2 (and the same for the intercept), so the logit difference is
   coef . x + intercept, and so does this.

Differences from the reference: it iterates its training set through a shuffled data loader,
here the k-shot training file's order. The logistic fit itself does not depend on the order,
but the 5 cross-validation folds that pick C do (scikit-learn's StratifiedKFold, unshuffled),
so the chosen C (recorded) can differ.

Determinism. On one machine the fit is a function of the features: scikit-learn's default solver
(lbfgs below 1.8, the pin) with numpy's BLAS held to one thread during the fit (threadpoolctl), so a
thread count cannot change it; of equal cross-validation scores the first, i.e. the smallest C of
the grid (np.logspace(-4, 4, 10)), wins (LogisticRegressionCV's argmax). Across machines it is not,
and cannot be while it is the reference's setting: the features come from the model's forward pass,
whose float rounding differs between CPU models (about 1e-7 relative), and lbfgs stopped at
tol=1e-4 on a nearly separable problem with a weak penalty (C up to 1e4) does not damp that
difference: on this project's machine, torch's kernels capped at AVX2 (ATEN_CPU_CAPABILITY,
MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA) instead of AVX-512 gave the same C but another
stopping point (the smoke run's probe training accuracy 0.906 -> 0.938); on an Intel Xeon, LP-then-MeZO's
first loss moved by 8.5e-4. The gate therefore compares LP-started runs exactly on one machine and,
across machines, not their trajectory and their accuracies within the measured 5 points
(benchmarks/gate.toml, [across_machines.linear_probe]).
"""

from __future__ import annotations

import time
import warnings

import torch

from harness.core.errors import HarnessError
from harness.results.schema import LinearProbe
from harness.tasks.batching import Batch

SOLVER_ARGS = {"max_iter": 5000, "fit_intercept": True, "multi_class": "multinomial", "random_state": 0, "tol": 1e-4}
SOLVER = "sklearn.linear_model.LogisticRegressionCV(" + ", ".join(f"{k}={v!r}" for k, v in SOLVER_ARGS.items()) + ")"


def _one_blas_thread():
    """numpy's BLAS held to one thread (threadpoolctl, a scikit-learn dependency): a reduction split over
    threads rounds differently per thread count."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@torch.no_grad()
def fit_linear_probe(head, train_batches: list[Batch]) -> LinearProbe:
    """Fit the probe on `head.features` of the training batches and write it into the label
    words' decoder rows (`head.label_rows()`, `head.label_token_ids`). Returns the record's
    `linear_probe` block."""
    try:
        from sklearn.linear_model import LogisticRegressionCV
    except ImportError:
        raise HarnessError("linear probing needs scikit-learn: pip install 'mezo-bench[sklearn]'") from None
    started = time.perf_counter()
    was_training = head.model.training
    head.model.eval()
    features = torch.cat([head.features(batch).float().cpu() for batch in train_batches]).numpy()
    labels = torch.cat([batch.labels.cpu() for batch in train_batches]).numpy()
    head.model.train(was_training)
    with warnings.catch_warnings():
        # scikit-learn >= 1.5 deprecates multi_class; the reference passes it, and the pin keeps it working
        warnings.filterwarnings("ignore", message=".*multi_class.*", category=FutureWarning)
        with _one_blas_thread():
            probe = LogisticRegressionCV(**SOLVER_ARGS).fit(features, labels)

    weight, bias = head.label_rows()
    coef = torch.as_tensor(probe.coef_, dtype=weight.dtype, device=weight.device)
    intercept = torch.as_tensor(probe.intercept_, dtype=bias.dtype, device=bias.device)
    rows = head.label_token_ids
    if len(rows) == 2 and coef.shape[0] == 1:
        coef = torch.cat([-coef / 2, coef / 2])
        intercept = torch.cat([-intercept / 2, intercept / 2])
    if coef.shape[0] != len(rows):
        raise HarnessError(f"linear probe: {coef.shape[0]} coefficient rows for {len(rows)} label words "
                           "(a label has no training example)")
    weight[rows] = coef
    bias[rows] = intercept
    return LinearProbe(solver=SOLVER, features=int(features.shape[1]), examples=int(features.shape[0]),
                       C=[float(c) for c in probe.C_], train_accuracy=float(probe.score(features, labels)),
                       seconds=time.perf_counter() - started)
