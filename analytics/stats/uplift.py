"""Learn who an offer changes: uplift models and their Qini / uplift curves.

Pure statistics on the scikit-learn stack, no Django.

Data
----
``features`` is a users x features float matrix; ``arm`` names each user's arm (the
``control`` label for the random holdout, any other label for a treated arm);
``converted`` is 0/1; ``value`` (optional) is the outcome in CNY per user (revenue or
margin of the conversion, 0 without one), as float. With several treated arms one model is
fitted per arm against the control users only, so the arms' effects stay separate.

Methods
-------
* ``t_learner``: two models per arm, one fitted on the arm's users and one on the control
  users; the uplift is the difference of their predictions. Conversion uses a classifier's
  probability, value a regressor's mean.
* ``transformed_outcome``: with ``p`` the share of the arm among the arm's and control
  users, ``z = y * (t - p) / (p * (1 - p))`` has expectation equal to the uplift given the
  features (Athey and Imbens 2015), so one regressor on ``z`` estimates it directly.
* ``x_learner`` (Kuenzel et al. 2019): the T-learner's two models ``mu1, mu0`` impute each
  user's effect, ``y - mu0(x)`` for treated users and ``mu1(x) - y`` for control users; a
  regressor per group learns those imputed effects (``tau1``, ``tau0``), and the uplift is
  ``p * tau0 + (1 - p) * tau1``. With a small holdout the control model ``mu0`` is fitted on
  few users and shrinks towards the average, which the T-learner reads as uplift for users
  who buy often anyway; the X-learner leans on ``tau0``, whose targets use the well-fitted
  ``mu1`` and the control users' own outcomes, so that bias largely cancels.

Evaluation (``uplift_curves``), on held-out users ranked by predicted uplift, best first.
With ``n_t(k), n_c(k)`` the treated and control users among the top ``k`` and
``y_t(k), y_c(k)`` their summed outcomes:

* Qini: ``Q(k) = y_t(k) - y_c(k) * n_t(k) / n_c(k)``, the incremental outcome among the
  treated top-``k`` users.
* Uplift curve: ``U(k) = (y_t(k) / n_t(k) - y_c(k) / n_c(k)) * k``, the incremental outcome
  had all top-``k`` users been treated.
* Both are reported per user of the evaluation set (divided by ``N``) at fractions
  ``k / N`` on a grid, and are 0 where either arm has no users yet.
* ``auuc`` is the trapezoid area under ``U(k) / N`` against ``k / N``: the mean, over
  targeting depths, of the incremental outcome per user. A random ranking gets
  ``U(N) / (2N)`` in expectation (``auuc_random``); ``auuc_lift = auuc - auuc_random`` is
  positive when the ranking beats chance. ``qini_coefficient`` is the same difference for
  ``Q``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from analytics.stats.effects import _JsonResult

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Method = Literal["t_learner", "transformed_outcome", "x_learner"]
METHODS: tuple[Method, ...] = ("t_learner", "transformed_outcome", "x_learner")
DEFAULT_CURVE_POINTS = 101


def default_classifier() -> ClassifierMixin:
    """Return the default conversion model: shallow, regularised gradient boosting."""
    return HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=200, l2_regularization=1.0, random_state=0
    )


def default_regressor() -> RegressorMixin:
    """Return the default regression model: shallow, regularised gradient boosting."""
    return HistGradientBoostingRegressor(
        max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=200, l2_regularization=1.0, random_state=0
    )


@dataclass(frozen=True)
class ArmModel:
    """Hold the fitted models of one treated arm against control."""

    arm: str
    method: Method
    treated_share: float
    conversion_models: tuple[Any, ...]
    value_models: tuple[Any, ...]

    def predict(self, features: npt.ArrayLike, *, with_value: bool = True) -> tuple[FloatArray, FloatArray | None]:
        """Predict each user's incremental conversion probability and value (the value None without ``with_value``)."""
        matrix = np.asarray(features, dtype=float)
        value = None
        if self.method == "t_learner":
            treated_model, control_model = self.conversion_models
            conversion = treated_model.predict_proba(matrix)[:, 1] - control_model.predict_proba(matrix)[:, 1]
            if self.value_models and with_value:
                treated_value, control_value = self.value_models
                value = treated_value.predict(matrix) - control_value.predict(matrix)
        elif self.method == "x_learner":
            share = self.treated_share
            conversion = share * self.conversion_models[3].predict(matrix) + (1 - share) * self.conversion_models[
                2
            ].predict(matrix)
            if self.value_models and with_value:
                value = share * self.value_models[3].predict(matrix) + (1 - share) * self.value_models[2].predict(
                    matrix
                )
        else:
            conversion = self.conversion_models[0].predict(matrix)
            value = self.value_models[0].predict(matrix) if self.value_models and with_value else None
        return conversion, value

    def predict_control_conversion(self, features: npt.ArrayLike) -> FloatArray:
        """Predict each user's conversion probability without the offer (T- and X-learner only)."""
        if self.method not in ("t_learner", "x_learner"):
            raise ValueError("only the T- and X-learner model the control arm's conversion")
        probability: FloatArray = self.conversion_models[1].predict_proba(np.asarray(features, dtype=float))[:, 1]
        return probability


@dataclass(frozen=True)
class UpliftModel:
    """Hold one fitted arm model per treated arm, each against the same control arm."""

    method: Method
    control: str
    arms: tuple[ArmModel, ...]

    @property
    def arm_names(self) -> tuple[str, ...]:
        """Return the treated arms in model order."""
        return tuple(model.arm for model in self.arms)

    def predict(self, features: npt.ArrayLike, *, with_value: bool = True) -> UpliftPrediction:
        """Predict every user's incremental conversion and value under every treated arm.

        Without ``with_value`` only conversion is predicted (the value models are not evaluated; ``value`` is None).
        """
        predictions = [model.predict(features, with_value=with_value) for model in self.arms]
        conversion = np.column_stack([conversion for conversion, _ in predictions])
        values = [value for _, value in predictions if value is not None]
        value = np.column_stack(values) if len(values) == len(predictions) else None
        return UpliftPrediction(arms=self.arm_names, conversion=conversion, value=value)


@dataclass(frozen=True)
class UpliftPrediction:
    """Hold per-user predicted uplifts: one column per arm, in ``arms`` order."""

    arms: tuple[str, ...]
    conversion: FloatArray
    value: FloatArray | None


def _check_inputs(
    features: npt.ArrayLike, arm: npt.ArrayLike, converted: npt.ArrayLike, value: npt.ArrayLike | None
) -> tuple[FloatArray, npt.NDArray[np.object_], FloatArray, FloatArray | None]:
    matrix = np.asarray(features, dtype=float)
    if matrix.ndim != 2:
        raise ValueError("features must be a users x features matrix")
    labels = np.asarray(arm).astype(str).astype(object)
    outcome = np.asarray(converted, dtype=float)
    amounts = None if value is None else np.asarray(value, dtype=float)
    for name, array in (("arm", labels), ("converted", outcome), ("value", amounts)):
        if array is not None and array.shape != (len(matrix),):
            raise ValueError(f"{name} must hold one entry per user")
    if not np.isin(outcome, (0.0, 1.0)).all():
        raise ValueError("converted must be 0 or 1")
    return matrix, labels, outcome, amounts


def _fit_arm(
    method: Method,
    arm: str,
    matrix: FloatArray,
    treated: BoolArray,
    outcome: FloatArray,
    amounts: FloatArray | None,
    classifier: Callable[[], Any],
    regressor: Callable[[], Any],
    shares: FloatArray | None = None,
) -> ArmModel:
    share = float(treated.mean())
    if method == "t_learner":
        conversion_models = tuple(
            clone(classifier()).fit(matrix[group], outcome[group]) for group in (treated, ~treated)
        )
        value_models = (
            ()
            if amounts is None
            else tuple(clone(regressor()).fit(matrix[group], amounts[group]) for group in (treated, ~treated))
        )
    elif method == "x_learner":
        if shares is not None:
            share = float(np.mean(shares))
        conversion_models = _x_models(matrix, treated, outcome, classifier, regressor, probability=True)
        value_models = (
            () if amounts is None else _x_models(matrix, treated, amounts, regressor, regressor, probability=False)
        )
    else:
        # Inverse-probability weights of the known random assignment make z unbiased for the uplift;
        # pooled experiments with different holdout shares each bring their own probability.
        p = np.full(len(treated), share) if shares is None else shares
        weight = (treated.astype(float) - p) / (p * (1.0 - p))
        conversion_models = (clone(regressor()).fit(matrix, outcome * weight),)
        value_models = () if amounts is None else (clone(regressor()).fit(matrix, amounts * weight),)
    return ArmModel(
        arm=arm, method=method, treated_share=share, conversion_models=conversion_models, value_models=value_models
    )


def _x_models(
    matrix: FloatArray,
    treated: BoolArray,
    outcome: FloatArray,
    first: Callable[[], Any],
    second: Callable[[], Any],
    probability: bool,
) -> tuple[Any, ...]:
    """Fit the X-learner's outcome models per group, then its effect models on the imputed effects."""
    mu1 = clone(first()).fit(matrix[treated], outcome[treated])
    mu0 = clone(first()).fit(matrix[~treated], outcome[~treated])

    def predict(model: Any, rows: BoolArray) -> FloatArray:
        predicted: FloatArray = model.predict_proba(matrix[rows])[:, 1] if probability else model.predict(matrix[rows])
        return predicted

    tau1 = clone(second()).fit(matrix[treated], outcome[treated] - predict(mu0, treated))
    tau0 = clone(second()).fit(matrix[~treated], predict(mu1, ~treated) - outcome[~treated])
    return mu1, mu0, tau1, tau0


def fit_uplift(
    features: npt.ArrayLike,
    arm: npt.ArrayLike,
    converted: npt.ArrayLike,
    value: npt.ArrayLike | None = None,
    *,
    control: str = "control",
    method: Method = "t_learner",
    classifier: Callable[[], Any] = default_classifier,
    regressor: Callable[[], Any] = default_regressor,
    treated_share: npt.ArrayLike | None = None,
) -> UpliftModel:
    """Fit one uplift model per treated arm against the control arm.

    ``classifier`` and ``regressor`` build fresh scikit-learn estimators; the transformed
    outcome uses only the regressor, the X-learner the classifier for conversion and the
    regressor for everything else. ``treated_share`` (optional, one per user) is the
    probability each user had of being treated rather than held out, when users of several
    experiments with different holdout shares are pooled; without it the arm's share of its
    and the control's users is used for everyone.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    matrix, labels, outcome, amounts = _check_inputs(features, arm, converted, value)
    shares = None
    if treated_share is not None:
        shares = np.asarray(treated_share, dtype=float)
        if shares.shape != (len(matrix),):
            raise ValueError("treated_share must hold one entry per user")
        if not ((shares > 0) & (shares < 1)).all():
            raise ValueError("treated_share must lie strictly between 0 and 1")
    is_control = labels == str(control)
    if not is_control.any():
        raise ValueError(f"no users in the control arm {control!r}")
    arms = sorted(set(labels[~is_control].tolist()))
    if not arms:
        raise ValueError("no treated users")
    models = []
    for name in arms:
        pair = is_control | (labels == name)
        models.append(
            _fit_arm(
                method,
                name,
                matrix[pair],
                (labels[pair] == name),
                outcome[pair],
                None if amounts is None else amounts[pair],
                classifier,
                regressor,
                None if shares is None else shares[pair],
            )
        )
    return UpliftModel(method=method, control=str(control), arms=tuple(models))


@dataclass(frozen=True)
class UpliftCurves(_JsonResult):
    """Hold the Qini and uplift curves of one ranking on held-out users, per user of the set."""

    users: int
    users_treated: int
    users_control: int
    fraction: tuple[float, ...]
    qini: tuple[float, ...]
    uplift: tuple[float, ...]
    random_qini: tuple[float, ...]
    random_uplift: tuple[float, ...]
    auuc: float
    auuc_random: float
    auuc_lift: float
    qini_area: float
    qini_coefficient: float


def uplift_curves(
    score: npt.ArrayLike,
    treated: npt.ArrayLike,
    outcome: npt.ArrayLike,
    n_points: int = DEFAULT_CURVE_POINTS,
) -> UpliftCurves:
    """Return the Qini and uplift curves and AUUC of ranking users by ``score`` (high first).

    ``treated`` is True for a user of the treated arm, False for control; ``outcome`` is
    conversion (0/1) or value. Definitions are in the module docstring. Ties in ``score``
    are ranked in input order, so shuffle ties away before calling when that matters.
    """
    ranking = np.asarray(score, dtype=float)
    is_treated = np.asarray(treated, dtype=bool)
    result = np.asarray(outcome, dtype=float)
    users = len(ranking)
    if is_treated.shape != (users,) or result.shape != (users,):
        raise ValueError("score, treated and outcome must have one entry per user")
    if not is_treated.any() or is_treated.all():
        raise ValueError("the curves need treated and control users")
    if n_points < 2:
        raise ValueError("n_points must be >= 2")
    order = np.argsort(-ranking, kind="stable")
    treated_sorted, outcome_sorted = is_treated[order], result[order]
    count_treated = np.concatenate([[0], np.cumsum(treated_sorted)])
    count_control = np.arange(users + 1) - count_treated
    sum_treated = np.concatenate([[0.0], np.cumsum(np.where(treated_sorted, outcome_sorted, 0.0))])
    sum_control = np.concatenate([[0.0], np.cumsum(np.where(treated_sorted, 0.0, outcome_sorted))])
    depth = np.unique(np.round(np.linspace(0, users, n_points)).astype(np.int64))
    n_t, n_c, y_t, y_c = count_treated[depth], count_control[depth], sum_treated[depth], sum_control[depth]
    both = (n_t > 0) & (n_c > 0)
    safe_t, safe_c = np.where(both, n_t, 1), np.where(both, n_c, 1)
    qini = np.where(both, y_t - y_c * n_t / safe_c, 0.0) / users
    uplift = np.where(both, (y_t / safe_t - y_c / safe_c) * depth, 0.0) / users
    fraction = depth / users
    random_qini = fraction * qini[-1]
    random_uplift = fraction * uplift[-1]
    auuc = float(np.trapezoid(uplift, fraction))
    qini_area = float(np.trapezoid(qini, fraction))
    auuc_random = float(uplift[-1]) / 2.0
    return UpliftCurves(
        users=users,
        users_treated=int(is_treated.sum()),
        users_control=int((~is_treated).sum()),
        fraction=tuple(fraction.tolist()),
        qini=tuple(qini.tolist()),
        uplift=tuple(uplift.tolist()),
        random_qini=tuple(random_qini.tolist()),
        random_uplift=tuple(random_uplift.tolist()),
        auuc=auuc,
        auuc_random=auuc_random,
        auuc_lift=auuc - auuc_random,
        qini_area=qini_area,
        qini_coefficient=qini_area - float(qini[-1]) / 2.0,
    )


@dataclass(frozen=True)
class ArmEvaluation(_JsonResult):
    """Hold the curves of one treated arm's model on held-out users of that arm and control."""

    arm: str
    method: str
    conversion: UpliftCurves
    value: UpliftCurves | None


def evaluate_uplift(
    model: UpliftModel,
    features: npt.ArrayLike,
    arm: npt.ArrayLike,
    converted: npt.ArrayLike,
    value: npt.ArrayLike | None = None,
    n_points: int = DEFAULT_CURVE_POINTS,
) -> tuple[ArmEvaluation, ...]:
    """Evaluate each arm's model on held-out users: curves of conversion and, if given, value."""
    matrix, labels, outcome, amounts = _check_inputs(features, arm, converted, value)
    prediction = model.predict(matrix)
    is_control = labels == model.control
    evaluations = []
    for column, name in enumerate(prediction.arms):
        pair = is_control | (labels == name)
        treated = labels[pair] == name
        conversion = uplift_curves(prediction.conversion[pair, column], treated, outcome[pair], n_points)
        value_curves = None
        if amounts is not None and prediction.value is not None:
            value_curves = uplift_curves(prediction.value[pair, column], treated, amounts[pair], n_points)
        evaluations.append(ArmEvaluation(arm=name, method=model.method, conversion=conversion, value=value_curves))
    return tuple(evaluations)


def evaluations_to_dict(evaluations: Sequence[ArmEvaluation]) -> dict[str, Mapping[str, Any]]:
    """Return the evaluations keyed by arm, as JSON-safe data for a report or chart."""
    return {evaluation.arm: evaluation.to_dict() for evaluation in evaluations}


def qini_coefficient_se(
    score: npt.ArrayLike,
    treated: npt.ArrayLike,
    outcome: npt.ArrayLike,
    *,
    n_points: int = DEFAULT_CURVE_POINTS,
    replicates: int = 200,
    seed: int = 0,
) -> float:
    """Return the bootstrap standard error of the Qini coefficient of ``uplift_curves`` on these users.

    Users are resampled with replacement within each arm (so every replicate has both arms and
    the arms keep their sizes), ``replicates`` times with a fixed seed; the standard deviation of
    the replicates' coefficients is the standard error.
    """
    ranking = np.asarray(score, dtype=float)
    is_treated = np.asarray(treated, dtype=bool)
    result = np.asarray(outcome, dtype=float)
    treated_rows, control_rows = np.flatnonzero(is_treated), np.flatnonzero(~is_treated)
    if len(treated_rows) == 0 or len(control_rows) == 0:
        raise ValueError("the curves need treated and control users")
    rng = np.random.default_rng(seed)
    coefficients = np.empty(replicates)
    for replicate in range(replicates):
        rows = np.concatenate(
            [
                rng.choice(treated_rows, len(treated_rows), replace=True),
                rng.choice(control_rows, len(control_rows), replace=True),
            ]
        )
        rng.shuffle(rows)  # ties in score are ranked in input order
        coefficients[replicate] = uplift_curves(
            ranking[rows], is_treated[rows], result[rows], n_points
        ).qini_coefficient
    return float(np.std(coefficients, ddof=1))
