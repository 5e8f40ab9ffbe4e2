"""Tests of the demo world: determinism, the catalog, the import formats and recoverable truth.

The recovery tests fit models on features computed from the generated events, exactly as
the planted truth defines them, and compare the estimates with what was planted. They share
one 200,000-user world and are marked ``slow``; they still run by default.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from analytics.services.imports import BEHAVIOR_COLUMNS
from demo.world import parameters as P  # noqa: N812  # the demo world's short name for its parameters, as in demo/world
from demo.world.catalog import OFFER_KINDS, PARTNER_KINDS, SHANGHAI, demo_catalog
from demo.world.export import behavior_table, export_demo_csvs
from demo.world.generator import BLOCK_SIZE, EVENT_COLUMNS, iter_world
from demo.world.truth import (
    EVENT_KINDS,
    expected_campaign_uplift,
    planted_truth,
    simulate_campaign_outcomes,
    true_purchase_probability,
)

SEED = 2026
SMALL_USERS = 6_000
RECOVERY_USERS = 200_000
CATALOG = demo_catalog()
TRUTH = planted_truth(n_users=RECOVERY_USERS, seed=SEED)
AMOUNT_PATTERN = re.compile(r"^\d+\.\d{2}$")
CONDITION_VARIABLES = {"watching_count", "purchasing_count", "propensity"} | {
    f"watching_count_{category}" for category in P.CATEGORY_SLUGS
}


def _world(n_users: int, seed: int = SEED, chunk_size: int = 2_500) -> tuple[pd.DataFrame, pd.DataFrame]:
    chunks = list(iter_world(n_users=n_users, seed=seed, chunk_size=chunk_size))
    return (
        pd.concat([chunk.users for chunk in chunks], ignore_index=True),
        pd.concat([chunk.events for chunk in chunks], ignore_index=True),
    )


@pytest.fixture(scope="module")
def small_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _world(SMALL_USERS)


# --- determinism and chunking -------------------------------------------------------------


def test_the_same_seed_gives_the_same_world(small_world):
    # given / when
    users, events = _world(SMALL_USERS)

    # then
    pd.testing.assert_frame_equal(users, small_world[0])
    pd.testing.assert_frame_equal(events, small_world[1])


def test_another_seed_gives_another_world(small_world):
    users, events = _world(SMALL_USERS, seed=SEED + 1)

    assert not users["age"].equals(small_world[0]["age"])
    assert len(events) != len(small_world[1]) or not events["occurred_at"].equals(small_world[1]["occurred_at"])


@pytest.mark.parametrize("chunk_size", [1_000, 2_999, BLOCK_SIZE, SMALL_USERS])
def test_the_chunk_size_does_not_change_the_world(small_world, chunk_size):
    users, events = _world(SMALL_USERS, chunk_size=chunk_size)

    pd.testing.assert_frame_equal(users, small_world[0])
    pd.testing.assert_frame_equal(events, small_world[1])


def test_a_larger_world_begins_with_the_smaller_one(small_world):
    users, events = _world(SMALL_USERS // 2 + 7)

    pd.testing.assert_frame_equal(users, small_world[0].iloc[: len(users)])
    pd.testing.assert_frame_equal(events, small_world[1].iloc[: len(events)])


def test_each_chunk_holds_its_users_and_exactly_their_events():
    chunks = list(iter_world(n_users=7_300, seed=SEED, chunk_size=3_000))

    assert [len(chunk.users) for chunk in chunks] == [3_000, 3_000, 1_300]
    assert [chunk.first_user_index for chunk in chunks] == [0, 3_000, 6_000]
    for chunk in chunks:
        assert set(chunk.events["user_id"]) <= set(chunk.users["user_id"])
        assert chunk.users["user_id"].iloc[0] == f"u{chunk.first_user_index + 1:07d}"


# --- the catalog ------------------------------------------------------------------------


def _is_money(value: str) -> bool:
    return bool(AMOUNT_PATTERN.match(value))


def test_the_catalog_has_the_partners_and_matching_categories_of_the_product():
    kinds = [partner.kind for partner in CATALOG.partners]
    assert sorted(kinds) == sorted(["knowledge", "video", "video", "cinema", "studio"])
    assert set(kinds) <= set(PARTNER_KINDS)
    assert {"economics", "programming", "history", "writing"} <= {category.slug for category in CATALOG.categories}
    for category in CATALOG.categories:
        assert any(course.category == category.slug for course in CATALOG.courses)
        assert any(film.category == category.slug for film in CATALOG.films)
    assert all(partner.name_zh for partner in CATALOG.partners)
    assert all(course.title_zh and _is_money(course.price) for course in CATALOG.courses)


def test_some_licences_have_expired_and_some_have_not_started_at_the_world_end():
    world_end = P.WORLD_END.date()

    assert any(film.licence_end < world_end for film in CATALOG.films)
    assert any(film.licence_start > world_end for film in CATALOG.films)
    assert all(film.licence_start <= film.licence_end for film in CATALOG.films)


def test_bundles_deals_and_campaigns_refer_to_what_exists():
    skus = {course.sku for course in CATALOG.courses}
    films = {film.external_id for film in CATALOG.films}
    partners = {partner.slug for partner in CATALOG.partners}
    deals = {deal.slug for deal in CATALOG.deals}
    assert "economics-in-the-movies" in {bundle.slug for bundle in CATALOG.bundles}
    for bundle in CATALOG.bundles:
        assert set(bundle.course_skus) <= skus and set(bundle.film_ids) <= films and _is_money(bundle.price)
    for deal in CATALOG.deals:
        assert {deal.source_partner, deal.benefit_partner} <= partners
        assert set(deal.trigger_course_skus) <= skus
        assert _is_money(deal.settlement_price_per_grant) and _is_money(deal.cap_amount)
        assert 0 < Decimal(deal.revenue_split_share) < 1
    for campaign in CATALOG.campaigns:
        assert campaign.starts_at.tzinfo is not None and campaign.starts_at < campaign.ends_at
        assert set(campaign.target_course_skus) <= skus and set(campaign.partners) <= partners
        assert campaign.deal is None or campaign.deal in deals
        assert 0 < campaign.holdout_share < 1 and _is_money(campaign.budget)
        for rule in campaign.rules:
            assert set(re.findall(r"[a-z_]+(?= *[<>=])", rule.condition)) <= CONDITION_VARIABLES
            for offer in rule.offers:
                assert offer.kind in OFFER_KINDS and offer.partner in partners
                assert _is_money(offer.cost_per_issue)
                assert offer.deal is None or offer.deal in deals


def test_the_article_rules_are_there_as_written():
    rules = CATALOG.campaign("member-day-rewards").rules

    assert rules[0].condition == "purchasing_count > 5 and watching_count > 10"
    assert [(offer.kind, offer.amount, offer.days) for offer in rules[0].offers] == [
        ("coupon", "20.00", None),
        ("free_viewing", None, 7),
    ]
    assert [(offer.kind, offer.amount) for offer in rules[1].offers] == [("coupon", "10.00"), ("movie_ticket", None)]


def test_the_catalog_and_the_truth_are_json_safe():
    assert json.loads(json.dumps(CATALOG.to_dict(), ensure_ascii=False)) == CATALOG.to_dict()
    assert json.loads(json.dumps(TRUTH, ensure_ascii=False)) == TRUTH


def test_a_campaign_window_is_written_in_shanghai_time():
    flash_sale = CATALOG.campaign("double12-flash-sale")

    assert pd.Timestamp(flash_sale.starts_at).tz_convert("UTC") == pd.Timestamp("2026-12-11T16:00:00Z")


# --- the users and events tables ---------------------------------------------------------


def test_events_have_the_import_events_format(small_world):
    _, events = small_world

    assert tuple(events.columns) == EVENT_COLUMNS
    assert set(events["kind"]) == set(EVENT_KINDS)
    assert events["amount"].map(_is_money).all()
    assert str(events["occurred_at"].dt.tz) == "UTC"
    assert events["occurred_at"].between(P.WORLD_START, P.WORLD_END, inclusive="left").all()
    assert not events.duplicated(["partner", "event_id"]).any()
    assert set(events["partner"]) == {partner.slug for partner in CATALOG.partners}


def test_each_event_names_an_item_of_its_kind_and_partner(small_world):
    _, events = small_world
    items_by_kind = {
        "film_watch": {film.external_id: film.partner for film in CATALOG.films},
        "course_view": {course.sku: course.partner for course in CATALOG.courses},
        "course_purchase": {course.sku: course.partner for course in CATALOG.courses},
        "membership_start": {plan.plan_id: plan.partner for plan in CATALOG.membership_plans},
        "membership_cancel": {plan.plan_id: plan.partner for plan in CATALOG.membership_plans},
        "activity_join": {activity.activity_id: activity.partner for activity in CATALOG.activities},
    }

    for kind, item_partner in items_by_kind.items():
        of_kind = events[events["kind"] == kind]
        assert (of_kind["item_id"].map(item_partner) == of_kind["partner"]).all(), kind
    redeems = events[events["kind"] == "offer_redeem"]
    assert redeems["item_id"].str.fullmatch(r"coupon-\d{6}").all()


def test_money_moves_only_where_it_should(small_world):
    _, events = small_world
    amount = events["amount"].map(Decimal)
    cinema = events["partner"] == "xingguang"
    free_kinds = events["kind"].isin(["course_view", "membership_cancel", "activity_join", "offer_redeem"])
    list_prices = {plan.plan_id: Decimal(plan.list_price) for plan in CATALOG.membership_plans}
    starts = events["kind"] == "membership_start"

    assert (amount >= 0).all()
    assert (amount[free_kinds] == 0).all()
    assert (amount[(events["kind"] == "film_watch") & ~cinema] == 0).all()
    assert (amount[(events["kind"] == "film_watch") & cinema] > 0).all()
    assert (amount[events["kind"] == "course_purchase"] >= Decimal("1.00")).all()
    discounts = {
        1 - paid / list_prices[plan] for paid, plan in zip(amount[starts], events.loc[starts, "item_id"], strict=True)
    }
    assert discounts <= {Decimal(str(level)) for level in P.MEMBERSHIP_DISCOUNT_LEVELS}


def test_films_are_watched_only_while_licensed(small_world):
    _, events = small_world
    licence = {film.external_id: (film.licence_start, film.licence_end) for film in CATALOG.films}
    watches = events[events["kind"] == "film_watch"]
    day = watches["occurred_at"].dt.tz_convert(SHANGHAI).dt.date

    assert all(
        licence[film][0] <= watched_on <= licence[film][1]
        for film, watched_on in zip(watches["item_id"], day, strict=True)
    )


def test_the_target_course_is_bought_only_in_the_label_window(small_world):
    _, events = small_world
    target = events[(events["kind"] == "course_purchase") & (events["item_id"] == P.PROPENSITY_TARGET_COURSE)]

    assert len(target) > 0
    assert target["occurred_at"].between(P.OBSERVATION_END, P.LABEL_WINDOW_END, inclusive="left").all()
    assert not target["user_id"].duplicated().any()


def test_users_act_between_eight_and_midnight_shanghai_time_except_when_cancelling(small_world):
    _, events = small_world
    acting = events[events["kind"] != "membership_cancel"]

    assert (acting["occurred_at"].dt.tz_convert(SHANGHAI).dt.hour >= 8).all()


def test_a_user_makes_repeat_purchases_on_distinct_days(small_world):
    _, events = small_world
    purchases = events[(events["kind"] == "course_purchase") & (events["item_id"] != P.PROPENSITY_TARGET_COURSE)]

    assert not purchases.assign(day=purchases["occurred_at"].dt.date).duplicated(["user_id", "day"]).any()


def test_memberships_start_once_and_end_after_they_start(small_world):
    _, events = small_world
    starts = events[events["kind"] == "membership_start"].set_index("user_id")
    cancels = events[events["kind"] == "membership_cancel"].set_index("user_id")

    assert starts.index.is_unique and cancels.index.is_unique
    assert set(cancels.index) <= set(starts.index)
    assert (cancels["item_id"] == starts.loc[cancels.index, "item_id"]).all()
    assert (cancels["occurred_at"] > starts.loc[cancels.index, "occurred_at"]).all()


def test_users_have_the_demographics_and_consents_of_the_product(small_world):
    users, events = small_world

    assert users["user_id"].str.fullmatch(r"u\d{7}").all() and users["user_id"].is_unique
    assert set(users["education"]) == set(P.EDUCATION_LEVELS)
    assert set(users["occupation"]) == set(P.OCCUPATIONS)
    assert set(users["acquisition_channel"]) == set(P.ACQUISITION_CHANNELS)
    assert set(users["home_partner"]) == {partner.slug for partner in CATALOG.partners}
    assert users["age"].between(*P.AGE_RANGE).all()
    assert 0.8 < users["marketing_consent"].mean() < 0.95
    # consent as drawn, for people who are customers of one partner only
    several = users["alliance_id"].notna()
    assert 0.5 < users.loc[~several, "data_sharing_consent"].mean() < 0.9
    # customers of several partners consent and carry an alliance id (their id), so those partners reach them
    home = events["user_id"].map(users.set_index("user_id")["home_partner"])
    assert set(users.loc[several, "user_id"]) == set(events.loc[events["partner"] != home, "user_id"])
    assert users.loc[several, "data_sharing_consent"].all()
    assert (users.loc[several, "alliance_id"] == users.loc[several, "user_id"]).all()
    assert (users["signup_at"] < P.OBSERVATION_END).all()
    first_event = events.groupby("user_id")["occurred_at"].min()
    assert (first_event > users.set_index("user_id").loc[first_event.index, "signup_at"]).all()
    assert 9 < len(events) / len(users) < 12


def test_the_behavior_table_counts_as_the_truth_defines(small_world):
    users, events = small_world
    table = behavior_table(users, events)
    expected = _propensity_rows(users, events)

    assert tuple(table.columns[: len(BEHAVIOR_COLUMNS)]) == BEHAVIOR_COLUMNS
    pd.testing.assert_frame_equal(
        table[["user_id", "watching_count", "purchasing_count", "purchased_course"]],
        expected[["user_id", "watching_count", "purchasing_count", "purchased_course"]],
        check_dtype=False,
    )


def test_the_exporter_writes_the_two_import_formats(tmp_path: Path, small_world):
    users, events = small_world

    summary = export_demo_csvs(tmp_path, n_users=SMALL_USERS, seed=SEED, chunk_size=2_000)

    written_events = pd.read_csv(tmp_path / "events.csv", dtype=str, keep_default_na=False)
    written_behavior = pd.read_csv(tmp_path / "behavior.csv", dtype={"education": str})
    assert summary.events == len(events) == len(written_events)
    assert tuple(written_events.columns) == EVENT_COLUMNS
    assert written_events["amount"].tolist() == events["amount"].tolist()
    assert (pd.to_datetime(written_events["occurred_at"]) == events["occurred_at"]).all()
    assert tuple(written_behavior.columns[: len(BEHAVIOR_COLUMNS)]) == BEHAVIOR_COLUMNS
    assert written_behavior["purchased_course"].tolist() == _propensity_rows(users, events)["purchased_course"].tolist()
    assert json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))["seed"] == SEED


# --- features computed from the events, as the truth defines them ------------------------


def _propensity_rows(users: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    definitions = TRUTH["propensity"]
    observation_end = pd.Timestamp(definitions["observation_end"])
    label_window_end = pd.Timestamp(definitions["label_window_end"])
    before = events[events["occurred_at"] < observation_end]
    label_purchases = events[
        (events["kind"] == "course_purchase")
        & (events["item_id"] == definitions["target_course"])
        & (events["occurred_at"] >= observation_end)
        & (events["occurred_at"] < label_window_end)
    ]
    rows = users[["user_id", "age", "education", "occupation"]].reset_index(drop=True)
    for feature, kind in (("watching_count", "film_watch"), ("purchasing_count", "course_purchase")):
        counts = before.loc[before["kind"] == kind, "user_id"].value_counts()
        rows[feature] = rows["user_id"].map(counts).fillna(0).astype(int)
    rows["purchased_course"] = rows["user_id"].isin(label_purchases["user_id"]).astype(int)
    return rows


def _membership_spells(users: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    lookback = pd.Timedelta(days=P.CHURN_ACTIVITY_LOOKBACK_DAYS)
    list_price = {plan.plan_id: float(plan.list_price) for plan in CATALOG.membership_plans}
    starts = events.loc[events["kind"] == "membership_start", ["user_id", "item_id", "amount", "occurred_at"]]
    cancels = events.loc[events["kind"] == "membership_cancel", ["user_id", "item_id", "occurred_at"]]
    spells = starts.merge(
        cancels.rename(columns={"occurred_at": "cancelled_at"}), on=["user_id", "item_id"], how="left"
    )
    ended_at = spells["cancelled_at"].fillna(pd.Timestamp(TRUTH["world"]["end"]))
    joins = events.loc[events["kind"] == "activity_join", ["user_id", "occurred_at"]].merge(
        spells[["user_id", "occurred_at"]], on="user_id", suffixes=("_join", "_start")
    )
    recent = joins[
        (joins["occurred_at_join"] >= joins["occurred_at_start"] - lookback)
        & (joins["occurred_at_join"] < joins["occurred_at_start"])
    ]
    channel = users.set_index("user_id")["acquisition_channel"]
    return pd.DataFrame(
        {
            "duration_days": (ended_at - spells["occurred_at"]).dt.total_seconds() / 86_400,
            "cancelled": spells["cancelled_at"].notna().astype(int),
            "discount_depth": 1 - spells["amount"].astype(float) / spells["item_id"].map(list_price),
            "joined_activity_14d": spells["user_id"].isin(recent["user_id"]).astype(int),
            "acquisition_channel": spells["user_id"].map(channel).to_numpy(),
        }
    )


def _purchase_summaries(events: pd.DataFrame) -> pd.DataFrame:
    calibration_end = pd.Timestamp(TRUTH["purchase_process"]["fitting_convention"]["calibration_end"])
    purchases = events[
        (events["kind"] == "course_purchase")
        & (events["item_id"] != TRUTH["propensity"]["target_course"])
        & (events["occurred_at"] < calibration_end)
    ]
    daily = (
        purchases.assign(day=purchases["occurred_at"].dt.floor("D"), amount=purchases["amount"].astype(float))
        .groupby(["user_id", "day"], as_index=False)["amount"]
        .sum()
        .sort_values(["user_id", "day"])
    )
    daily["repeat"] = daily.duplicated("user_id")
    per_user = daily.groupby("user_id").agg(first=("day", "min"), last=("day", "max"), days=("day", "size"))
    repeat_spend = daily[daily["repeat"]].groupby("user_id")["amount"].mean()
    return pd.DataFrame(
        {
            "frequency": per_user["days"] - 1,
            "recency_weeks": (per_user["last"] - per_user["first"]).dt.days / 7,
            "T_weeks": (calibration_end.floor("D") - per_user["first"]).dt.days / 7,
            "monetary_value": repeat_spend.reindex(per_user.index),
        }
    )


def _category_hits(events: pd.DataFrame) -> pd.DataFrame:
    """Per course purchase: the buyer's most-watched film category and the course's category."""
    film_category = pd.Series({film.external_id: film.category for film in CATALOG.films})
    course_category = pd.Series({course.sku: course.category for course in CATALOG.courses})
    watches = events[events["kind"] == "film_watch"]
    top_watched = (
        watches.assign(category=watches["item_id"].map(film_category))
        .groupby(["user_id", "category"])
        .size()
        .reset_index(name="watches")
        .sort_values(["user_id", "watches"], ascending=[True, False])
        .drop_duplicates("user_id")
        .set_index("user_id")["category"]
    )
    purchases = events[(events["kind"] == "course_purchase") & events["user_id"].isin(top_watched.index)]
    return pd.DataFrame(
        {
            "course_category": purchases["item_id"].map(course_category).to_numpy(),
            "top_watched_category": purchases["user_id"].map(top_watched).to_numpy(),
        }
    )


@pytest.fixture(scope="module")
def recovery_tables() -> dict[str, pd.DataFrame]:
    """Build the model tables of a 200,000-user world, chunk by chunk."""
    parts: dict[str, list[pd.DataFrame]] = {
        "propensity": [],
        "spells": [],
        "purchases": [],
        "categories": [],
        "users": [],
    }
    for chunk in iter_world(n_users=RECOVERY_USERS, seed=SEED, chunk_size=50_000):
        parts["propensity"].append(_propensity_rows(chunk.users, chunk.events))
        parts["spells"].append(_membership_spells(chunk.users, chunk.events))
        parts["purchases"].append(_purchase_summaries(chunk.events))
        parts["categories"].append(_category_hits(chunk.events))
        parts["users"].append(chunk.users[["user_id", "latent_segment", "latent_purchase_probability"]])
    return {name: pd.concat(frames, ignore_index=name != "purchases") for name, frames in parts.items()}


def _dummies(frame: pd.DataFrame, column: str, levels: list[str], reference: str) -> pd.DataFrame:
    return pd.DataFrame(
        {f"{column}_{level}": (frame[column] == level).astype(float) for level in levels if level != reference},
        index=frame.index,
    )


# --- the planted truth is recoverable ------------------------------------------------------


@pytest.mark.slow
def test_logistic_regression_recovers_the_propensity_coefficients(recovery_tables):
    # given
    rows = recovery_tables["propensity"]
    truth = TRUTH["propensity"]
    features = pd.concat(
        [rows[["watching_count", "purchasing_count", "age"]].astype(float)]
        + [
            _dummies(rows, column, truth["levels"][column], truth["reference_levels"][column])
            for column in ("education", "occupation")
        ],
        axis=1,
    )

    # when: C=inf is the unpenalised fit (penalty=None is deprecated in scikit-learn 1.8+)
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100, tol=1e-10)
    model.fit(features, rows["purchased_course"])

    # then: every coefficient is within three standard errors (from the Fisher information)
    design = np.column_stack([np.ones(len(features)), features.to_numpy()])
    fitted = model.predict_proba(features)[:, 1]
    fisher_information = design.T @ (design * (fitted * (1 - fitted))[:, None])
    names = ["intercept", *features.columns]
    estimates = pd.Series([model.intercept_[0], *model.coef_[0]], index=names)
    standard_errors = pd.Series(np.sqrt(np.diag(np.linalg.inv(fisher_information))), index=names)
    z_scores = (estimates - pd.Series(truth["coefficients"])) / standard_errors
    assert set(z_scores.index) == set(truth["coefficients"])
    assert (z_scores.abs() < 3).all(), z_scores.round(2).to_dict()
    true_auc = roc_auc_score(rows["purchased_course"], true_purchase_probability(rows))
    assert abs(roc_auc_score(rows["purchased_course"], fitted) - true_auc) < 0.005


@pytest.mark.slow
def test_the_true_purchase_probability_is_the_one_the_labels_were_drawn_from(recovery_tables):
    rows = recovery_tables["propensity"]
    users = recovery_tables["users"]

    np.testing.assert_allclose(true_purchase_probability(rows), users["latent_purchase_probability"])
    observed, expected = rows["purchased_course"].sum(), users["latent_purchase_probability"].sum()
    assert abs(observed - expected) < 3 * np.sqrt(expected)


@pytest.mark.slow
def test_cox_regression_recovers_the_churn_coefficients(recovery_tables):
    from lifelines import CoxPHFitter

    # given
    spells = recovery_tables["spells"]
    truth = TRUTH["churn"]
    table = pd.concat(
        [
            spells[["duration_days", "cancelled", "discount_depth", "joined_activity_14d"]],
            _dummies(
                spells,
                "acquisition_channel",
                truth["levels"]["acquisition_channel"],
                truth["reference_levels"]["acquisition_channel"],
            ),
        ],
        axis=1,
    )

    # when
    fitted = CoxPHFitter().fit(table, duration_col="duration_days", event_col="cancelled").summary

    # then
    z_scores = {
        name: (fitted.loc[name, "coef"] - planted) / fitted.loc[name, "se(coef)"]
        for name, planted in truth["coefficients"].items()
    }
    assert max(abs(z) for z in z_scores.values()) < 3, z_scores


def _bgnbd_negative_log_likelihood(
    log_parameters: np.ndarray, frequency: np.ndarray, recency: np.ndarray, age: np.ndarray
) -> float:
    r, alpha, a, b = np.exp(log_parameters)
    log_a1 = special.gammaln(r + frequency) - special.gammaln(r) + r * np.log(alpha)
    log_a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + frequency)
        - special.gammaln(b)
        - special.gammaln(a + b + frequency)
    )
    log_alive = -(r + frequency) * np.log(alpha + age)
    repeat = frequency > 0
    log_dropped = np.full(len(frequency), -np.inf)
    log_dropped[repeat] = (
        np.log(a) - np.log(b + frequency[repeat] - 1) - (r + frequency[repeat]) * np.log(alpha + recency[repeat])
    )
    return -float(np.sum(log_a1 + log_a2 + np.logaddexp(log_alive, log_dropped)))


def _gamma_gamma_negative_log_likelihood(
    log_parameters: np.ndarray, frequency: np.ndarray, mean_spend: np.ndarray
) -> float:
    p, q, v = np.exp(log_parameters)
    px = p * frequency
    return -float(
        np.sum(
            special.gammaln(px + q)
            - special.gammaln(px)
            - special.gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(mean_spend)
            + px * np.log(frequency)
            - (px + q) * np.log(frequency * mean_spend + v)
        )
    )


@pytest.mark.slow
def test_bgnbd_and_gamma_gamma_fits_recover_the_purchase_process_within_ten_percent(recovery_tables):
    # given
    summaries = recovery_tables["purchases"]
    frequency = summaries["frequency"].to_numpy(float)
    repeaters = summaries[summaries["frequency"] > 0]
    process = TRUTH["purchase_process"]

    # when
    bgnbd = optimize.minimize(
        _bgnbd_negative_log_likelihood,
        np.log([1.0, 1.0, 1.0, 1.0]),
        method="L-BFGS-B",
        args=(frequency, summaries["recency_weeks"].to_numpy(float), summaries["T_weeks"].to_numpy(float)),
    )
    gamma_gamma = optimize.minimize(
        _gamma_gamma_negative_log_likelihood,
        np.log([1.0, 1.0, 1.0]),
        method="L-BFGS-B",
        args=(repeaters["frequency"].to_numpy(float), repeaters["monetary_value"].to_numpy(float)),
    )

    # then
    assert bgnbd.success and gamma_gamma.success
    planted = [*process["parameters"].values(), *process["spend"]["parameters"].values()]
    estimated = [*np.exp(bgnbd.x), *np.exp(gamma_gamma.x)]
    relative_errors = dict(
        zip(["r", "alpha", "a", "b", "p", "q", "v"], np.abs(np.array(estimated) / np.array(planted) - 1), strict=True)
    )
    assert max(relative_errors.values()) < 0.10, relative_errors


def _article_campaign_assignment(rows: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    heavy = ((rows["purchasing_count"] > 5) & (rows["watching_count"] > 10)).to_numpy()
    other = ~heavy & ((rows["purchasing_count"] >= 1) | (rows["watching_count"] >= 1)).to_numpy()
    offer = np.where(heavy, "coupon+free_viewing", "coupon+movie_ticket")
    held_out = rng.random(len(rows)) < 0.5
    eligible = heavy | other
    return eligible & ~held_out, eligible & held_out, offer


def _difference_in_means(values: np.ndarray, treated: np.ndarray, holdout: np.ndarray) -> tuple[float, float]:
    difference = values[treated].mean() - values[holdout].mean()
    standard_error = np.sqrt(values[treated].var(ddof=1) / treated.sum() + values[holdout].var(ddof=1) / holdout.sum())
    return float(difference), float(standard_error)


@pytest.mark.slow
def test_campaign_uplift_simulated_from_the_truth_matches_the_planted_effect_per_segment(recovery_tables):
    # given: the article's campaign, half of the eligible users held out
    rows = recovery_tables["propensity"]
    segments = recovery_tables["users"]["latent_segment"].to_numpy()
    rng = np.random.default_rng(SEED)
    treated, holdout, offer = _article_campaign_assignment(rows, rng)

    # when
    converted, revenue = simulate_campaign_outcomes(TRUTH, "member-day-rewards", segments, treated, offer, rng)

    # then: overall and in every segment, within three standard errors of the planted effect
    scopes = {"all": np.ones(len(rows), bool)} | {name: segments == name for name in P.SEGMENT_NAMES}
    for scope, members in scopes.items():
        expected = expected_campaign_uplift(
            TRUTH, "member-day-rewards", segments[members], treated[members], holdout[members], offer[members]
        )
        for outcome, planted in ((converted.astype(float), "conversion_uplift"), (revenue, "revenue_uplift_per_user")):
            measured, error = _difference_in_means(outcome, treated & members, holdout & members)
            assert abs(measured - expected[planted]) < 3 * error, (scope, planted, measured, expected[planted], error)


def test_offers_change_nothing_for_some_segments_and_a_lot_for_others():
    effects = TRUTH["campaign_effects"]["member-day-rewards"]["offers"]["coupon+movie_ticket"]["segments"]

    assert effects["culture_enthusiast"]["conversion_uplift"] == 0
    assert effects["culture_enthusiast"]["revenue_uplift_per_user"] < 0
    assert effects["bargain_hunter"]["conversion_uplift"] >= 0.1


def test_simulated_outcomes_are_money_and_deterministic_per_generator():
    segments = np.array(P.SEGMENT_NAMES * 2_000, dtype=object)
    treated = np.arange(len(segments)) % 2 == 0

    first = simulate_campaign_outcomes(TRUTH, "coding-drama", segments, treated, "coupon", np.random.default_rng(1))
    second = simulate_campaign_outcomes(TRUTH, "coding-drama", segments, treated, "coupon", np.random.default_rng(1))

    np.testing.assert_array_equal(first[1], second[1])
    assert (first[1][~first[0]] == 0).all() and (first[1][first[0]] > 0).all()
    np.testing.assert_array_equal(np.round(first[1], 2), first[1])


def test_simulating_an_unknown_offer_or_segment_is_refused():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="no planted effect"):
        simulate_campaign_outcomes(TRUTH, "coding-drama", ["film_buff"], [True], "movie_ticket", rng)
    with pytest.raises(ValueError, match="unknown segments"):
        simulate_campaign_outcomes(TRUTH, "coding-drama", ["cinephile"], [True], "coupon", rng)


@pytest.mark.slow
def test_a_course_matching_the_films_watched_beats_the_most_popular_category(recovery_tables):
    purchases = recovery_tables["categories"]

    matching = (purchases["course_category"] == purchases["top_watched_category"]).mean()
    most_popular = purchases["course_category"].value_counts(normalize=True).iloc[0]

    assert matching > 1.5 * most_popular


def test_clustering_behaviour_finds_the_planted_segments(small_world):
    users, events = small_world
    counts = events.pivot_table(
        index="user_id", columns="kind", values="event_id", aggfunc="size", fill_value=0
    ).reindex(users["user_id"], fill_value=0)

    clusters = KMeans(len(P.SEGMENTS), n_init=5, random_state=0).fit_predict(
        StandardScaler().fit_transform(np.log1p(counts.to_numpy()))
    )

    assert adjusted_rand_score(users["latent_segment"], clusters) > 0.3
