"""Compare what the models learned with what the demo world planted: coefficients, AUCs, segments, CLV parameters.

The trainers know nothing of the demo. They are given the demo's setup (dates, target course,
reference levels) like any caller, and these functions then hold their fitted parameters and
metrics (of a fit, or of a stored run: the same keys) against the planted truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from analytics.services.training.clv import FITTED_PARAMETERS
from analytics.services.training.common import as_utc
from analytics.services.training.propensity import (
    LABEL,
    PropensityScorer,
    propensity_split,
)
from analytics.services.training.segments import SegmentScorer, behaviour_rates


def truth_time(text: str) -> datetime:
    """Return a timestamp of the planted truth (ISO 8601) as an aware UTC datetime."""
    return as_utc(datetime.fromisoformat(text))


def coefficients_compare(
    estimates: Mapping[str, float], standard_errors: Mapping[str, float], planted: Mapping[str, float]
) -> dict[str, Any]:
    """Compare each planted coefficient with its estimate: the z-score (estimate - true) / SE."""
    rows = {}
    for name, true_value in planted.items():
        estimate, error = estimates.get(name), standard_errors.get(name)
        z = None if estimate is None or not error else (estimate - true_value) / error
        rows[name] = {"true": true_value, "estimate": estimate, "se": error, "z": z}
    z_scores = [abs(row["z"]) for row in rows.values() if row["z"] is not None]
    return {
        "coefficients": rows,
        "max_abs_z": max(z_scores) if z_scores else None,
        "all_within_3_se": len(z_scores) == len(rows) and max(z_scores, default=0.0) < 3.0,
    }


def propensity_compare(
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    scorer: PropensityScorer,
    rows: pd.DataFrame,
    planted: Mapping[str, Any],
) -> dict[str, Any]:
    """Compare a propensity fit with the planted logistic regression (``truth["propensity"]``).

    ``rows`` are the rows the model was fitted on, with ``true_probability`` (NaN where
    unknown): the fit's own test split of them is taken again, and the model's AUC on those
    test users is set beside the AUC of their true probabilities.
    """
    estimates = params["coefficients"]
    errors = {name: row["se"] for name, row in metrics["coefficients"].items()}
    comparison = coefficients_compare(estimates, errors, planted["coefficients"])
    used, _, test = propensity_split(rows, test_share=params["test_share"], random_state=params["random_state"])
    tested = used.iloc[test]
    labels = tested[LABEL].astype(int).to_numpy()
    truth_probability = (
        tested["true_probability"].to_numpy(float) if "true_probability" in tested else np.full(len(tested), np.nan)
    )
    known = np.isfinite(truth_probability)
    if 0 < labels[known].sum() < known.sum():
        predicted = scorer.probability(tested)
        comparison["n_test_with_truth"] = int(known.sum())
        comparison["auc_true_probabilities"] = roc_auc_score(labels[known], truth_probability[known])
        comparison["auc_model_same_users"] = roc_auc_score(labels[known], predicted[known])
        comparison["auc_gap"] = comparison["auc_true_probabilities"] - comparison["auc_model_same_users"]
    return comparison


def churn_compare(*, metrics: Mapping[str, Any], planted: Mapping[str, Any]) -> dict[str, Any]:
    """Compare a churn fit's Cox coefficients with the planted ones (``truth["churn"]``)."""
    ratios = metrics["hazard_ratios"]
    return coefficients_compare(
        {name: row["coefficient"] for name, row in ratios.items()},
        {name: row["se"] for name, row in ratios.items()},
        planted["coefficients"],
    )


def clv_compare(*, params: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[str, Any]:
    """Compare fitted r, alpha, a, b, p, q, v with the demo world's planted ones: z-score and relative error."""
    process = truth["purchase_process"]
    planted = {**process["parameters"], **process["spend"]["parameters"]}
    comparison = coefficients_compare(
        {name: params[name] for name in FITTED_PARAMETERS},
        params["standard_errors"],
        {name: planted[name] for name in FITTED_PARAMETERS},
    )
    for row in comparison["coefficients"].values():
        row["relative_error"] = row["estimate"] / row["true"] - 1
    comparison["max_relative_error"] = max(abs(row["relative_error"]) for row in comparison["coefficients"].values())
    comparison["within_10_percent"] = comparison["max_relative_error"] <= 0.10
    return comparison


def segments_compare(
    *, scorer: SegmentScorer, counts: pd.DataFrame, exposure: pd.Series, planted: pd.Series
) -> dict[str, Any]:
    """Compare the segments the scorer gives users with their planted segments (NaN where unknown).

    Returns the adjusted Rand index and the cross-table of found segment by planted segment.
    """
    segment = scorer.assign(behaviour_rates(counts, exposure))
    planted = planted.reindex(counts.index)
    known = planted.notna().to_numpy()
    return {
        "adjusted_rand_index": adjusted_rand_score(planted[known], segment[known]),
        "users_with_truth": int(known.sum()),
        "crosstab": pd.crosstab(
            np.array(scorer.names_en, dtype=object)[segment[known]], planted[known].to_numpy()
        ).to_dict("index"),
    }
