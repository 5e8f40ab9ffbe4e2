"""Compare a retrained model with the active one on their held-out metrics, each with its standard error.

Pure statistics, no Django. A model kind names one held-out metric (a ``HeldOutMetric``: its
value, standard error, the rows it was measured on and which direction is better); the gate
says a candidate is *worse* when it trails the active run by more than the standard error of
the difference, ``sqrt(se_candidate**2 + se_active**2)``: the two runs are measured on
different held-out rows (a retraining sees newer data), so their errors add.

Standard errors
---------------
* AUC (and Harrell's concordance read as one): Hanley & McNeil (1982), Radiology 143:29-36,
  eq. 2, from the AUC and the numbers of positives and negatives.
* A mean of per-row values (absolute errors, silhouettes): sample standard deviation over
  the square root of the rows.
* A proportion (hit rate): the binomial ``sqrt(p (1 - p) / n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HeldOutMetric:
    """One model run's held-out metric: the figure the quality gate compares."""

    name: str
    value: float
    se: float
    n: int
    higher_is_better: bool


@dataclass(frozen=True)
class GateComparison:
    """How a candidate's held-out metric stands against the active run's.

    ``worse_by`` is how far the candidate trails, in the metric's units and direction (negative
    when it is better); ``tolerance`` is the standard error of the difference.
    """

    worse_by: float
    tolerance: float

    @property
    def passes(self) -> bool:
        """Return whether the candidate is not worse beyond the standard error of the difference."""
        return self.worse_by <= self.tolerance


def auc_standard_error(auc: float, *, n_positive: int, n_negative: int) -> float:
    """Return the standard error of an AUC by Hanley and McNeil's formula (infinite without both classes)."""
    if n_positive < 1 or n_negative < 1:
        return math.inf
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (
        n_positive * n_negative
    )
    return math.sqrt(max(variance, 0.0))


def mean_standard_error(*, mean_square: float, mean: float, n: int) -> float:
    """Return the standard error of a mean from the mean of the values and of their squares over n rows."""
    if n < 2:
        return math.inf
    variance = max(mean_square - mean * mean, 0.0) * n / (n - 1)
    return math.sqrt(variance / n)


def proportion_standard_error(p: float, *, n: int) -> float:
    """Return the binomial standard error of a proportion over n trials."""
    if n < 1:
        return math.inf
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def gate_compare(candidate: HeldOutMetric, active: HeldOutMetric) -> GateComparison:
    """Compare a candidate with the active run on the same metric."""
    if candidate.name != active.name or candidate.higher_is_better != active.higher_is_better:
        raise ValueError(f"cannot compare {candidate.name} with {active.name}")
    difference = candidate.value - active.value
    worse_by = -difference if candidate.higher_is_better else difference
    tolerance = math.sqrt(candidate.se**2 + active.se**2)
    return GateComparison(worse_by=worse_by, tolerance=tolerance)
