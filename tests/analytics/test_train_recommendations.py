"""Cross-domain recommendations beat popularity on the demo world, follow the planted interests, and serve safely.

The model checks run on the generator's events (40,000 users, about 13,000 held-out users,
where a 20% lift is several standard errors wide); the training service, the serving
function and the admin page run on a small demo world loaded into the database.
"""

from __future__ import annotations

import datetime as dt
import json
from unittest import mock
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from django.db.models import Count
from django.urls import reverse

from analytics.admin import ModelRunAdmin
from analytics.models import BehaviorEvent, EndUser, ModelRun
from analytics.services import recommend
from analytics.services.registry import model_run_activate
from analytics.services.training.recommendations import (
    DOMAIN_OF_KIND,
    CooccurrenceRecommender,
    association_pairs,
    cooccurrence_fit,
    interaction_data,
    recommendations_fit,
)
from campaigns.models import Film, Partner
from campaigns.selectors.recommendations import model_recommendations
from campaigns.services.training import recommendations_train
from crossmkt_site.errors import ApplicationError
from demo.services.training import demo_excluded_items, demo_model_train
from demo.world.catalog import demo_catalog
from demo.world.generator import iter_world
from demo.world.truth import planted_truth
from tests.demo.support import loaded_truth

SEED = 2026
GENERATOR_USERS = 40_000
DATABASE_USERS = 4_000
SHANGHAI = ZoneInfo("Asia/Shanghai")
TRUTH = planted_truth(n_users=GENERATOR_USERS, seed=SEED)
CATALOG = demo_catalog()
OBSERVATION_END = dt.datetime.fromisoformat(TRUTH["world"]["observation_end"])
DATA_END = dt.datetime.fromisoformat(TRUTH["world"]["end"])
CATEGORIES = [category.slug for category in CATALOG.categories]


@pytest.fixture(autouse=True)
def _english():
    """Read the reasons in English: the admin and the API follow the user's language, Chinese by default."""
    from django.utils import translation

    with translation.override("en"):
        yield


def _day_start(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.combine(day, dt.time(), tzinfo=SHANGHAI))


def _generator_catalog() -> pd.DataFrame:
    """Return the demo catalog as the trainer reads it from the database (licences end at their last day's start)."""
    rows = [
        {
            "kind": "course",
            "partner": course.partner,
            "partner_slug": course.partner,
            "item_id": course.sku,
            "title": course.title_zh,
            "category": course.category,
            "tags": course.tags,
            "licence_start": pd.NaT,
            "licence_end": pd.NaT,
            "is_active": True,
        }
        for course in CATALOG.courses
    ]
    rows += [
        {
            "kind": "film",
            "partner": film.partner,
            "partner_slug": film.partner,
            "item_id": film.external_id,
            "title": film.title_zh,
            "category": film.category,
            "tags": film.tags,
            "licence_start": _day_start(film.licence_start),
            "licence_end": _day_start(film.licence_end),
            "is_active": True,
        }
        for film in CATALOG.films
    ]
    return pd.DataFrame(rows).sort_values(["kind", "partner", "item_id"], ignore_index=True)


def _counts(events: pd.DataFrame) -> pd.DataFrame:
    return events.groupby(["user_id", "item", "kind"], as_index=False).agg(
        n=("occurred_at", "size"), first_at=("occurred_at", "min")
    )


@pytest.fixture(scope="module")
def generated() -> dict:
    catalog = _generator_catalog()
    catalog_keys = pd.MultiIndex.from_arrays([catalog["kind"], catalog["item_id"]])
    position = pd.Series(np.arange(len(catalog)), index=catalog_keys)
    frames = []
    for chunk in iter_world(n_users=GENERATOR_USERS, seed=SEED):
        events = chunk.events[chunk.events["kind"].isin(list(DOMAIN_OF_KIND))]
        keys = pd.MultiIndex.from_arrays([events["kind"].map(DOMAIN_OF_KIND), events["item_id"]])
        frames.append(
            pd.DataFrame(
                {
                    "user_id": events["user_id"].str[1:].astype("int64").to_numpy(),
                    "item": position.reindex(keys).to_numpy(),
                    "kind": events["kind"].to_numpy(),
                    "occurred_at": events["occurred_at"].to_numpy(),
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
    before = events["occurred_at"] < OBSERVATION_END
    training = recommendations_fit(
        catalog,
        calibration=_counts(events[before]),
        holdout=_counts(events[~before]),
        everything=_counts(events),
        observation_end=OBSERVATION_END,
        data_end=DATA_END,
        excluded_items=demo_excluded_items(TRUTH),
    )
    return {"catalog": catalog, "events": events, "training": training}


def _history_row(model: CooccurrenceRecommender, items: list[int], n: int = 3) -> sp.csr_matrix:
    return sp.csr_matrix((np.full(len(items), float(n)), ([0] * len(items), items)), shape=(1, len(model.catalog)))


def _most_popular(model: CooccurrenceRecommender, kind: str, category: str) -> int:
    mask = ((model.catalog["kind"] == kind) & (model.catalog["category"] == category)).to_numpy() & model.warm
    return int(np.flatnonzero(mask)[np.argmax(model.popularity[mask])])


# --- the model on the generator's world ----------------------------------------------------------


@pytest.mark.slow
def test_recommendations_beat_popularity_by_at_least_twenty_percent_in_hit_rate_at_ten(generated):
    evaluation = generated["training"].metrics["evaluation"]
    overall = evaluation["overall"]

    assert evaluation["list_length"] == 10 and overall["n_users"] > 10_000
    assert overall["relative_hit_rate_lift"] >= 0.20, overall
    assert overall["model"]["ndcg"] > 1.2 * overall["popularity"]["ndcg"]
    for domain in ("course", "film"):
        result = evaluation[domain]
        assert result["model"]["hit_rate"] > result["popularity"]["hit_rate"] + 0.1, (domain, result)
        assert result["model"]["ndcg"] > result["popularity"]["ndcg"], (domain, result)


@pytest.mark.slow
@pytest.mark.parametrize("category", CATEGORIES)
def test_a_film_watcher_is_recommended_courses_of_the_films_category(generated, category):
    # given: someone who watched the most popular film of one category three times
    model = generated["training"].model
    history = _history_row(model, [_most_popular(model, "film", category)])

    # when
    scores = model.scores(history)[0]

    # then: the best courses for them are that category's
    courses = np.flatnonzero((model.catalog["kind"] == "course").to_numpy() & model.warm)
    best = courses[np.argsort(-scores[courses])[:3]]
    assert set(model.catalog["category"].to_numpy()[best]) == {category}


@pytest.mark.slow
@pytest.mark.parametrize("category", CATEGORIES)
def test_a_course_buyer_is_recommended_films_of_the_courses_category(generated, category):
    model = generated["training"].model
    history = _history_row(model, [_most_popular(model, "course", category)], n=1)

    scores = model.scores(history)[0]

    films = np.flatnonzero((model.catalog["kind"] == "film").to_numpy() & model.warm)
    best = films[np.argsort(-scores[films])[:3]]
    assert set(model.catalog["category"].to_numpy()[best]) == {category}


def test_a_user_without_history_gets_the_most_popular_items_of_each_kind(generated):
    model = generated["training"].model

    scores = model.scores(sp.csr_matrix((1, len(model.catalog))))[0]

    for kind in ("course", "film"):
        mask = (model.catalog["kind"] == kind).to_numpy()
        assert np.argmax(np.where(mask, scores, -1)) == np.argmax(np.where(mask, model.popularity, -1))
        assert scores[mask].max() == pytest.approx(1.0)


@pytest.mark.slow
def test_a_new_course_without_buyers_borrows_the_similarities_of_its_category(generated):
    # given: a history course no one has bought yet
    catalog = generated["catalog"]
    new_course = pd.DataFrame(
        [
            {
                "kind": "course",
                "partner": "zhixue",
                "partner_slug": "zhixue",
                "item_id": "HIS-301",
                "title": "敦煌学入门",
                "category": "history",
                "tags": ("纪录片", "敦煌"),
                "licence_start": pd.NaT,
                "licence_end": pd.NaT,
                "is_active": True,
            }
        ]
    )
    events = generated["events"]
    model = cooccurrence_fit(
        interaction_data(_counts(events), n_items=len(catalog) + 1),
        pd.concat([catalog, new_course], ignore_index=True),
        trained_until=DATA_END,
    )
    new = len(catalog)

    # when
    history_fan = model.scores(_history_row(model, [_most_popular(model, "film", "history")]))[0]
    economics_fan = model.scores(_history_row(model, [_most_popular(model, "film", "economics")]))[0]

    # then: cold, yet scored for the right people, and below the warm courses of its category
    assert not model.warm[new]
    assert history_fan[new] > 1.5 * economics_fan[new] > 0
    warm_history_courses = (
        (model.catalog["category"] == "history").to_numpy()
        & model.warm
        & (model.catalog["kind"] == "course").to_numpy()
    )
    assert history_fan[new] < history_fan[warm_history_courses].max()


@pytest.mark.slow
def test_association_pairs_have_the_support_confidence_and_lift_of_their_definition(generated):
    # given
    catalog, events = generated["catalog"], generated["events"]
    pairs = generated["training"].metrics["associations"]["pairs"]
    top = pairs[0]

    # when: the top pair counted by hand
    users = events["user_id"].nunique()
    watchers = set(
        events.loc[
            (events["kind"] == "film_watch") & (catalog["item_id"].to_numpy()[events["item"]] == top["film_id"]),
            "user_id",
        ]
    )
    buyers = set(
        events.loc[
            (events["kind"] == "course_purchase") & (catalog["item_id"].to_numpy()[events["item"]] == top["course_id"]),
            "user_id",
        ]
    )
    both = len(watchers & buyers)

    # then
    assert top["users"] == both
    assert top["support"] == pytest.approx(both / users, abs=1e-6)
    assert top["confidence"] == pytest.approx(both / len(watchers), abs=1e-4)
    assert top["lift"] == pytest.approx(both / len(watchers) / (len(buyers) / users), abs=1e-3)
    assert top["relative_risk"] == pytest.approx(
        (both / len(watchers)) / ((len(buyers) - both) / (users - len(watchers))), abs=1e-3
    )
    assert [pair["lift"] for pair in pairs] == sorted((pair["lift"] for pair in pairs), reverse=True)


@pytest.mark.slow
def test_films_and_courses_of_one_category_are_the_strong_pairs(generated):
    catalog = generated["catalog"]
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    strong = [pair for pair in generated["training"].metrics["associations"]["pairs"] if pair["lift"] >= 1.5]

    same_category = [category[pair["film_id"]] == category[pair["course_id"]] for pair in strong]
    assert len(strong) >= 20 and np.mean(same_category) >= 0.95


def test_pairs_seen_too_rarely_are_left_out():
    catalog = _generator_catalog()
    film, course = (int(np.flatnonzero(catalog["item_id"] == item)[0]) for item in ("LY-10001", "ECO-101"))
    interactions = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3],
            "item": [film, course, film, course, film],
            "kind": ["film_watch", "course_purchase"] * 2 + ["film_watch"],
            "n": 1,
        }
    )
    data = interaction_data(interactions, n_items=len(catalog))

    assert association_pairs(data, catalog, min_pair_users=3)["pairs"] == []
    (pair,) = association_pairs(data, catalog, min_pair_users=2)["pairs"]
    assert (pair["film_id"], pair["course_id"], pair["users"]) == ("LY-10001", "ECO-101", 2)
    assert pair["confidence"] == pytest.approx(2 / 3, abs=1e-4) and pair["confidence_reverse"] == 1.0
    assert pair["lift"] == pytest.approx(1.0) and pair["relative_risk"] is None


# --- the service, serving and admin on a demo world in the database ------------------------------


@pytest.fixture
def run(demo_world, db) -> ModelRun:
    return demo_model_train(model="recommendations", truth=loaded_truth())


def test_training_stores_an_active_run_that_beats_popularity_and_lists_pairs(run):
    evaluation = run.metrics["evaluation"]

    assert run.is_active and run.model == "recommendations" and run.data_end == DATA_END
    assert run.params["observation_end"] == OBSERVATION_END.isoformat()
    assert evaluation["overall"]["model"]["hit_rate"] > evaluation["overall"]["popularity"]["hit_rate"]
    pairs = run.metrics["associations"]["pairs"]
    assert pairs and {"support", "confidence", "lift", "relative_risk", "in_bundle"} <= set(pairs[0])
    json.dumps({"params": run.params, "metrics": run.metrics}, allow_nan=False)


def _heavy_user() -> EndUser:
    """Return a user who watched films and bought courses, with the most film watches."""
    buyers = BehaviorEvent.objects.filter(kind="course_purchase").values("user_id")
    user_id = (
        BehaviorEvent.objects.filter(kind="film_watch", user_id__in=buyers)
        .values("user_id")
        .annotate(n=Count("id"))
        .order_by("-n", "user_id")
        .values_list("user_id", flat=True)
        .first()
    )
    assert user_id is not None, "the world has no film watcher who bought a course"
    return EndUser.objects.get(pk=user_id)


def test_a_heavy_watcher_gets_courses_and_licensed_films_and_nothing_they_already_have(run):
    # given
    user = _heavy_user()
    now = DATA_END
    watched = set(BehaviorEvent.objects.filter(user=user, kind="film_watch").values_list("item_id", flat=True))
    bought = set(BehaviorEvent.objects.filter(user=user, kind="course_purchase").values_list("item_id", flat=True))
    licensed = set(
        Film.objects.filter(licence_start__lte=now, licence_end__gt=now).values_list("external_id", flat=True)
    )

    # when
    items = model_recommendations(user=user, limit=10, now=now)

    # then
    assert len(items) == 10
    assert all(set(item) == {"kind", "partner", "item_id", "title", "category", "score", "reason"} for item in items)
    films = {item["item_id"] for item in items if item["kind"] == "film"}
    courses = {item["item_id"] for item in items if item["kind"] == "course"}
    assert courses and not courses & bought
    assert films <= licensed and not films & watched
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True) and all(0 <= score <= 1 for score in scores)
    assert any(item["reason"].startswith("because you") for item in items)


def test_a_user_without_history_gets_popular_items(run):
    user = EndUser.objects.exclude(events__kind__in=list(DOMAIN_OF_KIND)).first()
    assert user is not None

    items = model_recommendations(user=user, limit=6, now=DATA_END)

    assert len(items) == 6 and {item["kind"] for item in items} == {"course", "film"}
    assert {item["reason"] for item in items} == {"popular with other users"}


def test_a_partner_sees_only_its_items_and_those_of_partners_it_works_with(run):
    # given: on 1 November 2026 the cinema has a running deal with the knowledge platform and no campaign
    user = _heavy_user()
    cinema = Partner.objects.get(slug="xingguang")
    loner = Partner.objects.create(slug="loner", name="Loner", kind="video")

    # when
    items = model_recommendations(user=user, partner=cinema, now=DATA_END)

    # then
    assert items and {item["partner"] for item in items} <= {"xingguang", "zhixue"}
    assert model_recommendations(user=user, partner=loner, now=DATA_END) == []


def test_without_data_sharing_consent_only_the_asking_partners_events_count(run):
    # given: a user who refused data sharing and did everything at partners other than the cinema
    at_cinema = BehaviorEvent.objects.filter(partner__slug="xingguang").values("user_id")
    user = (
        EndUser.objects.filter(data_sharing_consent=False, events__kind="film_watch")
        .exclude(pk__in=at_cinema)
        .order_by("pk")
        .first()
    )
    assert user is not None
    cinema = Partner.objects.get(slug="xingguang")

    # when
    items = model_recommendations(user=user, partner=cinema, now=DATA_END)

    # then: no history is seen, so the list is the popular one
    assert items and {item["reason"] for item in items} == {"popular with other users"}
    assert any(
        reason.startswith("because you")
        for reason in (item["reason"] for item in model_recommendations(user=user, now=DATA_END))
    )


def test_an_erased_user_gets_nothing(run):
    user = _heavy_user()
    user.erased_at = DATA_END

    assert model_recommendations(user=user, now=DATA_END) == []


def test_the_model_is_loaded_once_per_active_run(run):
    user = _heavy_user()
    with mock.patch.object(recommend, "model_run_artifact", wraps=recommend.model_run_artifact) as load:
        first = model_recommendations(user=user, now=DATA_END)
        assert model_recommendations(user=user, now=DATA_END) == first
        newer = recommendations_train(observation_end=dt.datetime(2026, 8, 1, tzinfo=SHANGHAI))
        # An older window's fit may not pass the quality gate; the cache follows whichever run is active.
        newer = model_run_activate(model="recommendations", version=newer.version, override_gate=True)
        model_recommendations(user=user, now=DATA_END)

    assert newer.is_active and load.call_count == 2
    assert recommend._loaded["recommendations"].run_key[0] == newer.pk


def test_serving_without_a_trained_model_says_how_to_train_one(demo_world, db):
    user = EndUser.objects.first()
    assert user is not None
    with pytest.raises(ApplicationError, match="train --model recommendations"):
        model_recommendations(user=user)


def test_the_admin_lists_the_active_runs_pairs_sorted_by_the_chosen_column(run, admin_client):
    # when
    response = admin_client.get(reverse("admin:analytics_modelrun_associations"), {"o": "-users"})

    # then
    assert response.status_code == 200
    rows = response.context["rows"]
    users = [name for name, _label in ModelRunAdmin.association_columns].index("users")
    assert rows and [row[users] for row in rows] == sorted((row[users] for row in rows), reverse=True)
    assert rows[0][0] in response.content.decode()
