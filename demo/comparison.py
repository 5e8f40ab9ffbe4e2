"""Compare what the models learned with what the demo world planted: coefficients, AUCs, segments, CLV parameters.

The trainers know nothing of the demo. They are given the demo's setup (dates, target course,
reference levels) like any caller, and these functions then hold their fitted parameters and
metrics (of a fit, or of a stored run: the same keys) against the planted truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
from demo.world.truth import planted_campaign_roi as truth_campaign_roi
from demo.world.truth import simulate_campaign_money


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


def planted_campaign_roi(truth: Mapping[str, Any], campaign_slug: str) -> dict[str, Any] | None:
    """Return the planted incremental revenue, spend and ROI recorded when the demo played this campaign.

    ``truth["played_campaigns"][slug]`` (``demo.world.truth.planted_campaign_roi`` over the users
    the campaign treated, under ``truth["funnel"]["cost_model"]``), or None if it was not played.
    """
    played = truth.get("played_campaigns") or {}
    return played.get(campaign_slug)


def roi_compare(
    *, estimate: float | None, lower: float | None, upper: float | None, planted: Mapping[str, Any]
) -> dict[str, Any]:
    """Hold a report's ROI and its interval against the planted ROI (``planted_campaign_roi``'s dict).

    ``covered`` says whether the interval contains the planted ROI (None when either is missing);
    ``same_sign`` whether the estimate tells a manager the same thing (earns or loses money).
    """
    true_roi = planted.get("roi")
    known = None not in (true_roi, lower, upper)
    return {
        "planted": true_roi,
        "estimate": estimate,
        "lower": lower,
        "upper": upper,
        "covered": (float(lower) <= float(true_roi) <= float(upper)) if known else None,  # type: ignore[arg-type]
        "same_sign": (estimate > 0) == (true_roi > 0) if None not in (estimate, true_roi) else None,  # type: ignore[operator]
    }


def roi_interval_coverage(
    *,
    truth: Mapping[str, Any],
    campaign_slug: str,
    segments: Sequence[str] | np.ndarray,
    packages: Sequence[str] | np.ndarray,
    holdout_share: float,
    roi_interval: Callable[[np.ndarray, np.ndarray, np.ndarray, float], tuple[float | None, float | None]],
    seeds: Sequence[int],
    margin_rate: float = 1.0,
) -> dict[str, Any]:
    """Simulate a campaign over many seeds and count how often an ROI interval covers the planted ROI.

    Each seed splits the users into holdout and treated at ``holdout_share`` and draws their
    revenue, coupon discount and spend with ``demo.world.truth.simulate_campaign_money`` (the
    demo's own play, without the database); ``roi_interval(treated_margin, holdout_margin,
    treated_spent, treated_discount)`` is the report's interval (the statistic under test), handed
    what the report hands ``spend_return``: each user's margin on what they paid (times
    ``margin_rate``, 1 less the course partner's share, in cents), and the treated arm's coupon
    discounts, which the report's margin counts gross of (observed, as spent is). The planted ROI is that of each draw's
    treated users (``demo.world.truth.planted_campaign_roi``), so that the estimand is the
    report's; ``margin_rate`` makes it an ROI on margin (see ``planted_campaign_roi``). Returns the
    coverage, the number of draws and how many had no interval, the shares of draws whose interval
    lay wholly above the planted ROI (``planted_below_lower``: the ROI overstated) and wholly below
    it, and the mean number of buyers in the holdout.
    """
    segment_array = np.asarray(segments, dtype=object)
    package_array = np.asarray(packages, dtype=object)
    covered = missing = below = above = 0
    buyers = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        holdout = rng.random(len(segment_array)) < holdout_share
        treated = ~holdout
        _, revenue, spent, discount = simulate_campaign_money(
            truth, campaign_slug, segment_array, treated, package_array, rng
        )
        margin = np.round(revenue * margin_rate, 2)
        planted = truth_campaign_roi(
            truth, campaign_slug, segment_array[treated], package_array[treated], margin_rate=margin_rate
        )
        buyers.append(int(np.count_nonzero(margin[holdout])))
        lower, upper = roi_interval(margin[treated], margin[holdout], spent[treated], round(discount[treated].sum(), 2))
        if lower is None or upper is None or planted["roi"] is None:
            missing += 1
        elif lower <= planted["roi"] <= upper:
            covered += 1
        elif planted["roi"] < lower:
            below += 1
        else:
            above += 1
    measured = len(seeds) - missing
    return {
        "draws": len(seeds),
        "without_interval": missing,
        "coverage": covered / measured if measured else None,
        "planted_below_lower": below / measured if measured else None,
        "planted_above_upper": above / measured if measured else None,
        "mean_holdout_buyers": float(np.mean(buyers)) if buyers else None,
    }
