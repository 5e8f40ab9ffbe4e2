"""Hold uplift claims to held-out data: a bootstrap interval for the Qini coefficient, cross-fitting folds,
and the incremental margin of a choice of offers valued on randomised outcomes the choosing model never saw.

Pure statistics, no Django.

Qini coefficient interval
-------------------------
``qini_interval`` ranks held-out users once by a fixed score (the fitted model's prediction)
and resamples users with replacement within each arm (a stratified percentile bootstrap, so
every replicate keeps the experiment's treated and control counts). Each replicate's Qini
coefficient is computed exactly as ``analytics.stats.uplift.uplift_curves`` computes it, with
the resampled counts as weights; with every weight 1 it is that function's
``qini_coefficient``. A model whose interval lies above zero ranks users better than chance on
users it did not learn from; one whose interval holds zero has not shown that it does.

Cross-fitting
-------------
``crossfit_folds`` puts each user in one of ``k`` folds by a stable hash of their id (all of a
user's rows in one fold). A model fitted on the other ``k - 1`` folds chooses for the users of
fold ``k``, and fold ``k``'s randomised outcomes value that choice: no user's outcome both
trains the chooser and judges it.

Valuing a choice on randomised outcomes
---------------------------------------
Each held-out row comes from a past experiment in which the user was randomly treated with one
offer package (probability ``share``) or held out. For a package ``j`` with price ``price`` of a
conversion and coupon ``discount[j]``, the Horvitz-Thompson term::

    m = t / share * y * (price - discount[j])  -  (1 - t) / (1 - share) * y * price

has expectation ``P(buy | offer) * (price - discount) - P(buy | none) * price`` given the user's
features: the incremental margin of giving ``j``. A choice (one package per row, or none)
is valued on the rows whose experiment randomised the package chosen for them
(``informative[row, j]``): its margin is the sum of their ``m``, its cost the sum of the chosen
packages' costs over the same rows. ``compare_choices`` values two choices on the same rows
and gives percentile bootstrap intervals (rows resampled together, so the two are paired) for
each one's margin per CNY and for their difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analytics.stats.effects import _JsonResult

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
DEFAULT_REPLICATES = 1000
DEFAULT_CONFIDENCE = 0.95
# Bootstrap weights are drawn in batches of at most this many cells (replicates x users).
_BATCH_CELLS = 4_000_000


def _resample_counts(rng: np.random.Generator, n: int, size: int) -> FloatArray:
    """Return ``size`` bootstrap resamples of ``n`` items as counts per item (size x n)."""
    picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    counts: FloatArray = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(float)
    return counts


@dataclass(frozen=True)
class QiniInterval(_JsonResult):
    """Hold a Qini coefficient on held-out users and its stratified percentile bootstrap interval."""

    coefficient: float
    lower: float
    upper: float
    confidence: float
    replicates: int
    users_treated: int
    users_control: int

    @property
    def above_zero(self) -> bool:
        """Return whether the whole interval lies above zero."""
        return self.lower > 0.0


def _qini_from_segments(n_t: FloatArray, n_c: FloatArray, y_t: FloatArray, y_c: FloatArray, users: float) -> FloatArray:
    """Return the Qini coefficient per row of per-segment sums (replicates x grid segments, best users first)."""

    def cumulative(values: FloatArray) -> FloatArray:
        # The running total at each grid depth, with depth 0 (nothing yet) first.
        total = np.cumsum(values, axis=1)
        return np.concatenate([np.zeros((len(values), 1)), total], axis=1)

    n_t, n_c, y_t, y_c = cumulative(n_t), cumulative(n_c), cumulative(y_t), cumulative(y_c)
    both = (n_t > 0) & (n_c > 0)
    qini = np.where(both, y_t - y_c * n_t / np.where(both, n_c, 1.0), 0.0) / users
    fraction = (n_t + n_c) / users
    area = np.trapezoid(qini, fraction, axis=1)
    result: FloatArray = area - qini[:, -1] / 2.0
    return result


def _segment_sums(
    replicate: IntArray, segment: IntArray, weights: FloatArray | None, size: int, segments: int
) -> FloatArray:
    counts = np.bincount(
        (replicate * segments + segment).ravel(),
        weights=None if weights is None else weights.ravel(),
        minlength=size * segments,
    )
    sums: FloatArray = counts.reshape(size, segments).astype(float)
    return sums


def qini_interval(
    score: npt.ArrayLike,
    treated: npt.ArrayLike,
    outcome: npt.ArrayLike,
    *,
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = DEFAULT_CONFIDENCE,
    n_points: int = 101,
    seed: int = 0,
) -> QiniInterval:
    """Return the Qini coefficient of ranking held-out users by ``score`` and its bootstrap interval.

    Users are resampled with replacement within each arm; the ranking (by the fixed ``score``,
    ties in input order) is not refitted, so the interval is about this model's ranking of users
    like these. ``n_points`` is the grid of ``uplift_curves``.
    """
    ranking = np.asarray(score, dtype=float)
    is_treated = np.asarray(treated, dtype=bool)
    result = np.asarray(outcome, dtype=float)
    users = len(ranking)
    if is_treated.shape != (users,) or result.shape != (users,):
        raise ValueError("score, treated and outcome must have one entry per user")
    if not is_treated.any() or is_treated.all():
        raise ValueError("the Qini coefficient needs treated and control users")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    if replicates < 10:
        raise ValueError("replicates must be at least 10")
    order = np.argsort(-ranking, kind="stable")
    treated_sorted, outcome_sorted = is_treated[order], result[order]
    depth = np.unique(np.round(np.linspace(0, users, n_points)).astype(np.int64))
    depth = depth[depth > 0]
    # Each user's grid segment: the users ranked after depth[i - 1] and up to depth[i].
    segment = np.searchsorted(depth, np.arange(users), side="right")
    segments = len(depth)

    def coefficients(picks: list[IntArray], size: int) -> FloatArray:
        sums = []
        for members in picks:
            replicate = np.broadcast_to(np.arange(size)[:, None], members.shape)
            sums.append(
                (
                    _segment_sums(replicate, segment[members], None, size, segments),
                    _segment_sums(replicate, segment[members], outcome_sorted[members], size, segments),
                )
            )
        (n_t, y_t), (n_c, y_c) = sums
        return _qini_from_segments(n_t, n_c, y_t, y_c, float(users))

    groups = [np.flatnonzero(treated_sorted), np.flatnonzero(~treated_sorted)]
    point = float(coefficients([members[None, :] for members in groups], 1)[0])
    rng = np.random.default_rng(seed)
    batch = max(1, min(replicates, _BATCH_CELLS // users))
    estimates: list[FloatArray] = []
    for start in range(0, replicates, batch):
        size = min(batch, replicates - start)
        picks = [members[rng.integers(0, len(members), size=(size, len(members)))] for members in groups]
        estimates.append(coefficients(picks, size))
    draws = np.concatenate(estimates)
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(draws, [tail, 1.0 - tail])
    return QiniInterval(
        coefficient=point,
        lower=float(lower),
        upper=float(upper),
        confidence=confidence,
        replicates=replicates,
        users_treated=int(is_treated.sum()),
        users_control=int((~is_treated).sum()),
    )


def crossfit_folds(user_ids: npt.ArrayLike, k: int, *, salt: int = 0) -> IntArray:
    """Return each user's fold in ``0 .. k - 1``: a stable hash of the id, so every row of a user shares one fold."""
    if k < 2:
        raise ValueError("cross-fitting needs at least two folds")
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids, dtype=np.uint64) + np.uint64(0x632BE59BD9B4E019) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    folds: IntArray = ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53) * k).astype(np.int64)
    return folds


@dataclass(frozen=True)
class RandomisedRows:
    """Held-out rows of past randomised experiments, as a choice of offer packages is valued on them.

    ``informative[row, j]`` is True when the row's experiment randomised package ``j`` for that
    user (they got it, or were held out from it); ``share[row]`` is their probability of
    treatment there; ``converted`` is 0/1.
    """

    treated: BoolArray
    share: FloatArray
    converted: FloatArray
    informative: BoolArray

    def __post_init__(self) -> None:
        rows = len(self.treated)
        if self.converted.shape != (rows,) or self.informative.ndim != 2 or self.informative.shape[0] != rows:
            raise ValueError("treated, converted and informative must have one entry per row")
        if self.share.shape != self.informative.shape:
            raise ValueError("share must hold one entry per row and package")
        if not ((self.share[self.informative] > 0) & (self.share[self.informative] < 1)).all():
            raise ValueError("share must lie strictly between 0 and 1 where a package is informative")


def margin_terms(rows: RandomisedRows, *, price: float, discount: npt.ArrayLike) -> FloatArray:
    """Return the Horvitz-Thompson incremental margin of each package for each row (rows x packages)."""
    discounts = np.asarray(discount, dtype=float)
    if discounts.shape != (rows.informative.shape[1],):
        raise ValueError("discount must hold one entry per package")
    t, y = rows.treated.astype(float)[:, None], rows.converted[:, None]
    share = np.where(rows.informative, rows.share, 0.5)
    treated_part = t / share * y * (price - discounts)[None, :]
    control_part = (1.0 - t) / (1.0 - share) * y * price
    terms: FloatArray = np.where(rows.informative, treated_part - control_part, 0.0)
    return terms


@dataclass(frozen=True)
class ChoiceValue(_JsonResult):
    """Hold what one choice earns on held-out randomised rows: rows counted, cost, margin and margin per CNY."""

    rows: int
    cost: float
    margin: float
    margin_per_cny: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class ChoiceComparison(_JsonResult):
    """Hold two choices valued on the same held-out rows, and the interval of their difference per CNY."""

    first: ChoiceValue
    second: ChoiceValue
    difference_per_cny: float | None
    difference_lower: float | None
    difference_upper: float | None
    confidence: float
    replicates: int


def _choice_parts(
    terms: FloatArray, informative: BoolArray, choice: IntArray, costs: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Return each row's margin and cost under a choice (0 where the choice is none or not informative)."""
    rows = np.arange(len(choice))
    picked = np.maximum(choice, 0)
    counted = (choice >= 0) & informative[rows, picked] if len(choice) else np.zeros(0, dtype=bool)
    margin = np.where(counted, terms[rows, picked], 0.0)
    cost = np.where(counted, costs[picked], 0.0)
    return margin, cost


def compare_choices(
    rows: RandomisedRows,
    first: npt.ArrayLike,
    second: npt.ArrayLike,
    *,
    price: float,
    discount: npt.ArrayLike,
    cost: npt.ArrayLike,
    replicates: int = DEFAULT_REPLICATES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> ChoiceComparison:
    """Value two choices (a package index per row, -1 for none) on held-out randomised rows, with intervals.

    Each choice counts only the rows whose experiment randomised the package it chose for them;
    its margin per CNY is their summed Horvitz-Thompson margin over the chosen packages' cost.
    Rows are resampled with replacement (both choices on the same resample) for percentile
    intervals of each margin per CNY and of ``second - first``.
    """
    costs = np.asarray(cost, dtype=float)
    if costs.shape != (rows.informative.shape[1],):
        raise ValueError("cost must hold one entry per package")
    choices = [np.asarray(choice, dtype=np.int64) for choice in (first, second)]
    if any(choice.shape != rows.treated.shape for choice in choices):
        raise ValueError("each choice must hold one entry per row")
    terms = margin_terms(rows, price=price, discount=discount)
    parts = [_choice_parts(terms, rows.informative, choice, costs) for choice in choices]
    n = len(rows.treated)
    rng = np.random.default_rng(seed)
    draws: list[list[FloatArray]] = [[], [], []]
    if n:
        batch = max(1, min(replicates, _BATCH_CELLS // n))
        for start in range(0, replicates, batch):
            size = min(batch, replicates - start)
            weights = _resample_counts(rng, n, size)
            ratios = []
            for margin, spend in parts:
                total_cost = weights @ spend
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratios.append(np.where(total_cost > 0, (weights @ margin) / total_cost, np.nan))
            draws[0].append(ratios[0])
            draws[1].append(ratios[1])
            draws[2].append(ratios[1] - ratios[0])
    tail = (1.0 - confidence) / 2.0

    def bounds(index: int) -> tuple[float | None, float | None]:
        if not draws[index]:
            return None, None
        pooled = np.concatenate(draws[index])
        finite = pooled[np.isfinite(pooled)]
        if len(finite) < 0.9 * replicates:
            return None, None
        lower, upper = np.quantile(finite, [tail, 1.0 - tail])
        return float(lower), float(upper)

    values: list[ChoiceValue] = []
    for index, (margin, spend) in enumerate(parts):
        spent = float(spend.sum())
        lower, upper = bounds(index)
        values.append(
            ChoiceValue(
                rows=int((spend > 0).sum()),
                cost=spent,
                margin=float(margin.sum()),
                margin_per_cny=float(margin.sum()) / spent if spent > 0 else None,
                lower=lower,
                upper=upper,
            )
        )
    difference = (
        None
        if values[0].margin_per_cny is None or values[1].margin_per_cny is None
        else values[1].margin_per_cny - values[0].margin_per_cny
    )
    difference_lower, difference_upper = bounds(2) if difference is not None else (None, None)
    return ChoiceComparison(
        first=values[0],
        second=values[1],
        difference_per_cny=difference,
        difference_lower=difference_lower,
        difference_upper=difference_upper,
        confidence=confidence,
        replicates=replicates,
    )
