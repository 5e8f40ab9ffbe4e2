"""Churn training recovers the planted Cox model and scores current members with it.

The statistical checks fit on membership spells built from the generator's events (60,000
users, about 19,000 spells) by the same function the service uses; the training service, its
SQL, the stored scorer and the batch scoring run on a small demo world loaded into the database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from django.utils import timezone
from lifelines import CoxPHFitter
from lifelines.statistics import proportional_hazard_test

from analytics.models import BehaviorEvent, EndUser, ModelRun, UserScore
from analytics.selectors import CHURN_BANDS, user_frame
from analytics.services.registry import model_run_artifact
from analytics.services.scoring import score_chunk, score_chunks
from analytics.services.training import TRAINERS
from analytics.services.training.churn import (
    CHANNEL,
    CHURN_BAND_THRESHOLDS,
    SURVIVAL_GRID_DAYS,
    churn_fit,
    membership_events,
    membership_spells,
    proportional_hazards_test,
)
from crossmkt_site.errors import ApplicationError
from demo.comparison import churn_compare, truth_time
from demo.services.training import demo_model_train
from demo.world.catalog import demo_catalog
from demo.world.generator import iter_world
from demo.world.truth import planted_truth
from tests.demo.support import loaded_truth, run_against_truth

SEED = 2026
RECOVERY_USERS = 60_000
DATABASE_USERS = 8_000
TRUTH = planted_truth(n_users=RECOVERY_USERS, seed=SEED)
PLANTED = TRUTH["churn"]
WORLD_END = pd.Timestamp(TRUTH["world"]["end"])
LOOKBACK = pd.Timedelta(days=14)
MEMBERSHIP_KINDS = ["membership_start", "membership_cancel", "activity_join"]


def _generator_events(n_users: int) -> tuple[pd.DataFrame, pd.Series]:
    """Return the membership and activity events of a generated world and each user's channel."""
    events, channels = [], []
    for chunk in iter_world(n_users=n_users, seed=SEED):
        kept = chunk.events[chunk.events["kind"].isin(MEMBERSHIP_KINDS)]
        events.append(kept.assign(amount=kept["amount"].astype(float)))
        channels.append(chunk.users.set_index("user_id")[CHANNEL])
    return pd.concat(events, ignore_index=True), pd.concat(channels)


def _with_channel(spells: pd.DataFrame, channels: pd.Series) -> pd.DataFrame:
    return spells.assign(**{CHANNEL: spells["user_id"].map(channels).to_numpy()})


@pytest.fixture(scope="module")
def generated():
    events, channels = _generator_events(RECOVERY_USERS)
    spells = _with_channel(membership_spells(events, data_end=WORLD_END), channels)
    return events, channels, spells


@pytest.fixture(scope="module")
def recovery(generated):
    _, _, spells = generated
    return churn_fit(spells, reference_level=PLANTED["reference_levels"][CHANNEL])


def _reference_table(spells: pd.DataFrame) -> pd.DataFrame:
    """Build the Cox table by hand, with the truth's levels and reference."""
    table = spells[["duration_days", "cancelled", "discount_depth", "joined_activity_14d"]].astype(float)
    for level in PLANTED["levels"][CHANNEL]:
        if level != PLANTED["reference_levels"][CHANNEL]:
            table[f"{CHANNEL}_{level}"] = (spells[CHANNEL] == level).astype(float)
    return table.reset_index(drop=True)


# --- spells as the truth defines them ---------------------------------------------------


def test_spells_follow_the_truths_definition(generated):
    # given: the truth's definition, computed independently with the catalog's list prices
    events, _, spells = generated
    list_price = {plan.plan_id: float(plan.list_price) for plan in demo_catalog().membership_plans}
    starts = events[events["kind"] == "membership_start"]
    cancels = events.loc[events["kind"] == "membership_cancel", ["user_id", "occurred_at"]]
    joins = events.loc[events["kind"] == "activity_join", ["user_id", "occurred_at"]].merge(
        starts[["user_id", "occurred_at"]], on="user_id", suffixes=("_join", "_start")
    )
    recent = joins[
        (joins["occurred_at_join"] >= joins["occurred_at_start"] - LOOKBACK)
        & (joins["occurred_at_join"] < joins["occurred_at_start"])
    ]["user_id"]
    ended = starts["user_id"].map(cancels.set_index("user_id")["occurred_at"])

    # when
    by_user = spells.set_index("user_id").loc[starts["user_id"]]

    # then
    assert len(spells) == len(starts)
    np.testing.assert_allclose(
        by_user["duration_days"], (ended.fillna(WORLD_END) - starts["occurred_at"]).dt.total_seconds() / 86_400
    )
    np.testing.assert_array_equal(by_user["cancelled"], ended.notna().astype(int))
    paid_share = starts["amount"].to_numpy() / starts["item_id"].map(list_price).to_numpy()
    np.testing.assert_allclose(by_user["discount_depth"], 1 - paid_share, atol=1e-12)
    np.testing.assert_array_equal(by_user["joined_activity_14d"], starts["user_id"].isin(recent).astype(int))


def _at(day: int, hour: int = 0) -> pd.Timestamp:
    return pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(days=day, hours=hour)


def test_a_spell_ends_at_the_next_cancel_of_the_same_plan_and_counts_only_joins_in_the_14_days_before():
    # given
    events = pd.DataFrame(
        [
            ("a", "membership_start", "vip", 30.0, _at(0)),
            ("a", "membership_cancel", "other-plan", 0.0, _at(5)),
            ("a", "membership_cancel", "vip", 0.0, _at(10)),
            ("a", "activity_join", "act", 0.0, _at(-15)),
            ("b", "membership_start", "vip", 15.0, _at(20)),
            ("b", "activity_join", "act", 0.0, _at(7)),
            ("c", "membership_cancel", "vip", 0.0, _at(1)),
            ("c", "membership_start", "vip", 21.0, _at(2)),
            ("c", "membership_cancel", "vip", 0.0, _at(90)),
        ],
        columns=["user_id", "kind", "item_id", "amount", "occurred_at"],
    )

    # when: the data end falls before c's cancel
    spells = membership_spells(events, data_end=_at(40)).set_index("user_id")

    # then
    assert spells.loc["a", ["duration_days", "cancelled", "joined_activity_14d"]].tolist() == [10, 1, 0]
    assert spells.loc["b", ["duration_days", "cancelled", "joined_activity_14d"]].tolist() == [20, 0, 1]
    assert spells.loc["c", ["duration_days", "cancelled"]].tolist() == [38, 0]
    assert spells["discount_depth"].round(6).to_dict() == {"a": 0.0, "b": 0.5, "c": 0.3}


# --- the fit on the generator's spells ---------------------------------------------------


def test_every_planted_cox_coefficient_is_recovered_within_three_standard_errors(recovery):
    truth = churn_compare(metrics=recovery.metrics, planted=PLANTED)

    assert set(truth["coefficients"]) == set(PLANTED["coefficients"])
    z_scores = {name: row["z"] for name, row in truth["coefficients"].items()}
    assert all(abs(z) < 3 for z in z_scores.values()), z_scores
    assert truth["all_within_3_se"]


def test_hazard_ratios_and_concordance_are_lifelines_on_the_truths_table(generated, recovery):
    # given
    _, _, spells = generated
    reference = CoxPHFitter().fit(_reference_table(spells), "duration_days", "cancelled")

    # when
    ratios = recovery.metrics["hazard_ratios"]

    # then
    for name, row in ratios.items():
        assert row["hazard_ratio"] == pytest.approx(np.exp(reference.params_[name]), rel=1e-6)
        assert row["ci95"][0] < row["hazard_ratio"] < row["ci95"][1]
    assert recovery.metrics["concordance"] == pytest.approx(reference.concordance_index_)
    assert recovery.n_train == len(spells)


def test_the_proportional_hazards_check_finds_nothing_wrong_with_a_proportional_model(recovery):
    check = recovery.metrics["proportional_hazards_test"]

    assert set(check["covariates"]) == set(PLANTED["coefficients"])
    assert check["violations_at_1_percent"] == []


def test_the_proportional_hazards_test_is_lifelines_on_the_same_spells(generated):
    # given: lifelines' own test, whose residual loop is quadratic in the spells
    _, _, spells = generated
    table = _reference_table(spells)
    fitter = CoxPHFitter().fit(table, "duration_days", "cancelled")
    expected = proportional_hazard_test(fitter, table, time_transform="rank").summary

    # when
    result = proportional_hazards_test(fitter, table)

    # then
    assert list(result.index) == list(fitter.params_.index)
    np.testing.assert_allclose(result["test_statistic"], expected.loc[result.index, "test_statistic"], rtol=1e-6)
    np.testing.assert_allclose(result["p"], expected.loc[result.index, "p"], rtol=1e-6, atol=1e-12)


def test_spells_beyond_the_cap_are_fitted_on_a_fixed_sample_that_still_recovers_the_truth(generated, recovery):
    # given
    _, _, spells = generated
    cap = 8_000

    # when
    fit = churn_fit(spells, reference_level=PLANTED["reference_levels"][CHANNEL], fit_sample=cap)
    again = churn_fit(spells, reference_level=PLANTED["reference_levels"][CHANNEL], fit_sample=cap)

    # then
    assert fit.n_train == fit.metrics["spells"] == cap == fit.params["fit_sample"]
    assert fit.metrics["spells_available"] == recovery.n_train > cap and fit.metrics["cox_fit_sample"]["sampled"]
    truth = churn_compare(metrics=fit.metrics, planted=PLANTED)
    assert truth["all_within_3_se"], truth["coefficients"]
    assert "truth" not in fit.metrics
    assert fit.params["coefficients"] == again.params["coefficients"]
    curves = fit.metrics["kaplan_meier"]["by_acquisition_channel"]
    assert sum(curve["spells"] for curve in curves.values()) == recovery.n_train


def test_kaplan_meier_curves_by_channel_fall_faster_for_the_riskier_channel(recovery):
    curves = recovery.metrics["kaplan_meier"]["by_acquisition_channel"]
    at_90_days = SURVIVAL_GRID_DAYS.index(90)

    assert set(curves) == set(PLANTED["levels"][CHANNEL])
    for curve in curves.values():
        assert curve["survival"][0] == 1.0 and np.all(np.diff(curve["survival"]) <= 0)
    # referral users (planted +0.50) churn faster than partner-brought ones (planted -0.25)
    assert curves["社交裂变"]["survival"][at_90_days] < curves["合作伙伴"]["survival"][at_90_days] - 0.05


def test_the_churn_probability_is_lifelines_survival_and_close_to_the_planted_one(generated, recovery):
    # given: spells still running at a quarter of a year, whose horizon stays inside the observed time
    _, _, spells = generated
    table = _reference_table(spells)
    reference = CoxPHFitter().fit(table, "duration_days", "cancelled")
    sample = spells[spells["duration_days"] > 100].sample(300, random_state=2)
    elapsed = np.full(len(sample), 100.0)
    horizon = recovery.scorer.horizon_days

    # when
    probability = recovery.scorer.churn_probability(sample, elapsed)

    # then: equal to lifelines' 1 - S(t + h) / S(t), up to the scorer's daily grid
    covariates = table.loc[sample.index, reference.params_.index]
    survival = reference.predict_survival_function(covariates, times=[100.0, 100.0 + horizon])
    np.testing.assert_allclose(probability, 1 - survival.iloc[1] / survival.iloc[0], atol=0.01)
    # and close to the planted Weibull model's
    coefficients = PLANTED["coefficients"]
    log_hazard = (
        sample["discount_depth"] * coefficients["discount_depth"]
        + sample["joined_activity_14d"] * coefficients["joined_activity_14d"]
        + sample[CHANNEL].map(lambda channel: coefficients.get(f"{CHANNEL}_{channel}", 0.0))
    )
    shape, scale = PLANTED["baseline"]["shape"], PLANTED["baseline"]["scale_days"]
    increase = ((100 + horizon) / scale) ** shape - (100 / scale) ** shape
    planted = 1 - np.exp(-increase * np.exp(log_hazard.to_numpy()))
    assert np.abs(probability - planted).mean() < 0.03


def test_bands_follow_the_documented_thresholds(recovery):
    low, medium = CHURN_BAND_THRESHOLDS

    bands = recovery.scorer.band(np.array([0.0, low - 1e-9, low, medium - 1e-9, medium, 1.0]))

    assert bands.tolist() == ["low", "low", "medium", "medium", "high", "high"]
    assert tuple(CHURN_BANDS) == ("low", "medium", "high")


def test_only_running_members_are_scored_and_an_unknown_channel_counts_as_the_reference(recovery):
    # given: a running member, a cancelled one, a non-member and a running member from an unknown channel
    as_of = _at(200).to_pydatetime()
    events = pd.DataFrame(
        [
            (1, "membership_start", "lanying-vip-month", 30.0, _at(100)),
            (2, "membership_start", "lanying-vip-month", 30.0, _at(100)),
            (2, "membership_cancel", "lanying-vip-month", 0.0, _at(150)),
            (4, "membership_start", "lanying-vip-month", 30.0, _at(100)),
        ],
        columns=["user_id", "kind", "item_id", "amount", "occurred_at"],
    )
    frame = pd.DataFrame({CHANNEL: ["自然流量", "自然流量", "自然流量", "没听说过的渠道"]}, index=[1, 2, 3, 4])

    # when
    scores = recovery.scorer.score_members(frame, events, as_of=as_of)

    # then
    assert sorted(scores.index) == [1, 4]
    assert scores.loc[1, "score"] == pytest.approx(scores.loc[4, "score"])
    assert 0 < scores.loc[1, "score"] < 1 and scores.loc[1, "label"] in CHURN_BANDS


def test_without_enough_cancellations_training_is_refused(generated):
    _, _, spells = generated

    with pytest.raises(ApplicationError, match="at least 20 cancelled"):
        churn_fit(spells.assign(cancelled=0))


# --- the service on the database --------------------------------------------------------


def test_training_before_any_membership_is_a_clear_error(db):
    with pytest.raises(ApplicationError, match="at least 20 cancelled memberships, got 0"):
        TRAINERS["churn"](observation_end=datetime(2001, 1, 1, tzinfo=UTC))


@pytest.fixture
def churn_run(demo_world, db) -> ModelRun:
    return demo_model_train(model="churn", truth=loaded_truth())


def test_the_spells_read_from_the_database_are_the_generators(demo_world, db):
    # given
    events, channels = _generator_events(DATABASE_USERS)
    expected = _with_channel(membership_spells(events, data_end=WORLD_END), channels).set_index("user_id")
    external_ids = dict(EndUser.objects.values_list("pk", "external_id"))

    # when
    spells = membership_spells(membership_events(before=truth_time(TRUTH["world"]["end"])), data_end=WORLD_END)

    # then
    spells = spells.assign(user_id=spells["user_id"].map(external_ids)).set_index("user_id").loc[expected.index]
    columns = ["item_id", "duration_days", "cancelled", "discount_depth", "joined_activity_14d"]
    pd.testing.assert_frame_equal(spells[columns], expected[columns], check_dtype=False)


def test_training_on_the_demo_world_stores_an_active_run_that_recovers_the_truth(churn_run):
    run = churn_run

    assert run.is_active and run.model == "churn" and run.version == 1
    assert run.data_end == truth_time(TRUTH["world"]["end"])
    assert run.n_train == BehaviorEvent.objects.filter(kind="membership_start").count() == run.metrics["spells"]
    assert run.params["reference_levels"] == PLANTED["reference_levels"]
    list_prices = {plan.plan_id: float(plan.list_price) for plan in demo_catalog().membership_plans}
    assert run.params["list_prices"] == list_prices
    json.dumps({"params": run.params, "metrics": run.metrics}, allow_nan=False)
    truth = run_against_truth(run)
    assert truth["all_within_3_se"], {name: row["z"] for name, row in truth["coefficients"].items()}


def test_batch_scoring_scores_exactly_the_running_members(churn_run):
    # given
    members = set(BehaviorEvent.objects.filter(kind="membership_start").values_list("user_id", flat=True))
    cancelled = set(BehaviorEvent.objects.filter(kind="membership_cancel").values_list("user_id", flat=True))
    now = timezone.now()

    # when
    for chunk in score_chunks(chunk_users=5_000):
        score_chunk(model="churn", id_range=chunk, as_of=now)

    # then
    stored = pd.DataFrame(UserScore.objects.filter(model="churn").values("user_id", "score", "label"))
    assert set(stored["user_id"]) == members - cancelled
    assert stored["score"].between(0, 1).all() and set(stored["label"]) <= set(CHURN_BANDS)
    scorer = model_run_artifact(churn_run)
    expected = scorer.score(user_frame(scorer.fields, as_of=now), as_of=now)
    np.testing.assert_allclose(stored.set_index("user_id")["score"].sort_index(), expected["score"].sort_index())


def test_training_stops_at_an_earlier_observation_end(demo_world, db):
    # given
    end = datetime.fromisoformat("2026-06-01T00:00:00+00:00")

    # when
    run = TRAINERS["churn"](observation_end=end, activate=False)

    # then
    assert not run.is_active and run.data_end == end
    assert run.n_train == BehaviorEvent.objects.filter(kind="membership_start", occurred_at__lt=end).count()
    cancels = BehaviorEvent.objects.filter(kind="membership_cancel", occurred_at__lt=end)
    assert run.metrics["cancelled"] == cancels.count()
    assert run.data_start is not None
    assert truth_time(TRUTH["world"]["start"]) <= run.data_start < end


def test_kaplan_meier_curves_by_segment_appear_once_users_have_segments(demo_world, db):
    # given: members labelled alternately with two segments by a stored segments run
    members = sorted(set(BehaviorEvent.objects.filter(kind="membership_start").values_list("user_id", flat=True)))
    segments_run = ModelRun.objects.create(model="segments", version=1, is_active=True)
    labels = {user_id: ("film buffs", "eager learners")[index % 2] for index, user_id in enumerate(members)}
    UserScore.objects.bulk_create(
        UserScore(user_id=user_id, model="segments", run=segments_run, label=label, scored_at=timezone.now())
        for user_id, label in labels.items()
    )

    # when
    run = TRAINERS["churn"](activate=False)

    # then
    curves = run.metrics["kaplan_meier"]["by_segment"]
    assert set(curves) == {"film buffs", "eager learners"}
    assert curves["film buffs"]["spells"] == sum(label == "film buffs" for label in labels.values())
    assert sum(curve["spells"] for curve in curves.values()) == run.n_train
