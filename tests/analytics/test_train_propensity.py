"""Propensity training recovers the planted logistic regression and scores users with it.

The statistical checks fit on rows built from the generator's events exactly as the planted
truth defines them (60,000 users); the training service, its SQL, the stored scorer and the
batch scoring run on a small demo world loaded into the database.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from django.utils import timezone

from analytics.models import EndUser, ImportedBehavior, ModelRun, UserScore
from analytics.selectors import user_frame
from analytics.services.registry import model_run_artifact
from analytics.services.scoring import score_chunk, score_chunks
from analytics.services.training.propensity import (
    CALIBRATION_BINS,
    FEATURES,
    propensity_fit,
    propensity_rows,
    train_propensity,
)
from crossmkt_site.errors import ApplicationError
from demo.comparison import propensity_compare, truth_time
from demo.selectors import planted_users
from demo.services.training import demo_model_train
from demo.world.generator import iter_world
from demo.world.truth import planted_truth
from tests.demo.support import loaded_truth, run_against_truth
from tests.factories import BehaviorEventFactory, EndUserFactory, PartnerFactory

SEED = 2026
RECOVERY_USERS = 60_000
DATABASE_USERS = 12_000
PLANTED = planted_truth(n_users=RECOVERY_USERS, seed=SEED)["propensity"]
OBSERVATION_END = pd.Timestamp(PLANTED["observation_end"])
LABEL_WINDOW_END = pd.Timestamp(PLANTED["label_window_end"])


def _rows_as_the_truth_defines(users: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    before = events[events["occurred_at"] < OBSERVATION_END]
    bought = events[
        (events["kind"] == "course_purchase")
        & (events["item_id"] == PLANTED["target_course"])
        & (events["occurred_at"] >= OBSERVATION_END)
        & (events["occurred_at"] < LABEL_WINDOW_END)
    ]
    rows = users.set_index("user_id")[["age", "education", "occupation"]].copy()
    for feature, kind in (("watching_count", "film_watch"), ("purchasing_count", "course_purchase")):
        rows[feature] = rows.index.map(before.loc[before["kind"] == kind, "user_id"].value_counts()).fillna(0)
    rows["purchased_course"] = rows.index.isin(bought["user_id"]).astype(int)
    rows["true_probability"] = users["latent_purchase_probability"].to_numpy()
    return rows


def _generator_rows(n_users: int) -> pd.DataFrame:
    return pd.concat(
        [_rows_as_the_truth_defines(chunk.users, chunk.events) for chunk in iter_world(n_users=n_users, seed=SEED)]
    )


@pytest.fixture(scope="module")
def recovery():
    rows = _generator_rows(RECOVERY_USERS)
    fit = propensity_fit(rows, reference_levels=PLANTED["reference_levels"])
    return rows, fit


@pytest.fixture(scope="module")
def recovered(recovery):
    rows, fit = recovery
    return propensity_compare(params=fit.params, metrics=fit.metrics, scorer=fit.scorer, rows=rows, planted=PLANTED)


# --- the fit on the generator's rows --------------------------------------------------------


def test_every_planted_coefficient_is_recovered_within_three_standard_errors(recovered):
    # when
    truth = recovered

    # then
    assert set(truth["coefficients"]) == set(PLANTED["coefficients"])
    z_scores = {name: row["z"] for name, row in truth["coefficients"].items()}
    assert all(abs(z) < 3 for z in z_scores.values()), z_scores
    assert truth["all_within_3_se"]


def test_the_standard_errors_are_those_of_the_fisher_information_at_the_true_coefficients(recovery):
    # given: the expected information of the planted model on the same users, built independently
    rows, fit = recovery
    names = list(PLANTED["coefficients"])
    design = np.column_stack(
        [np.ones(len(rows))]
        + [
            rows[name].to_numpy(float)
            if name in ("watching_count", "purchasing_count", "age")
            else (rows[name.split("_", 1)[0]] == name.split("_", 1)[1]).to_numpy(float)
            for name in names[1:]
        ]
    )
    p = rows["true_probability"].to_numpy()
    expected_errors = np.sqrt(np.diag(np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))))
    # the fit uses the training split only
    expected_errors *= np.sqrt(len(rows) / fit.n_train)

    # when
    errors = np.array([fit.metrics["coefficients"][name]["se"] for name in names])

    # then: the same to within the sampling noise of the fitted probabilities
    np.testing.assert_allclose(errors, expected_errors, rtol=0.1)


def test_the_auc_is_within_0_01_of_the_auc_of_the_true_probabilities_on_the_same_test_users(recovery, recovered):
    _, fit = recovery
    truth = recovered

    assert truth["n_test_with_truth"] == fit.metrics["n_test"] == RECOVERY_USERS // 4
    assert abs(truth["auc_model_same_users"] - truth["auc_true_probabilities"]) < 0.01
    assert truth["auc_model_same_users"] == pytest.approx(fit.metrics["auc"])
    assert 0.75 < fit.metrics["auc"] < 0.95


def test_coefficients_in_original_units_reproduce_the_pipelines_log_odds(recovery):
    # given
    rows, fit = recovery
    coefficients = fit.params["coefficients"]
    sample = rows.sample(500, random_state=1)

    # when: log-odds by hand, per film, per course, per year, per level
    by_hand = coefficients["intercept"] + sum(
        coefficients[name] * sample[name] for name in ("watching_count", "purchasing_count", "age")
    )
    for column in ("education", "occupation"):
        by_hand += sample[column].map(
            {level: coefficients.get(f"{column}_{level}", 0.0) for level in fit.params["levels"][column]}
        )
    probability = fit.scorer.probability(sample)

    # then
    np.testing.assert_allclose(1 / (1 + np.exp(-by_hand)), probability, rtol=1e-9)
    per_film = fit.metrics["coefficients"]["watching_count"]
    assert per_film["odds_ratio"] == pytest.approx(np.exp(coefficients["watching_count"]))
    assert per_film["odds_ratio_ci95"][0] < per_film["odds_ratio"] < per_film["odds_ratio_ci95"][1]


def test_the_reference_levels_are_the_stated_ones_and_have_no_coefficient(recovery):
    _, fit = recovery

    assert fit.params["reference_levels"] == PLANTED["reference_levels"]
    assert "education_本科" not in fit.params["coefficients"]
    assert "occupation_公司职员" not in fit.params["coefficients"]


def test_without_a_stated_reference_the_most_frequent_level_is_the_reference(recovery):
    rows, _ = recovery
    subset = rows.iloc[:20_000]

    fit = propensity_fit(subset)

    assert fit.params["reference_levels"] == {
        "education": subset["education"].mode()[0],
        "occupation": subset["occupation"].mode()[0],
    }
    assert "truth" not in fit.metrics


def test_the_calibration_table_has_ten_deciles_of_the_test_users_and_follows_the_observed_rate(recovery):
    _, fit = recovery
    table = pd.DataFrame(fit.metrics["calibration"])

    assert len(table) == CALIBRATION_BINS and table["users"].sum() == fit.metrics["n_test"]
    assert table["mean_predicted"].is_monotonic_increasing
    # calibrated: each decile's observed rate is within four binomial standard errors of its prediction
    spread = np.sqrt(table["mean_predicted"] * (1 - table["mean_predicted"]) / table["users"])
    assert ((table["observed_rate"] - table["mean_predicted"]).abs() < 4 * spread).all()
    assert 0 < fit.metrics["brier"] < fit.metrics["base_rate"] * (1 - fit.metrics["base_rate"])


def test_the_scorer_scores_unseen_levels_as_the_reference_and_missing_ages_as_the_median(recovery):
    # given
    rows, fit = recovery
    scorer = pickle.loads(pickle.dumps(fit.scorer))
    user = rows.iloc[[0]][list(FEATURES)]
    reference = user.assign(education="本科", occupation="公司职员")
    unseen = user.assign(education="职业学校", occupation=None)
    median_age = user.assign(age=rows["age"].median())

    # when
    scores = {
        name: scorer.score(frame, as_of=timezone.now())["score"].iloc[0]
        for name, frame in (
            ("reference", reference),
            ("unseen", unseen),
            ("median", median_age),
            ("missing", user.assign(age=np.nan)),
        )
    }

    # then
    assert scores["unseen"] == pytest.approx(scores["reference"])
    assert scores["missing"] == pytest.approx(scores["median"], rel=1e-3)
    assert 0 < scores["reference"] < 1


def test_too_few_buyers_is_a_clear_error(recovery):
    rows, _ = recovery
    almost_nobody = rows.assign(purchased_course=0)
    almost_nobody.iloc[:5, almost_nobody.columns.get_loc("purchased_course")] = 1

    with pytest.raises(ApplicationError, match="at least 20 buyers"):
        propensity_fit(almost_nobody)


# --- the service on the database --------------------------------------------------------


@pytest.fixture
def propensity_run(demo_world, db) -> ModelRun:
    return demo_model_train(model="propensity", truth=loaded_truth())


def test_imported_rows_stand_in_for_users_without_events(db):
    # given: two users known only from the article's table, one with events as well
    partner = PartnerFactory.create()
    imported_only = EndUserFactory.create(home_partner=partner, age=30, education="硕士", occupation="教师")
    with_events = EndUserFactory.create(
        home_partner=partner,
        age=40,
        education="本科",
        occupation="教师",
        signed_up_at=timezone.now() - timedelta(days=400),
    )
    ImportedBehavior.objects.create(user=imported_only, watching_count=12, purchasing_count=3, purchased_course=True)
    ImportedBehavior.objects.create(user=with_events, watching_count=99, purchasing_count=99, purchased_course=True)
    observation_end = timezone.now() - timedelta(days=60)
    BehaviorEventFactory.create(
        user=with_events, partner=partner, kind="film_watch", occurred_at=observation_end - timedelta(days=3)
    )

    # when
    rows = propensity_rows(observation_end=observation_end)

    # then
    assert rows.loc[imported_only.pk, ["watching_count", "purchasing_count", "purchased_course"]].tolist() == [12, 3, 1]
    assert rows.loc[imported_only.pk, "source"] == "imported"
    assert rows.loc[with_events.pk, ["watching_count", "purchasing_count", "purchased_course"]].tolist() == [1, 0, 0]
    assert rows.loc[with_events.pk, "source"] == "events"


def test_training_before_anyone_joined_is_a_clear_error(db):
    with pytest.raises(ApplicationError, match="at least 20 buyers and non-buyers, got 0 of 0"):
        train_propensity(observation_end=datetime(2001, 1, 1, tzinfo=UTC))


def test_a_label_window_that_has_not_ended_is_refused(db):
    with pytest.raises(ApplicationError, match="in the future"):
        train_propensity(observation_end=timezone.now() - timedelta(days=3))


def test_the_training_rows_in_the_database_are_the_truths_definitions(demo_world, db):
    # given
    expected = _generator_rows(DATABASE_USERS)
    external_ids = dict(EndUser.objects.values_list("pk", "external_id"))

    # when
    rows = propensity_rows(
        observation_end=truth_time(PLANTED["observation_end"]), target_course=PLANTED["target_course"]
    )
    true_probability = planted_users()["purchase_probability"].reindex(rows.index)

    # then
    rows.index = rows.index.map(external_ids)
    columns = ["watching_count", "purchasing_count", "age", "education", "occupation", "purchased_course"]
    pd.testing.assert_frame_equal(rows.loc[expected.index, columns], expected[columns], check_dtype=False)
    true_probability.index = true_probability.index.map(external_ids)
    np.testing.assert_allclose(true_probability.loc[expected.index], expected["true_probability"])


def test_training_on_the_demo_world_stores_an_active_run_that_recovers_the_truth(propensity_run):
    run = propensity_run

    assert run.is_active and run.model == "propensity" and run.version == 1
    assert run.data_end == truth_time(PLANTED["observation_end"])
    assert run.params["target_course"] == PLANTED["target_course"] and run.params["label_window_days"] == 28
    assert run.params["rows_by_source"] == {"events": DATABASE_USERS}
    assert run.n_train == DATABASE_USERS - run.metrics["n_test"]
    json.dumps({"params": run.params, "metrics": run.metrics}, allow_nan=False)
    assert "truth" not in run.metrics
    truth = run_against_truth(run)
    assert truth["all_within_3_se"], {name: row["z"] for name, row in truth["coefficients"].items()}
    assert abs(truth["auc_gap"]) < 0.01


def test_batch_scoring_writes_each_users_probability_from_the_stored_run(propensity_run):
    # given
    scorer = model_run_artifact(propensity_run)
    now = timezone.now()

    # when
    scored = sum(
        score_chunk(model="propensity", id_range=chunk, as_of=now) for chunk in score_chunks(chunk_users=5_000)
    )

    # then
    assert scored == UserScore.objects.filter(model="propensity").count() == DATABASE_USERS
    stored = pd.Series(dict(UserScore.objects.filter(model="propensity").values_list("user_id", "score")))
    expected = scorer.probability(user_frame(scorer.fields, as_of=now))
    np.testing.assert_allclose(stored.sort_index().to_numpy(), expected, rtol=1e-12)
