"""How sparse are MeZO's gradient estimates? Summaries of projected_grad over a run.

projected_grad = (loss+ - loss-) / (2 eps) is exactly 0 when the two perturbed losses are
equal: rare for cross-entropy, the rule for a piecewise-constant loss such as -accuracy,
where it is non-zero only when a prediction flips between the +eps and -eps passes; for small
eps that is rare, so most steps estimate exactly 0 and do not move the parameters.

The record's `sparsity` (MeZO variants; null for first-order ones) summarises every step's
projected_grad: the fraction exactly 0, the fraction with |g| below the protocol's
`sparsity_threshold`, mean |g| and quantiles of |g|. A zero fraction near 1 means MeZO gets
no signal on most steps; it says nothing about the head as such (a classification head with
cross-entropy gives non-zero estimates too).
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def summarize_projected_grads(values, threshold: float) -> dict:
    g = np.asarray(values, dtype=np.float64)
    magnitude = np.abs(g)
    return {
        "steps": int(g.size),
        "zero_fraction": float(np.mean(g == 0.0)),
        "tiny_threshold": threshold,
        "tiny_fraction": float(np.mean(magnitude < threshold)),
        "mean_abs": float(magnitude.mean()),
        "abs_quantiles": {f"p{round(q * 100)}": float(np.quantile(magnitude, q)) for q in QUANTILES},
    }
