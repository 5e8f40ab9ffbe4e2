"""Purchase propensity: the article's logistic regression on watching, purchasing and demographics.

Training rows come from two sources. Users with behaviour events get their counts from the
events before the observation end (the same SQL as the stored features) and their label from
a course purchase in the label window after it: of a target course when one is named, of any
course otherwise. Users without events but with a row of the article's
imported table bring its counts and its ``purchased_course`` label.

The fit is a scikit-learn pipeline (one-hot education and occupation with a stated reference
level dropped, scaled numbers, unpenalised logistic regression) on a stratified training
split; the metrics are measured on the held-out split. Coefficients are reported in original
units (per film, per course, per year of age) with standard errors from the Fisher
information, so they can be read as odds ratios and compared with known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ...models import ModelRun
from ..features import PURCHASE
from ..registry import model_run_save
from .common import (
    UNKNOWN_LEVEL,
    as_utc,
    category_levels,
    event_features,
    event_time_bounds,
    fetch_frame,
    json_safe,
    known_levels,
    numeric_columns,
    require,
    users_table,
    utc_series,
)

NUMERIC_FEATURES = ("watching_count", "purchasing_count", "age")
CATEGORICAL_FEATURES = ("education", "occupation")
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES
LABEL = "purchased_course"
DEFAULT_LABEL_WINDOW_DAYS = 28
TEST_SHARE = 0.25
RANDOM_STATE = 0
CALIBRATION_BINS = 10
# Fewer positive or negative labels than this cannot support thirteen coefficients.
MINIMUM_PER_CLASS = 20


@dataclass
class PropensityScorer:
    """Score users with a fitted propensity pipeline: score = probability of buying in the label window."""

    pipeline: Pipeline
    levels: dict[str, list[str]]
    reference_levels: dict[str, str]
    fields: tuple[str, ...] = field(default=FEATURES)

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the model inputs: numbers as floats, levels unseen in training scored as the reference."""
        inputs = pd.DataFrame(index=frame.index)
        for name in NUMERIC_FEATURES:
            inputs[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        for name in CATEGORICAL_FEATURES:
            inputs[name] = known_levels(frame[name], self.levels[name], self.reference_levels[name])
        return inputs

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Return each row's predicted probability of a purchase."""
        return self.pipeline.predict_proba(self.prepare(frame))[:, 1]

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Return the purchase probability of every user in the frame (features as of scoring time)."""
        if frame.empty:
            return pd.DataFrame({"score": pd.Series(dtype=float)}, index=frame.index)
        return pd.DataFrame({"score": self.probability(frame)}, index=frame.index)


@dataclass
class PropensityFit:
    """A fitted propensity model: the scorer to store, and the params and metrics of its run."""

    scorer: PropensityScorer
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_train: int


def _pipeline(levels: Mapping[str, list[str]], reference_levels: Mapping[str, str]) -> Pipeline:
    """Return the unfitted pipeline: median-imputed scaled numbers, one-hot levels without the reference."""
    numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categories = OneHotEncoder(
        categories=[levels[name] for name in CATEGORICAL_FEATURES],
        drop=[reference_levels[name] for name in CATEGORICAL_FEATURES],
        sparse_output=False,
        dtype=float,
    )
    columns = ColumnTransformer(
        [("numeric", numbers, list(NUMERIC_FEATURES)), ("category", categories, list(CATEGORICAL_FEATURES))]
    )
    # C=inf is the unpenalised maximum-likelihood fit the article describes (penalty=None is
    # deprecated); Newton steps reach the optimum to machine precision, so the standard
    # errors below are those of the actual maximum.
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=200, tol=1e-10)
    return Pipeline([("columns", columns), ("model", model)])


def _coefficients_in_original_units(pipeline: Pipeline) -> pd.Series:
    """Return intercept and coefficients per original unit (undoing the scaling of the numbers)."""
    columns: ColumnTransformer = pipeline.named_steps["columns"]
    scaler: StandardScaler = columns.named_transformers_["numeric"].named_steps["scale"]
    encoder: OneHotEncoder = columns.named_transformers_["category"]
    model: LogisticRegression = pipeline.named_steps["model"]
    scaled = model.coef_[0]
    n_numeric = len(NUMERIC_FEATURES)
    numeric = scaled[:n_numeric] / scaler.scale_
    intercept = model.intercept_[0] - float(np.sum(numeric * scaler.mean_))
    names = ["intercept", *NUMERIC_FEATURES, *encoder.get_feature_names_out(list(CATEGORICAL_FEATURES))]
    return pd.Series([intercept, *numeric, *scaled[n_numeric:]], index=names)


def _design_matrix(pipeline: Pipeline, inputs: pd.DataFrame) -> np.ndarray:
    """Return the design in original units: a column of ones, the raw numbers, the level dummies."""
    encoder: OneHotEncoder = pipeline.named_steps["columns"].named_transformers_["category"]
    numbers = inputs[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
    dummies = encoder.transform(inputs[list(CATEGORICAL_FEATURES)])
    return np.column_stack([np.ones(len(inputs)), numbers, dummies])


def _standard_errors(design: np.ndarray, fitted: np.ndarray, names: pd.Index) -> pd.Series:
    """Return standard errors from the inverse Fisher information X' W X at the fitted probabilities."""
    information = design.T @ (design * (fitted * (1.0 - fitted))[:, None])
    try:
        covariance = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        # A level without any buyer (or without any non-buyer) has no finite estimate.
        return pd.Series(np.nan, index=names)
    return pd.Series(np.sqrt(np.clip(np.diag(covariance), 0.0, None)), index=names)


def _calibration_table(labels: np.ndarray, predicted: np.ndarray) -> list[dict[str, float]]:
    """Return per decile of predicted probability: users, mean prediction and observed purchase rate."""
    deciles = pd.qcut(pd.Series(predicted).rank(method="first"), CALIBRATION_BINS, labels=False)
    table = (
        pd.DataFrame({"decile": deciles + 1, "predicted": predicted, "observed": labels})
        .groupby("decile")
        .agg(
            users=("observed", "size"),
            mean_predicted=("predicted", "mean"),
            observed_rate=("observed", "mean"),
            min_predicted=("predicted", "min"),
            max_predicted=("predicted", "max"),
        )
    )
    return table.reset_index().to_dict("records")


def propensity_split(
    rows: pd.DataFrame, *, test_share: float = TEST_SHARE, random_state: int = RANDOM_STATE
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Return the rows a fit uses (those with an age) and the positions of its stratified train and test split."""
    rows = rows[rows["age"].notna()]
    labels = rows[LABEL].astype(int).to_numpy()
    positives = int(labels.sum())
    require(
        min(positives, len(labels) - positives) >= MINIMUM_PER_CLASS,
        f"propensity needs at least {MINIMUM_PER_CLASS} buyers and non-buyers, got {positives} of {len(labels)}; "
        "load more behaviour or choose another --observation-end",
    )
    train, test = train_test_split(
        np.arange(len(rows)), test_size=test_share, stratify=labels, random_state=random_state
    )
    return rows, train, test


def propensity_fit(
    rows: pd.DataFrame,
    *,
    reference_levels: Mapping[str, str] | None = None,
    test_share: float = TEST_SHARE,
    random_state: int = RANDOM_STATE,
) -> PropensityFit:
    """Fit the propensity pipeline on labelled rows and measure it on a stratified held-out split.

    ``rows`` holds the FEATURES and ``purchased_course`` (0/1). Rows without an age are left
    out of the fit. ``reference_levels`` names the level of each categorical feature that the
    coefficients are contrasts with (where it occurs; else the most frequent level).
    """
    without_age = int(rows["age"].isna().sum())
    rows, train, test = propensity_split(rows, test_share=test_share, random_state=random_state)
    labels = rows[LABEL].astype(int).to_numpy()
    stated = reference_levels or {}
    levels, references = {}, {}
    for name in CATEGORICAL_FEATURES:
        levels[name], references[name] = category_levels(
            rows[name].fillna(UNKNOWN_LEVEL), stated_reference=stated.get(name)
        )
    scorer = PropensityScorer(pipeline=_pipeline(levels, references), levels=levels, reference_levels=references)
    inputs = scorer.prepare(rows)
    scorer.pipeline.fit(inputs.iloc[train], labels[train])

    coefficients = _coefficients_in_original_units(scorer.pipeline)
    fitted_train = scorer.pipeline.predict_proba(inputs.iloc[train])[:, 1]
    errors = _standard_errors(_design_matrix(scorer.pipeline, inputs.iloc[train]), fitted_train, coefficients.index)
    z = coefficients / errors
    predicted = scorer.pipeline.predict_proba(inputs.iloc[test])[:, 1]
    metrics: dict[str, Any] = {
        "n_test": len(test),
        "n_test_positive": int(labels[test].sum()),
        "rows_without_age_left_out": without_age,
        "base_rate": float(labels.mean()),
        "auc": roc_auc_score(labels[test], predicted),
        "accuracy": accuracy_score(labels[test], predicted >= 0.5),
        "log_loss": log_loss(labels[test], predicted, labels=[0, 1]),
        "brier": brier_score_loss(labels[test], predicted),
        "calibration": _calibration_table(labels[test], predicted),
        "coefficients": {
            name: {
                "coefficient": coefficients[name],
                "se": errors[name],
                "z": z[name],
                "p_value": 2.0 * stats.norm.sf(abs(z[name])),
                "odds_ratio": np.exp(coefficients[name]),
                "odds_ratio_ci95": [
                    np.exp(coefficients[name] - 1.96 * errors[name]),
                    np.exp(coefficients[name] + 1.96 * errors[name]),
                ],
            }
            for name in coefficients.index
        },
    }
    params = {
        "features": list(FEATURES),
        "numeric_features": list(NUMERIC_FEATURES),
        "levels": levels,
        "reference_levels": references,
        "coefficients": coefficients.to_dict(),
        "test_share": test_share,
        "random_state": random_state,
        "model": "logistic regression, unpenalised (C=inf), newton-cholesky; numbers median-imputed and scaled",
    }
    return PropensityFit(scorer=scorer, params=params, metrics=metrics, n_train=len(train))


def _label_users(*, start: datetime, end: datetime, target_course: str | None) -> set[int]:
    """Return the ids of users with a course purchase (of the target course, if named) in [start, end)."""
    sql = (
        f"SELECT DISTINCT user_id FROM analytics_behaviorevent WHERE kind = '{PURCHASE}' "
        "AND occurred_at >= %(start)s AND occurred_at < %(end)s"
    )
    params: dict[str, Any] = {"start": as_utc(start), "end": as_utc(end)}
    if target_course:
        sql += " AND item_id = %(target)s"
        params["target"] = target_course
    return set(fetch_frame(sql, params)["user_id"].tolist())


def propensity_rows(
    *, observation_end: datetime, label_window_days: int = DEFAULT_LABEL_WINDOW_DAYS, target_course: str | None = None
) -> pd.DataFrame:
    """Return the labelled training rows, indexed by user id, from events and from the imported table.

    Users with events are those signed up before the observation end (or, without a sign-up
    time, with an event before it); users with neither events nor an imported row but signed
    up before the observation end count too, with zero counts. ``source`` says which rows are
    which.
    """
    users = users_table()
    features = numeric_columns(
        event_features(as_of=observation_end, columns=["watching_count", "purchasing_count", "first_event_at"]),
        ["watching_count", "purchasing_count"],
    )
    observation_end = as_utc(observation_end)
    label_end = observation_end + timedelta(days=label_window_days)
    buyers = _label_users(start=observation_end, end=label_end, target_course=target_course)

    first_event = utc_series(features["first_event_at"]).reindex(users.index)
    joined = users["signed_up_at"].fillna(first_event)
    from_events = (users["imported_has_events"] | ~users["has_imported"]) & (joined < pd.Timestamp(observation_end))
    event_rows = pd.DataFrame(
        {
            "watching_count": features["watching_count"].reindex(users.index).fillna(0.0),
            "purchasing_count": features["purchasing_count"].reindex(users.index).fillna(0.0),
            LABEL: users.index.isin(buyers).astype(int),
            "source": "events",
        },
        index=users.index,
    )[from_events.to_numpy()]
    imported = users["has_imported"] & ~users["imported_has_events"] & users["imported_purchased_course"].notna()
    imported_rows = pd.DataFrame(
        {
            "watching_count": users["imported_watching_count"],
            "purchasing_count": users["imported_purchasing_count"],
            LABEL: users["imported_purchased_course"].fillna(0).astype(int),
            "source": "imported",
        },
        index=users.index,
    )[imported.to_numpy()]
    rows = pd.concat([event_rows, imported_rows])
    return rows.join(users.loc[rows.index, ["age", "education", "occupation"]])


def train_propensity(
    *,
    observation_end: datetime | None = None,
    activate: bool = True,
    label_window_days: int | None = None,
    target_course: str | None = None,
    reference_levels: Mapping[str, str] | None = None,
) -> ModelRun:
    """Fit purchase propensity on the database and store it as the next model run.

    Defaults: the label window (28 days) before now, a purchase of any course as the label,
    the most frequent education and occupation as the reference levels.
    """
    window = label_window_days or DEFAULT_LABEL_WINDOW_DAYS
    end = as_utc(observation_end) if observation_end else timezone.now() - timedelta(days=window)
    label_end = end + timedelta(days=window)
    require(
        label_end <= timezone.now(),
        f"the label window ends {label_end:%Y-%m-%d %H:%M} UTC, in the future; "
        "choose an --observation-end at least the label window before now",
        code="invalid",
    )
    rows = propensity_rows(observation_end=end, label_window_days=window, target_course=target_course)
    fit = propensity_fit(rows, reference_levels=reference_levels)
    first_event, _ = event_time_bounds()
    params = fit.params | {
        "observation_end": end,
        "label_window_days": window,
        "label_window_end": label_end,
        "target_course": target_course,
        "label": f"a purchase of {target_course or 'any course'} in the label window",
        "rows_by_source": rows["source"].value_counts().to_dict(),
    }
    return model_run_save(
        model=ModelRun.Model.PROPENSITY,
        params=json_safe(params),
        metrics=json_safe(fit.metrics),
        n_train=fit.n_train,
        artifact=fit.scorer,
        data_start=first_event,
        data_end=end,
        activate=activate,
    )
