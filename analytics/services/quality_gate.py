"""The retraining quality gate: a new model run becomes active only if it is not worse than the active one.

Each model kind names one metric its trainer measures on data it did not fit, with a standard
error (``held_out_metric``); ``analytics.stats.model_quality.gate_compare`` says whether the
candidate trails the active run by more than the standard error of the difference. A run that
does is stored but kept inactive; ``quality_gate_record`` is the JSON kept on the run
(``ModelRun.quality_gate``) that says what was decided and on which figures, which the admin,
``train`` and ``pipeline_status`` render (``analytics.presenters.quality_gate_text``).

The metric of each kind (better: higher, except CLV's error), where it is measured, its standard error:

* propensity: AUC on the stratified held-out quarter; Hanley & McNeil.
* churn: Harrell's concordance on the fitted spells (the Cox fit keeps no held-out split; with
  about ten coefficients on thousands of spells its optimism is small); Hanley & McNeil with
  cancelled spells against the others.
* clv: BG/NBD's mean absolute error of purchases per customer in the holdout period after the
  observation end (lower is better); sd / sqrt(n) from the stored MAE and RMSE.
* segments: mean silhouette on a fixed sample of the users (unsupervised: there is no label to
  hold out); sd / sqrt(n).
* recommendations: hit rate at 10 on each user's first new item after the observation end; binomial.
* uplift: the selected learner's Qini coefficient, mean over offer packages, on the held-out
  30% of experiment users; bootstrap over those users.

A run whose metric is missing (a CLV fit without a holdout period, runs stored before the gate
existed) cannot be compared: it is activated as before and the record says why it was not
compared, so a gate never blocks retraining for lack of a figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..models import ModelRun
from ..stats.model_quality import (
    HeldOutMetric,
    auc_standard_error,
    gate_compare,
    mean_standard_error,
    proportion_standard_error,
)

FIRST = "first"
PASSED = "passed"
KEPT = "kept"
FORCED = "forced"
NOT_COMPARED = "not_compared"
NOT_REQUESTED = "not_requested"
ACTIVATING_DECISIONS = (FIRST, PASSED, NOT_COMPARED, FORCED)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _propensity(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    auc, n_test, base_rate = _number(metrics.get("auc")), metrics.get("n_test"), _number(metrics.get("base_rate"))
    if auc is None or not n_test:
        return None
    positives = metrics.get("n_test_positive")
    if positives is None:
        if base_rate is None:
            return None
        # Runs stored before n_test_positive: the split is stratified, so the test share has the base rate.
        positives = round(base_rate * n_test)
    se = auc_standard_error(auc, n_positive=positives, n_negative=n_test - positives)
    return HeldOutMetric(name="auc", value=auc, se=se, n=n_test, higher_is_better=True)


def _churn(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    concordance, spells, cancelled = (
        _number(metrics.get("concordance")),
        metrics.get("spells"),
        metrics.get("cancelled"),
    )
    if concordance is None or not spells or cancelled is None:
        return None
    se = auc_standard_error(concordance, n_positive=cancelled, n_negative=spells - cancelled)
    return HeldOutMetric(name="concordance", value=concordance, se=se, n=spells, higher_is_better=True)


def _clv(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    holdout = metrics.get("holdout") or {}
    if not holdout.get("compared"):
        return None
    errors = holdout["bgnbd"]["purchases"]
    mae, rmse, n = _number(errors.get("mae")), _number(errors.get("rmse")), holdout.get("n_customers") or 0
    if mae is None or rmse is None or not n:
        return None
    se = mean_standard_error(mean_square=rmse * rmse, mean=mae, n=n)
    return HeldOutMetric(name="holdout_purchases_mae", value=mae, se=se, n=n, higher_is_better=False)


def _segments(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    value, se, n = (
        _number(metrics.get("silhouette")),
        _number(metrics.get("silhouette_se")),
        metrics.get("silhouette_n"),
    )
    if value is None or se is None or not n:
        return None
    return HeldOutMetric(name="silhouette", value=value, se=se, n=n, higher_is_better=True)


def _recommendations(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    hit_rate = _number(metrics.get("hit_rate_at_10"))
    n = ((metrics.get("evaluation") or {}).get("overall") or {}).get("n_users") or 0
    if hit_rate is None or not n:
        return None
    se = proportion_standard_error(hit_rate, n=n)
    return HeldOutMetric(name="hit_rate_at_10", value=hit_rate, se=se, n=n, higher_is_better=True)


def _uplift(metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    selected = metrics.get("selected_method")
    value, se = _number(metrics.get(f"qini_coefficient_{selected}")), _number(metrics.get("qini_coefficient_se"))
    n = metrics.get("held_out_users") or 0
    if value is None or se is None or not n:
        return None
    return HeldOutMetric(name="qini_coefficient", value=value, se=se, n=n, higher_is_better=True)


METRIC_READERS: dict[str, Callable[[Mapping[str, Any]], HeldOutMetric | None]] = {
    ModelRun.Model.PROPENSITY: _propensity,
    ModelRun.Model.CHURN: _churn,
    ModelRun.Model.CLV: _clv,
    ModelRun.Model.SEGMENTS: _segments,
    ModelRun.Model.RECOMMENDATIONS: _recommendations,
    ModelRun.Model.UPLIFT: _uplift,
}


def held_out_metric(*, model: str, metrics: Mapping[str, Any]) -> HeldOutMetric | None:
    """Return the gate's metric of a run from its stored metrics, or None where the run has none."""
    reader = METRIC_READERS.get(model)
    return reader(metrics) if reader else None


def _finite(value: float) -> float | None:
    """Return the value, or None for an infinite standard error (JSON and PostgreSQL's jsonb have no infinity)."""
    return value if math.isfinite(value) else None


def _figures(metric: HeldOutMetric) -> dict[str, Any]:
    return {"value": metric.value, "se": _finite(metric.se), "n": metric.n}


def quality_gate_record(
    *, model: str, metrics: Mapping[str, Any], active: ModelRun | None, activate: bool
) -> dict[str, Any]:
    """Return the gate's decision on a candidate run as the JSON stored with it.

    ``decision`` is one of FIRST, PASSED, KEPT, NOT_COMPARED (activated: a metric is missing) and
    NOT_REQUESTED (stored inactive, as asked); with both metrics present the record carries them,
    the difference and the tolerance (the standard error of the difference).
    """
    candidate = held_out_metric(model=model, metrics=metrics)
    record: dict[str, Any] = {"metric": candidate.name if candidate else None}
    if candidate:
        record["higher_is_better"] = candidate.higher_is_better
        record["candidate"] = _figures(candidate)
    if active is None:
        return record | {"decision": FIRST if activate else NOT_REQUESTED}
    record["active_version"] = active.version
    current = held_out_metric(model=model, metrics=active.metrics)
    if candidate is None or current is None or current.name != candidate.name:
        reason = "candidate_has_no_metric" if candidate is None else "active_has_no_metric"
        return record | {"decision": NOT_COMPARED if activate else NOT_REQUESTED, "reason": reason}
    comparison = gate_compare(candidate, current)
    record |= {"active": _figures(current), "worse_by": comparison.worse_by, "tolerance": _finite(comparison.tolerance)}
    if not activate:
        return record | {"decision": NOT_REQUESTED}
    return record | {"decision": PASSED if comparison.passes else KEPT}
