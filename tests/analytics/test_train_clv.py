"""Lifetime-value training recovers the demo world's purchase process and judges both models on the holdout.

The parameter recovery runs on the generator's events directly (200,000 users, about 74,000
buyers: there every parameter's standard error is at most a third of 10% of its planted
value, so "within 10%" is a three-standard-error statement, not luck); the training service,
its stored scorer and the batch scoring run on a small demo world loaded into the database.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from django.db.models.functions import TruncDate

from analytics.models import BehaviorEvent, ModelRun, UserScore
from analytics.services.registry import model_run_artifact
from analytics.services.scoring import score_chunk, score_chunks
from analytics.services.training.clv import (
    FITTED_PARAMETERS,
    NO_PURCHASE_LABEL,
    BgNbdClvScorer,
    clv_models_fit,
    summarise_purchases,
    train_clv,
)
from analytics.stats.bgnbd import BgNbdParameters, GammaGammaParameters
from crossmkt_site.errors import ApplicationError
from demo.comparison import clv_compare
from demo.services.training import demo_excluded_items, demo_model_train
from demo.world.generator import iter_world
from demo.world.truth import planted_truth
from tests.demo.support import loaded_truth, run_against_truth

SEED = 2026
RECOVERY_USERS = 200_000
DATABASE_USERS = 4_000
SHANGHAI = ZoneInfo("Asia/Shanghai")
TRUTH = planted_truth(n_users=RECOVERY_USERS, seed=SEED)
OBSERVATION_END = datetime.fromisoformat(TRUTH["purchase_process"]["fitting_convention"]["calibration_end"])
HOLDOUT_END = datetime.fromisoformat(TRUTH["world"]["end"])


def _generator_purchases(n_users: int) -> pd.DataFrame:
    excluded = demo_excluded_items(TRUTH)
    frames = []
    for chunk in iter_world(n_users=n_users, seed=SEED):
        events = chunk.events
        purchases = events[(events["kind"] == "course_purchase") & ~events["item_id"].isin(excluded)]
        frames.append(
            pd.DataFrame(
                {
                    "user_id": purchases["user_id"].str[1:].astype("int64").to_numpy(),
                    "occurred_at": purchases["occurred_at"].to_numpy(),
                    "amount": purchases["amount"].astype(float).to_numpy(),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    return frame


@pytest.fixture(scope="module")
def recovery_fit():
    return clv_models_fit(
        _generator_purchases(RECOVERY_USERS),
        observation_end=OBSERVATION_END,
        holdout_end=HOLDOUT_END,
        time_zone="Asia/Shanghai",
        excluded_items=demo_excluded_items(TRUTH),
    )


# --- the planted truth is recovered --------------------------------------------------------------


@pytest.mark.slow
def test_bgnbd_and_gamma_gamma_recover_every_planted_parameter_within_ten_percent(recovery_fit):
    # when
    comparison = clv_compare(params=recovery_fit.params, truth=TRUTH)

    # then
    rows = comparison["coefficients"]
    assert set(rows) == set(FITTED_PARAMETERS)
    assert comparison["within_10_percent"], {name: round(row["relative_error"], 4) for name, row in rows.items()}
    assert comparison["all_within_3_se"], {name: round(row["z"], 2) for name, row in rows.items()}
    # the sample is large enough for 10% to be at least three standard errors for every parameter
    assert all(3 * row["se"] <= 0.10 * row["true"] for row in rows.values())


@pytest.mark.slow
def test_bgnbd_predicts_the_holdout_purchases_better_than_the_markov_chain(recovery_fit):
    holdout = recovery_fit.metrics["holdout"]
    bgnbd, markov = holdout["bgnbd"], holdout["markov"]

    assert holdout["weeks"] == pytest.approx(8.0)
    assert holdout["n_customers"] == recovery_fit.n_customers
    # the generating process predicts the population's total within a few percent
    assert bgnbd["purchases"]["predicted_total"] == pytest.approx(bgnbd["purchases"]["actual_total"], rel=0.05)
    assert bgnbd["spend"]["predicted_total"] == pytest.approx(bgnbd["spend"]["actual_total"], rel=0.05)
    # and each customer's purchases better than the monthly states do
    for outcome in ("purchases", "spend"):
        assert bgnbd[outcome]["mae"] < markov[outcome]["mae"]
        assert bgnbd[outcome]["rmse"] < markov[outcome]["rmse"]
        assert bgnbd[outcome]["correlation"] > markov[outcome]["correlation"] > 0


@pytest.mark.slow
def test_the_markov_chain_follows_the_three_month_state_rules(recovery_fit):
    markov = recovery_fit.params["markov"]
    counts = np.array(markov["transition_counts"])
    matrix = np.array(markov["transition_matrix"])
    active, lapsed, churned = (markov["states"].index(name) for name in ("active", "lapsed", "churned"))

    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-5)  # stored to six decimals
    # a month without purchase can only lapse, and a churned customer who buys is active again
    assert counts[active, churned] == 0 and counts[churned, lapsed] == 0
    assert counts[churned, active] > 0 and counts[lapsed, churned] > 0
    # only an active month earns money
    assert markov["monthly_spend_per_state"][active] > 0
    assert markov["monthly_spend_per_state"][lapsed] == markov["monthly_spend_per_state"][churned] == 0


# --- the fitting conventions ---------------------------------------------------------------------


def _at(day: int, hour: int, minute: int = 0) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI)).tz_convert("UTC")


def test_purchases_on_one_shanghai_day_count_once_and_t_runs_from_the_first_purchase():
    # given: 23:30 on the 4th and 07:00 on the 5th are one UTC day but two Shanghai days
    purchases = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1],
            "occurred_at": [_at(4, 9), _at(4, 23, 30), _at(5, 7), _at(9, 12), _at(20, 12)],
            "amount": [100.0, 20.0, 50.0, 80.0, 999.0],
        }
    )

    # when: observed until 08:00 on the 18th; the purchase on the 20th is after it
    summary = summarise_purchases(
        purchases, observation_end=datetime(2026, 3, 18, 8, tzinfo=SHANGHAI), time_zone="Asia/Shanghai"
    )

    # then: days 4, 5 and 9: two repeats, the last five days after the first, observed for two weeks
    assert summary.frequency.tolist() == [2.0]
    assert summary.recency.tolist() == [5 / 7]
    assert summary.age.tolist() == [14 / 7]
    assert summary.average_repeat_spend is not None
    assert summary.average_repeat_spend.tolist() == [(50.0 + 80.0) / 2]


PLANTED_SCORER = BgNbdClvScorer(
    purchases=BgNbdParameters(**TRUTH["purchase_process"]["parameters"]),
    spend=GammaGammaParameters(**TRUTH["purchase_process"]["spend"]["parameters"]),
    excluded_items=(),
    time_zone="Asia/Shanghai",
    margin_fraction=1.0,
    annual_discount_rate=0.1,
    horizon_weeks=52,
    value_band_edges=(100.0, 500.0),
)


def test_a_steady_recent_buyer_is_worth_more_than_one_who_stopped_and_a_non_buyer_gets_no_value():
    # given: user 1 bought every two weeks until now, user 2 as often but stopped in January, user 3 never bought
    as_of = datetime(2026, 6, 1, 12, tzinfo=SHANGHAI)
    steady = pd.date_range("2026-01-05 12:00", "2026-05-25 12:00", freq="14D", tz=SHANGHAI)
    stopped = pd.date_range("2025-11-03 12:00", "2026-01-26 12:00", freq="14D", tz=SHANGHAI)
    purchases = pd.DataFrame(
        {
            "user_id": [1] * len(steady) + [2] * len(stopped),
            "occurred_at": pd.DatetimeIndex([*steady, *stopped]).tz_convert("UTC"),
            "amount": 150.0,
        }
    )

    # when
    scores = PLANTED_SCORER.score_purchases(purchases, index=pd.Index([1, 2, 3]), as_of=as_of)

    # then
    assert scores.loc[1, "score"] > 0.9 > scores.loc[2, "score"]
    assert scores.loc[1, "value"] > 3 * scores.loc[2, "value"] > 0
    assert scores.loc[1, "label"] == "high"
    assert np.isnan(scores.loc[3, "score"]) and np.isnan(scores.loc[3, "value"])
    assert scores.loc[3, "label"] == NO_PURCHASE_LABEL


# --- the service on a demo world in the database -------------------------------------------------


@pytest.fixture
def clv_run(demo_world, db) -> ModelRun:
    return demo_model_train(model="clv", truth=loaded_truth())


def test_training_on_the_demo_world_stores_an_active_run_with_the_fitted_parameters(clv_run):
    # then
    assert clv_run.is_active and clv_run.model == "clv" and clv_run.version == 1
    assert clv_run.data_end == OBSERVATION_END
    assert set(FITTED_PARAMETERS) <= set(clv_run.params)
    assert all(clv_run.params[name] > 0 for name in FITTED_PARAMETERS)
    assert clv_run.params["excluded_items"] == [TRUTH["propensity"]["target_course"]]
    assert clv_run.n_train == clv_run.metrics["n_customers"] > 0
    json.dumps({"params": clv_run.params, "metrics": clv_run.metrics}, allow_nan=False)


def test_the_demo_world_fit_agrees_with_the_planted_parameters_within_its_standard_errors(clv_run):
    truth = run_against_truth(clv_run)["coefficients"]

    assert set(truth) == set(FITTED_PARAMETERS)
    # a small world gives wide errors; the 10% check needs the large world above
    assert all(abs(row["z"]) < 4 for row in truth.values()), {name: row["z"] for name, row in truth.items()}


def test_the_holdout_counts_purchase_days_after_the_observation_end_without_the_target_course(clv_run):
    # given: the customers' purchase days in the holdout, counted by the database
    holdout = clv_run.metrics["holdout"]
    customers = BehaviorEvent.objects.filter(kind="course_purchase", occurred_at__lt=OBSERVATION_END).values("user_id")
    purchase_days = (
        BehaviorEvent.objects.filter(
            kind="course_purchase", user_id__in=customers, occurred_at__gte=OBSERVATION_END, occurred_at__lt=HOLDOUT_END
        )
        .exclude(item_id=TRUTH["propensity"]["target_course"])
        .annotate(day=TruncDate("occurred_at", tzinfo=SHANGHAI))
        .values("user_id", "day")
        .distinct()
        .count()
    )

    # then
    assert holdout["compared"] and holdout["weeks"] == pytest.approx(8.0)
    actual = {model: holdout[model]["purchases"]["actual_total"] for model in ("bgnbd", "markov")}
    assert actual == {"bgnbd": purchase_days, "markov": purchase_days}
    assert holdout["bgnbd"]["purchases"]["mae"] < holdout["markov"]["purchases"]["mae"]


def test_scoring_with_the_run_gives_every_user_one_row_and_buyers_a_value_in_cny(clv_run):
    # when
    scored = sum(score_chunk(model="clv", id_range=id_range, as_of=HOLDOUT_END) for id_range in score_chunks())

    # then
    rows = UserScore.objects.filter(model="clv", run=clv_run)
    buyers = (
        BehaviorEvent.objects.filter(kind="course_purchase", occurred_at__lt=HOLDOUT_END)
        .exclude(item_id=TRUTH["propensity"]["target_course"])
        .values("user_id")
        .distinct()
        .count()
    )
    assert scored == rows.count() == DATABASE_USERS
    assert rows.filter(value__isnull=False).count() == rows.filter(score__gt=0).count() == buyers
    assert rows.filter(label=NO_PURCHASE_LABEL).count() == DATABASE_USERS - buyers
    valued = rows.filter(value__isnull=False).first()
    assert valued is not None
    value = valued.value
    assert isinstance(value, Decimal) and value == value.quantize(Decimal("0.01")) and value > 0
    assert set(rows.exclude(label=NO_PURCHASE_LABEL).values_list("label", flat=True)) == {"low", "medium", "high"}


def test_the_stored_scorer_is_the_fitted_model(clv_run):
    scorer = model_run_artifact(clv_run)

    assert isinstance(scorer, BgNbdClvScorer)
    assert scorer.purchases.r == clv_run.params["r"] and scorer.spend.v == clv_run.params["v"]


def test_a_run_trained_without_activation_leaves_the_active_one(clv_run):
    candidate = train_clv(activate=False, observation_end=datetime(2026, 8, 1, tzinfo=SHANGHAI))

    assert candidate.version == 2 and not candidate.is_active
    assert ModelRun.objects.get(model="clv", is_active=True).pk == clv_run.pk
    assert candidate.params["r"] != clv_run.params["r"]


def test_training_without_purchases_says_what_to_do(demo_world, db):
    BehaviorEvent.objects.filter(kind="course_purchase").delete()

    with pytest.raises(ApplicationError, match=r"no course purchases before .*observation-end"):
        train_clv()
