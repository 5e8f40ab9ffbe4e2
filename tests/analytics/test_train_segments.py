"""Segments find the planted user segments, name them from their profile, and label every user.

The clustering checks run on behaviour counted from the generator's events (60,000 users);
the training service, its SQL, the stored scorer and the batch scoring run on a small demo
world loaded into the database.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from django.utils import timezone

from analytics.models import EndUser, ModelRun, UserScore
from analytics.selectors import user_frame
from analytics.services.registry import model_run_artifact
from analytics.services.scoring import score_chunk, score_chunks
from analytics.services.training import TRAINERS
from analytics.services.training.segments import (
    COUNT_FIELDS,
    DEFAULT_K,
    MINIMUM_EXPOSURE_DAYS,
    behaviour_rates,
    exposure_days,
    name_segment,
    segments_fit,
    segments_rows,
)
from crossmkt_site.errors import ApplicationError
from demo.comparison import segments_compare, truth_time
from demo.selectors import planted_users
from demo.services.training import demo_model_train
from demo.world.generator import iter_world
from demo.world.truth import planted_truth
from tests.demo.support import loaded_truth, run_against_truth

SEED = 2026
RECOVERY_USERS = 60_000
DATABASE_USERS = 8_000
TRUTH = planted_truth(n_users=RECOVERY_USERS, seed=SEED)
WORLD_START, WORLD_END = pd.Timestamp(TRUTH["world"]["start"]), pd.Timestamp(TRUTH["world"]["end"])
KIND_FIELDS = {
    "film_watch": "watching_count",
    "course_view": "course_view_count",
    "course_purchase": "purchasing_count",
    "activity_join": "activity_count",
    "offer_redeem": "discounts_received",
}
PLANTED_NAMES = {
    "film_buff": "film buffs",
    "eager_learner": "eager learners",
    "bargain_hunter": "bargain hunters",
    "dormant": "dormant users",
}


def _generator_behaviour(n_users: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Return counts per user up to the world end, days since sign-up, and planted segments."""
    counts, tenure, planted = [], [], []
    for chunk in iter_world(n_users=n_users, seed=SEED):
        users = chunk.users.set_index("user_id")
        events = chunk.events[chunk.events["kind"].isin(KIND_FIELDS)]
        counts.append(
            events.pivot_table(index="user_id", columns="kind", values="event_id", aggfunc="size", fill_value=0)
            .rename(columns=KIND_FIELDS)
            .reindex(users.index, fill_value=0)
        )
        tenure.append((WORLD_END - users["signup_at"]).dt.total_seconds() / 86_400)
        planted.append(users["latent_segment"])
    return pd.concat(counts)[list(COUNT_FIELDS)], pd.concat(tenure), pd.concat(planted)


@pytest.fixture(scope="module")
def behaviour():
    return _generator_behaviour(RECOVERY_USERS)


@pytest.fixture(scope="module")
def recovery(behaviour):
    counts, tenure, _planted = behaviour
    exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)
    return segments_fit(counts, exposure, data_start=WORLD_START.to_pydatetime())


@pytest.fixture(scope="module")
def recovered(behaviour, recovery):
    counts, tenure, planted = behaviour
    exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)
    return segments_compare(scorer=recovery.scorer, counts=counts, exposure=exposure, planted=planted)


# --- the clustering on the generator's behaviour -----------------------------------------


def test_the_segments_agree_with_the_planted_ones(recovery, recovered):
    truth = recovered

    assert recovery.params["k"] == DEFAULT_K == 4
    assert truth["users_with_truth"] == RECOVERY_USERS
    # five planted segments in four clusters: the small culture-enthusiast segment must merge
    assert truth["adjusted_rand_index"] > 0.4


def test_each_large_planted_segment_lands_mostly_in_the_segment_named_after_it(recovery, recovered):
    crosstab = pd.DataFrame(recovered["crosstab"]).T

    for planted, name in PLANTED_NAMES.items():
        assert crosstab[planted].idxmax() == name, crosstab[planted].to_dict()
    profile = {row["name_en"]: row["name_zh"] for row in recovery.metrics["profile"]}
    assert profile["film buffs"] == "影迷" and profile["dormant users"] == "沉睡用户"


def test_segments_are_ordered_by_size_and_the_profile_describes_their_members(behaviour, recovery):
    # given
    counts, tenure, _ = behaviour
    profile = recovery.metrics["profile"]

    # when: the stored scorer labels the training users
    labels = pickle.loads(pickle.dumps(recovery.scorer)).score(counts.assign(tenure_days=tenure), as_of=WORLD_END)[
        "label"
    ]

    # then
    assert [row["users"] for row in profile] == sorted((row["users"] for row in profile), reverse=True)
    assert sum(row["users"] for row in profile) == RECOVERY_USERS
    for row in profile:
        members = labels == row["name_en"]
        assert members.sum() == row["users"]
        assert counts[members].mean().to_dict() == pytest.approx(row["mean_counts"])
    film_buffs = next(row for row in profile if row["name_en"] == "film buffs")
    overall = recovery.metrics["overall_mean_rates_per_year"]
    assert film_buffs["mean_rates_per_year"]["watching_count"] > 2 * overall["watching_count"]


def test_the_same_data_gives_the_same_segments_and_names(behaviour, recovery):
    counts, tenure, _ = behaviour
    exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)

    again = segments_fit(counts, exposure, data_start=WORLD_START.to_pydatetime())

    assert again.params["names"] == recovery.params["names"]
    np.testing.assert_array_equal(again.scorer.centres, recovery.scorer.centres)


def test_silhouette_is_reported_for_the_chosen_k_and_for_others(recovery):
    metrics = recovery.metrics

    assert 0 < metrics["silhouette"] < 1
    assert set(metrics["silhouette_by_k"]) == set(range(2, 9))
    assert all(-1 <= value <= 1 for value in metrics["silhouette_by_k"].values())


def test_k_is_configurable(behaviour):
    counts, tenure, planted = behaviour
    exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)

    fit = segments_fit(counts.iloc[:20_000], exposure.iloc[:20_000], k=5)

    assert len(fit.metrics["profile"]) == 5 == len(set(fit.scorer.names_en))
    truth = segments_compare(
        scorer=fit.scorer, counts=counts.iloc[:20_000], exposure=exposure.iloc[:20_000], planted=planted.iloc[:20_000]
    )
    assert truth["adjusted_rand_index"] > 0.35


@pytest.mark.parametrize(
    ("centre", "trait"),
    [
        (
            {
                "watching_count": 1.2,
                "course_view_count": -0.4,
                "purchasing_count": -0.5,
                "activity_count": 0.2,
                "discounts_received": -0.4,
            },
            "film",
        ),
        (
            {
                "watching_count": 0.1,
                "course_view_count": 1.4,
                "purchasing_count": 1.5,
                "activity_count": 0.3,
                "discounts_received": -0.2,
            },
            "learning",
        ),
        (
            {
                "watching_count": 0.8,
                "course_view_count": 0.9,
                "purchasing_count": 1.0,
                "activity_count": 1.1,
                "discounts_received": 0.0,
            },
            "culture",
        ),
        (
            {
                "watching_count": 0.0,
                "course_view_count": 0.0,
                "purchasing_count": -0.2,
                "activity_count": 0.6,
                "discounts_received": 1.7,
            },
            "deals",
        ),
        (
            {
                "watching_count": -0.8,
                "course_view_count": -0.7,
                "purchasing_count": -0.6,
                "activity_count": -0.6,
                "discounts_received": -0.5,
            },
            "dormant",
        ),
        (
            {
                "watching_count": 0.1,
                "course_view_count": 0.0,
                "purchasing_count": 0.1,
                "activity_count": -0.1,
                "discounts_received": 0.1,
            },
            "regular",
        ),
    ],
)
def test_a_segment_is_named_after_what_stands_out_in_its_profile(centre, trait):
    assert name_segment(centre) == trait


def test_two_segments_with_the_same_trait_get_numbered_names(behaviour):
    # given: only film watching differs between users
    counts, tenure, _ = behaviour
    films_only = counts.iloc[:5_000].assign(
        course_view_count=0, purchasing_count=0, activity_count=0, discounts_received=0
    )
    exposure = exposure_days(tenure.iloc[:5_000], as_of=WORLD_END, data_start=WORLD_START)

    # when
    fit = segments_fit(films_only, exposure, k=3)

    # then: every name is unique, and a repeated trait is numbered after its larger namesake
    names = fit.scorer.names_en
    assert len(set(names)) == 3
    numbered = [name for name in names if name.endswith(" 2")]
    assert len(numbered) == 1
    assert names.index(numbered[0].removesuffix(" 2")) < names.index(numbered[0])


def test_rates_count_at_least_thirty_days_and_never_time_before_the_data_started():
    counts = pd.DataFrame({name: [6.0, 6.0, 6.0] for name in COUNT_FIELDS}, index=[1, 2, 3])
    tenure = pd.Series([10.0, 730.0, np.nan], index=[1, 2, 3])

    exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)
    rates = behaviour_rates(counts, exposure)

    assert exposure.tolist() == [10.0, 365.0, 365.0]
    assert rates["watching_count"].tolist() == pytest.approx([6 * 365 / MINIMUM_EXPOSURE_DAYS, 6.0, 6.0])


def test_too_few_users_or_k_below_two_is_a_clear_error(behaviour):
    counts, tenure, _ = behaviour

    with pytest.raises(ApplicationError, match="at least 40 users"):
        segments_fit(counts.iloc[:30], tenure.iloc[:30])
    with pytest.raises(ApplicationError, match="k of at least 2"):
        segments_fit(counts, tenure, k=1)


# --- the service on the database --------------------------------------------------------


def test_training_before_anyone_joined_is_a_clear_error(db):
    with pytest.raises(ApplicationError, match="segments need users who joined before 2001-01-01"):
        TRAINERS["segments"](observation_end=datetime(2001, 1, 1, tzinfo=UTC))


@pytest.fixture
def segments_run(demo_world, db) -> ModelRun:
    return demo_model_train(model="segments", truth=loaded_truth())


def test_the_behaviour_read_from_the_database_is_the_generators(demo_world, db):
    # given
    counts, tenure, planted = _generator_behaviour(DATABASE_USERS)
    external_ids = dict(EndUser.objects.values_list("pk", "external_id"))

    # when
    rows, exposure = segments_rows(as_of=truth_time(TRUTH["world"]["end"]))
    stored_planted = planted_users()["segment"].reindex(rows.index)

    # then
    rows.index = exposure.index = stored_planted.index = rows.index.map(external_ids)
    pd.testing.assert_frame_equal(rows.loc[counts.index], counts, check_dtype=False, check_names=False)
    expected_exposure = exposure_days(tenure, as_of=WORLD_END, data_start=WORLD_START)
    # the data start at the first event, a few hours after the world's first midnight
    np.testing.assert_allclose(exposure.loc[counts.index], expected_exposure, atol=1.0)
    assert (stored_planted.loc[counts.index] == planted).all()


def test_training_on_the_demo_world_stores_an_active_run_with_named_segments(segments_run):
    run = segments_run

    assert run.is_active and run.model == "segments" and run.version == 1
    assert run.n_train == DATABASE_USERS
    json.dumps({"params": run.params, "metrics": run.metrics}, allow_nan=False)
    assert [row["segment"] for row in run.params["names"]] == [1, 2, 3, 4]
    assert {row["name_en"] for row in run.params["names"]} == set(PLANTED_NAMES.values())
    assert "truth" not in run.metrics
    assert run_against_truth(run)["adjusted_rand_index"] > 0.35


def test_batch_scoring_labels_every_user_with_a_segment_name(segments_run):
    # given
    scorer = model_run_artifact(segments_run)
    now = timezone.now()

    # when
    for chunk in score_chunks(chunk_users=5_000):
        score_chunk(model="segments", id_range=chunk, as_of=now)

    # then
    stored = pd.Series(dict(UserScore.objects.filter(model="segments").values_list("user_id", "label")))
    assert len(stored) == DATABASE_USERS
    expected = scorer.score(user_frame(scorer.fields, as_of=now), as_of=now)["label"]
    assert (stored.sort_index() == expected.sort_index()).all()
    shares = stored.value_counts(normalize=True)
    for row in segments_run.metrics["profile"]:
        assert shares[row["name_en"]] == pytest.approx(row["share"], abs=0.01)
