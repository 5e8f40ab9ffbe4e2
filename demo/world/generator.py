"""Generate the demo world's users and behaviour events from planted truth, chunk by chunk.

``iter_world(n_users=..., seed=...)`` yields ``WorldChunk`` objects, each holding a users
table and the events of exactly those users, so that a million users never sit in memory at
once. The world is built in blocks of ``BLOCK_SIZE`` users, block ``k`` drawn from
``numpy.random.SeedSequence(seed, spawn_key=(k,))`` (the ``k``-th child of
``SeedSequence(seed).spawn``); chunks are cut from the blocks. So a seed gives the same users
and events whatever the chunk size, and the first users of a larger world are the users of a
smaller one.

Users table (one row per user):

- ``user_id``: pseudonymous id ``u0000001``, ``u0000002``, ...; the same id on every partner;
- ``home_partner``: slug of the partner the user signed up with;
- ``age`` (years), ``gender`` (男/女, or None when not given), ``education``
  (高中/大专/本科/硕士/博士), ``occupation`` (学生/互联网从业者/金融从业者/教师/自由职业者/公司职员),
  ``acquisition_channel`` (线上广告/社交裂变/应用商店/合作伙伴/自然流量);
- ``marketing_consent``, ``data_sharing_consent`` (bool);
- ``alliance_id``: for people who are customers of several partners, the id every partner
  knows them by (their ``user_id``), registered by the home partner, and these people consent
  to data sharing: identity is per partner, so without both their events at the other partners
  would be other people's (``analytics.services.identity``). None for everyone else;
- ``signup_at`` (UTC), up to two years before the world's year starts;
- planted truth, never to be used as a model input: ``latent_segment``,
  ``latent_top_category``, ``latent_interest_<category>`` (sums to 1 over the categories),
  ``latent_purchase_rate`` (BG/NBD purchases per week while alive), ``latent_dropout_probability``
  and ``latent_mean_spend`` (CNY per order), all three NaN for users who never buy a course,
  and ``latent_purchase_probability`` (true probability of the propensity label).

Events table, in the ``import_events`` format (one row per event, sorted by user and time):
``event_id`` (``<user_id>-<sequence>``, unique), ``user_id``, ``partner`` (slug), ``kind``,
``item_id`` (film external id, course SKU, membership plan, activity id, or the month's
coupon ``coupon-YYYYMM`` for ``offer_redeem``), ``amount`` (CNY as a string with two places,
``"0.00"`` where no money moves), ``occurred_at`` (``datetime64[ns, UTC]``).

The processes, each described with its parameters in ``truth.planted_truth()``:

- film watches: Poisson per user (rate by segment, Gamma heterogeneity), films chosen by
  latent category interest times popularity among films licensed that day; a cinema watch
  costs the film's ticket price;
- course purchases: BG/NBD from each buyer's first purchase, Gamma-Gamma order totals,
  courses chosen by interest times popularity; a course view usually comes shortly before;
- course views, activity joins (the month's activity) and offer redeems: Poisson per user;
- memberships: at most one paid spell per user, first-month discount by segment, duration
  from the planted Cox model given channel, discount and activity joins in the 14 days
  before the start; cancelled when the duration ends before the world does;
- the propensity label: after everything before the observation end is drawn, the
  label is drawn from the planted logit of the features computed from those events, and a
  positive label becomes a purchase of the target course in the label window.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from demo.world import parameters
from demo.world.catalog import (
    CATEGORIES,
    KNOWLEDGE,
    PARTNERS,
    TARGET_COURSE_SKU,
    demo_catalog,
)
from demo.world.truth import EVENT_KINDS, propensity_log_odds

# Users per independently seeded block. Small enough that a block's per-event weight
# matrices (events x films) stay a few MB, large enough that NumPy call overhead is noise.
BLOCK_SIZE = 5_000
DEFAULT_CHUNK_SIZE = 50_000
EVENT_COLUMNS = ("event_id", "user_id", "partner", "kind", "item_id", "amount", "occurred_at")

_KIND = {kind: code for code, kind in enumerate(EVENT_KINDS)}
_WORLD_END_SECONDS = parameters.WORLD_DAYS * parameters.SECONDS_PER_DAY
_START_EPOCH_SECONDS = int(parameters.WORLD_START.timestamp())
# Larger than any user's spread of (purchase day - purchase rank), so that a running
# maximum over all users' purchases never carries from one user into the next.
_USER_OFFSET_DAYS = 1_000_000

# ``Array[np.int64]`` etc.: a NumPy array of any shape with that scalar type.
_ScalarT = TypeVar("_ScalarT", bound=np.generic)
Array: TypeAlias = npt.NDArray[_ScalarT]


@dataclass(frozen=True)
class WorldChunk:
    """Users ``first_user_index`` .. ``first_user_index + len(users) - 1`` and all their events."""

    first_user_index: int
    users: pd.DataFrame
    events: pd.DataFrame


def user_id_for(index: int) -> str:
    """Return the pseudonymous user id of the user at this 0-based index."""
    return f"u{index + 1:07d}"


def iter_world(
    *, n_users: int, seed: int, chunk_size: int = DEFAULT_CHUNK_SIZE, start: int = 0
) -> Iterator[WorldChunk]:
    """Yield the demo world of ``n_users`` users in chunks of ``chunk_size`` users, from user index ``start`` on.

    Blocks are seeded independently, so several processes can each generate their own
    range of users and together produce exactly the world one process would.
    """
    if n_users < 0 or chunk_size < 1 or start < 0:
        raise ValueError("n_users and start must be >= 0 and chunk_size >= 1")
    tables = _tables()
    # The last generated block and its index: a block spanning two chunks is generated once.
    cached: tuple[int, _Block] | None = None
    for chunk_start in range(start, n_users, chunk_size):
        chunk_end = min(chunk_start + chunk_size, n_users)
        pieces = []
        for block_index in range(chunk_start // BLOCK_SIZE, (chunk_end - 1) // BLOCK_SIZE + 1):
            if cached is None or cached[0] != block_index:
                cached = (block_index, _generate_block(block_index, seed, tables))
            block = cached[1]
            block_start = block_index * BLOCK_SIZE
            pieces.append(
                block.slice(
                    max(chunk_start, block_start) - block_start, min(chunk_end, block_start + BLOCK_SIZE) - block_start
                )
            )
        yield WorldChunk(
            first_user_index=chunk_start,
            users=pd.concat([users for users, _ in pieces], ignore_index=True),
            events=pd.concat([events for _, events in pieces], ignore_index=True),
        )


@dataclass(frozen=True)
class _Block:
    users: pd.DataFrame
    events: pd.DataFrame
    event_user: Array[np.int64]

    def slice(self, first: int, stop: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        event_first, event_stop = np.searchsorted(self.event_user, [first, stop])
        return self.users.iloc[first:stop], self.events.iloc[event_first:event_stop]


@dataclass(frozen=True)
class _Tables:
    """The catalog and the segment profiles as arrays the generator indexes into."""

    item_ids: Array[np.object_]
    item_partner: Array[np.object_]
    film_items: Array[np.int64]
    film_category: Array[np.int64]
    film_popularity: Array[np.float64]
    film_licensed_by_day: Array[np.bool_]
    film_ticket_cents: Array[np.int64]
    course_items: Array[np.int64]
    course_category: Array[np.int64]
    course_popularity: Array[np.float64]
    target_item: int
    target_price_cents: int
    plan_items: Array[np.int64]
    plan_list_cents: Array[np.int64]
    home_partner_plan: Array[np.int64]
    activity_item_by_day: Array[np.int64]
    coupon_item_by_day: Array[np.int64]
    segment_share: Array[np.float64]
    segment_film_rate: Array[np.float64]
    segment_view_rate: Array[np.float64]
    segment_buyer_probability: Array[np.float64]
    segment_purchase_rate_tilt: Array[np.float64]
    segment_membership_probability: Array[np.float64]
    segment_discount_probabilities: Array[np.float64]
    segment_activity_rate: Array[np.float64]
    segment_activity_before_membership: Array[np.float64]
    segment_redeem_rate: Array[np.float64]
    segment_top_category: Array[np.float64]
    segment_age_mean: Array[np.float64]
    segment_age_sd: Array[np.float64]
    segment_education: Array[np.float64]
    segment_occupation: Array[np.float64]
    segment_channel: Array[np.float64]
    segment_home_partner: Array[np.float64]
    channel_hazard: Array[np.float64]


def _cents(amount: str) -> int:
    units, _, hundredths = amount.partition(".")
    return int(units) * 100 + int(hundredths.ljust(2, "0"))


def _popularity_by_rank(categories: list[str]) -> Array[np.float64]:
    rank_in_category: dict[str, int] = {}
    popularity = []
    for category in categories:
        rank = rank_in_category.get(category, 0)
        rank_in_category[category] = rank + 1
        popularity.append(1.0 / (rank + 1) ** parameters.POPULARITY_DECAY)
    return np.array(popularity)


@functools.cache
def _tables() -> _Tables:
    catalog = demo_catalog()
    days = [parameters.WORLD_START.date() + dt.timedelta(days=day) for day in range(parameters.WORLD_DAYS)]
    coupon_months = sorted({f"coupon-{day:%Y%m}" for day in days})
    item_ids = (
        [film.external_id for film in catalog.films]
        + [course.sku for course in catalog.courses]
        + [plan.plan_id for plan in catalog.membership_plans]
        + [activity.activity_id for activity in catalog.activities]
        + coupon_months
    )
    item_partner = (
        [film.partner for film in catalog.films]
        + [course.partner for course in catalog.courses]
        + [plan.partner for plan in catalog.membership_plans]
        + [activity.partner for activity in catalog.activities]
        + [KNOWLEDGE] * len(coupon_months)
    )
    item_code = {item_id: code for code, item_id in enumerate(item_ids)}
    category_code = {slug: code for code, slug in enumerate(parameters.CATEGORY_SLUGS)}
    partner_kind = {partner.slug: partner.kind for partner in PARTNERS}

    film_popularity = _popularity_by_rank([film.category for film in catalog.films])
    film_popularity *= np.array(
        [
            parameters.CINEMA_POPULARITY_FACTOR if partner_kind[film.partner] == "cinema" else 1.0
            for film in catalog.films
        ]
    )
    day_dates = np.array(days, dtype="datetime64[D]")
    film_licensed_by_day = np.array(
        [
            (day_dates >= np.datetime64(film.licence_start)) & (day_dates <= np.datetime64(film.licence_end))
            for film in catalog.films
        ]
    ).T
    buyable_courses = [course for course in catalog.courses if course.sku != TARGET_COURSE_SKU]
    target = catalog.course(TARGET_COURSE_SKU)

    plans = catalog.membership_plans
    plan_by_partner = {plan.partner: index for index, plan in enumerate(plans)}
    # A user whose home is not a video platform gets plan -1: chosen at random later.
    home_partner_plan = np.array([plan_by_partner.get(slug, -1) for slug in parameters.HOME_PARTNERS])

    activity_item_by_day = np.array(
        [
            item_code[
                next(
                    activity.activity_id
                    for activity in catalog.activities
                    if activity.starts_on <= day <= activity.ends_on
                )
            ]
            for day in days
        ]
    )

    def by_segment(attribute: str) -> Array[np.float64]:
        return np.array([getattr(segment, attribute) for segment in parameters.SEGMENTS], dtype=float)

    channel_hazard = np.array(
        [
            parameters.CHURN_COEFFICIENTS.get(f"acquisition_channel_{channel}", 0.0)
            for channel in parameters.ACQUISITION_CHANNELS
        ]
    )
    return _Tables(
        item_ids=np.array(item_ids, dtype=object),
        item_partner=np.array(item_partner, dtype=object),
        film_items=np.array([item_code[film.external_id] for film in catalog.films]),
        film_category=np.array([category_code[film.category] for film in catalog.films]),
        film_popularity=film_popularity,
        film_licensed_by_day=film_licensed_by_day,
        film_ticket_cents=np.array([_cents(film.ticket_price) for film in catalog.films]),
        course_items=np.array([item_code[course.sku] for course in buyable_courses]),
        course_category=np.array([category_code[course.category] for course in buyable_courses]),
        course_popularity=_popularity_by_rank([course.category for course in buyable_courses]),
        target_item=item_code[target.sku],
        target_price_cents=_cents(target.price),
        plan_items=np.array([item_code[plan.plan_id] for plan in plans]),
        plan_list_cents=np.array([_cents(plan.list_price) for plan in plans]),
        home_partner_plan=home_partner_plan,
        activity_item_by_day=activity_item_by_day,
        coupon_item_by_day=np.array([item_code[f"coupon-{day:%Y%m}"] for day in days]),
        segment_share=by_segment("share"),
        segment_film_rate=by_segment("film_watches_per_year"),
        segment_view_rate=by_segment("course_views_per_year"),
        segment_buyer_probability=by_segment("buyer_probability"),
        segment_purchase_rate_tilt=by_segment("purchase_rate_tilt"),
        segment_membership_probability=by_segment("membership_probability"),
        segment_discount_probabilities=by_segment("discount_probabilities"),
        segment_activity_rate=by_segment("activity_joins_per_year"),
        segment_activity_before_membership=by_segment("activity_before_membership_probability"),
        segment_redeem_rate=by_segment("offer_redeems_per_year"),
        segment_top_category=by_segment("top_category_probabilities"),
        segment_age_mean=by_segment("age_mean"),
        segment_age_sd=by_segment("age_sd"),
        segment_education=by_segment("education_probabilities"),
        segment_occupation=by_segment("occupation_probabilities"),
        segment_channel=by_segment("channel_probabilities"),
        segment_home_partner=by_segment("home_partner_probabilities"),
        channel_hazard=channel_hazard,
    )


def _draw_rows(rng: np.random.Generator, weights: Array[np.float64]) -> Array[np.int64]:
    """Draw one column index per row, with probability proportional to the row's weights."""
    cumulative = np.cumsum(weights, axis=1)
    threshold = rng.random(len(weights)) * cumulative[:, -1]
    return np.minimum((cumulative <= threshold[:, None]).sum(axis=1), weights.shape[1] - 1)


def _seconds_in_active_hours(rng: np.random.Generator, day: Array[np.int64]) -> Array[np.int64]:
    return day * parameters.SECONDS_PER_DAY + rng.integers(0, parameters.ACTIVE_SECONDS_PER_DAY, len(day))


def _poisson_days(
    rng: np.random.Generator, first_day: Array[np.int64], events_per_year: Array[np.float64]
) -> tuple[Array[np.int64], Array[np.int64]]:
    """Draw a Poisson process per user from ``first_day`` to the world end: (user, day)."""
    span = parameters.WORLD_DAYS - first_day
    counts = rng.poisson(events_per_year * span / 365.0)
    user = np.repeat(np.arange(len(first_day)), counts)
    day = first_day[user] + np.floor(rng.random(len(user)) * span[user]).astype(np.int64)
    return user, day


@dataclass
class _Events:
    user: Array[np.int64]
    kind: Array[np.int64]
    item: Array[np.int64]
    amount_cents: Array[np.int64]
    seconds: Array[np.int64]

    @classmethod
    def of(
        cls,
        kind: str,
        user: Array[np.int64],
        item: Array[np.int64] | int,
        seconds: Array[np.int64],
        amount_cents: Array[np.int64] | int = 0,
    ) -> _Events:
        size = len(user)
        return cls(
            user.astype(np.int64),
            np.full(size, _KIND[kind]),
            np.broadcast_to(item, size).astype(np.int64),
            np.broadcast_to(amount_cents, size).astype(np.int64),
            seconds.astype(np.int64),
        )

    @classmethod
    def concat(cls, parts: list[_Events]) -> _Events:
        return cls(
            *(
                np.concatenate([getattr(part, name) for part in parts])
                for name in ("user", "kind", "item", "amount_cents", "seconds")
            )
        )

    def select(self, mask: Array[np.bool_]) -> _Events:
        return _Events(self.user[mask], self.kind[mask], self.item[mask], self.amount_cents[mask], self.seconds[mask])


@dataclass(frozen=True)
class _Users:
    segment: Array[np.int64]
    interest: Array[np.float64]
    top_category: Array[np.int64]
    age: Array[np.int64]
    gender: Array[np.int64]
    education: Array[np.int64]
    occupation: Array[np.int64]
    channel: Array[np.int64]
    home_partner: Array[np.int64]
    marketing_consent: Array[np.bool_]
    data_sharing_consent: Array[np.bool_]
    signup_seconds: Array[np.int64]
    first_active_day: Array[np.int64]

    @property
    def count(self) -> int:
        return len(self.segment)


def _draw_users(rng: np.random.Generator, n: int, tables: _Tables) -> _Users:
    segment = rng.choice(len(tables.segment_share), n, p=tables.segment_share)
    top_category = _draw_rows(rng, tables.segment_top_category[segment])
    interest = (1.0 - parameters.TOP_CATEGORY_INTEREST) * rng.dirichlet(np.ones(len(parameters.CATEGORY_SLUGS)), n)
    interest[np.arange(n), top_category] += parameters.TOP_CATEGORY_INTEREST
    occupation = _draw_rows(rng, tables.segment_occupation[segment])
    adult_age = np.rint(rng.normal(tables.segment_age_mean[segment], tables.segment_age_sd[segment]))
    student_age = parameters.STUDENT_AGE_FLOOR + rng.poisson(parameters.STUDENT_AGE_POISSON_MEAN, n)
    is_student = occupation == parameters.OCCUPATIONS.index("学生")
    age = np.clip(np.where(is_student, student_age, adult_age), *parameters.AGE_RANGE).astype(np.int64)
    marketing_consent = rng.random(n) < parameters.MARKETING_CONSENT_PROBABILITY
    sharing_probability = np.where(
        marketing_consent,
        parameters.DATA_SHARING_PROBABILITY_GIVEN_MARKETING[True],
        parameters.DATA_SHARING_PROBABILITY_GIVEN_MARKETING[False],
    )
    signed_up_before = rng.random(n) < parameters.SHARE_SIGNED_UP_BEFORE_START
    signup_day = np.where(
        signed_up_before,
        rng.integers(parameters.SIGNUP_FIRST_DAY, 0, n),
        rng.integers(0, parameters.SIGNUP_LAST_DAY + 1, n),
    )
    return _Users(
        segment=segment,
        interest=interest,
        top_category=top_category,
        age=age,
        gender=rng.choice(len(parameters.GENDERS), n, p=parameters.GENDER_PROBABILITIES),
        education=_draw_rows(rng, tables.segment_education[segment]),
        occupation=occupation,
        channel=_draw_rows(rng, tables.segment_channel[segment]),
        home_partner=_draw_rows(rng, tables.segment_home_partner[segment]),
        marketing_consent=marketing_consent,
        data_sharing_consent=rng.random(n) < sharing_probability,
        signup_seconds=_seconds_in_active_hours(rng, signup_day),
        # Users act from the day after they signed up.
        first_active_day=np.maximum(signup_day + 1, 0),
    )


def _draw_film_watches(rng: np.random.Generator, users: _Users, tables: _Tables) -> _Events:
    heterogeneity = rng.gamma(
        parameters.FILM_RATE_HETEROGENEITY_SHAPE, 1.0 / parameters.FILM_RATE_HETEROGENEITY_SHAPE, users.count
    )
    user, day = _poisson_days(rng, users.first_active_day, tables.segment_film_rate[users.segment] * heterogeneity)
    weights = users.interest[user][:, tables.film_category] * tables.film_popularity * tables.film_licensed_by_day[day]
    film = _draw_rows(rng, weights)
    return _Events.of(
        "film_watch", user, tables.film_items[film], _seconds_in_active_hours(rng, day), tables.film_ticket_cents[film]
    )


def _choose_courses(rng: np.random.Generator, users: _Users, user: Array[np.int64], tables: _Tables) -> Array[np.int64]:
    weights = users.interest[user][:, tables.course_category] * tables.course_popularity
    return tables.course_items[_draw_rows(rng, weights)]


@dataclass(frozen=True)
class _Purchases:
    events: _Events
    rate_per_week: Array[np.float64]
    dropout_probability: Array[np.float64]
    mean_spend: Array[np.float64]


def _distinct_days(user: Array[np.int64], day: Array[np.int64], rank: Array[np.int64]) -> Array[np.int64]:
    """Move each purchase to the first day after the user's previous one, where they collide.

    With purchases sorted by user and day, and ``rank`` the position within the user,
    ``new_day[k] = max(day[k], new_day[k - 1] + 1)``, which is a running maximum of
    ``day - rank`` (kept apart per user by a large per-user offset) plus ``rank``.
    """
    offset = user * _USER_OFFSET_DAYS
    return np.maximum.accumulate(day - rank + offset) - offset + rank


def _draw_repeat_days(
    rng: np.random.Generator,
    first_time_days: Array[np.float64],
    rate_per_week: Array[np.float64],
    dropout_probability: Array[np.float64],
) -> tuple[Array[np.int64], Array[np.int64]]:
    """Draw each buyer's BG/NBD repeat purchases until the world end: (buyer, day), sorted.

    While alive, repeats are Poisson, so given their number over the horizon their times are
    uniform; the buyer drops out after their J-th repeat, J ~ Geometric(dropout probability).
    """
    horizon_days = parameters.WORLD_DAYS - first_time_days
    repeats = rng.poisson(rate_per_week / 7.0 * horizon_days)
    last_repeat = rng.geometric(dropout_probability)
    owner = np.repeat(np.arange(len(first_time_days)), repeats)
    offset_days = rng.random(len(owner)) * horizon_days[owner]
    order = np.lexsort((offset_days, owner))
    owner, offset_days = owner[order], offset_days[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
    alive = rank < last_repeat[owner]
    owner, offset_days = owner[alive], offset_days[alive]
    return owner, np.floor(first_time_days[owner] + offset_days).astype(np.int64)


def _draw_course_purchases(rng: np.random.Generator, users: _Users, tables: _Tables) -> _Purchases:
    """Draw BG/NBD repeat purchases with Gamma-Gamma order totals from each buyer's first purchase."""
    bgnbd, spend = parameters.BGNBD_PARAMETERS, parameters.GAMMA_GAMMA_PARAMETERS
    # A would-be buyer's first purchase comes an exponential time after their first day in
    # the world; who would only buy after the observation end never buys, so that every
    # buyer is in the BG/NBD calibration population.
    would_buy = rng.random(users.count) < tables.segment_buyer_probability[users.segment]
    first_day = users.first_active_day + np.floor(
        rng.exponential(parameters.FIRST_PURCHASE_MEAN_DAYS, users.count)
    ).astype(np.int64)
    buyer = np.flatnonzero(would_buy & (first_day < parameters.OBSERVATION_END_DAY))
    n_buyers = len(buyer)
    first_day = first_day[buyer]
    first_seconds = _seconds_in_active_hours(rng, first_day)

    # The rates are an iid Gamma(r, alpha) sample, handed out so that segments with a higher
    # tilt tend to get the larger ones: the population stays BG/NBD while segments differ.
    rates = np.sort(rng.gamma(bgnbd["r"], 1.0 / bgnbd["alpha"], n_buyers))
    tilted_score = tables.segment_purchase_rate_tilt[users.segment[buyer]] + rng.standard_normal(n_buyers)
    rate_per_week = np.empty(n_buyers)
    rate_per_week[np.argsort(tilted_score)] = rates
    dropout_probability = rng.beta(bgnbd["a"], bgnbd["b"], n_buyers)
    spend_rate = rng.gamma(spend["q"], 1.0 / spend["v"], n_buyers)

    owner, repeat_day = _draw_repeat_days(
        rng, first_seconds / parameters.SECONDS_PER_DAY, rate_per_week, dropout_probability
    )
    owner = np.concatenate([np.arange(n_buyers), owner])
    day = np.concatenate([first_day, repeat_day])
    is_first = np.concatenate([np.ones(n_buyers, bool), np.zeros(len(repeat_day), bool)])
    order = np.lexsort((~is_first, day, owner))
    owner, day, is_first = owner[order], day[order], is_first[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
    day = _distinct_days(owner, day, rank)
    inside = day < parameters.WORLD_DAYS
    owner, day, is_first = owner[inside], day[inside], is_first[inside]

    seconds = _seconds_in_active_hours(rng, day)
    seconds[is_first] = first_seconds[owner[is_first]]
    amount = np.maximum(np.rint(rng.gamma(spend["p"], 1.0 / spend_rate[owner]) * 100), parameters.MINIMUM_ORDER_CENTS)
    user = buyer[owner]
    events = _Events.of(
        "course_purchase", user, _choose_courses(rng, users, user, tables), seconds, amount.astype(np.int64)
    )

    def per_user(values: Array[np.float64]) -> Array[np.float64]:
        full = np.full(users.count, np.nan)
        full[buyer] = values
        return full

    return _Purchases(events, per_user(rate_per_week), per_user(dropout_probability), per_user(spend["p"] / spend_rate))


def _views_before(rng: np.random.Generator, purchases: _Events) -> _Events:
    """Draw a view of the bought course up to an hour before some purchases, on the same day."""
    viewed = rng.random(len(purchases.user)) < parameters.VIEW_BEFORE_PURCHASE_PROBABILITY
    purchase_seconds = purchases.seconds[viewed]
    day_start = purchase_seconds - purchase_seconds % parameters.SECONDS_PER_DAY
    seconds = np.maximum(purchase_seconds - rng.integers(60, 3_600, len(purchase_seconds)), day_start)
    before = seconds < purchase_seconds
    return _Events.of("course_view", purchases.user[viewed][before], purchases.item[viewed][before], seconds[before])


def _draw_course_views(rng: np.random.Generator, users: _Users, tables: _Tables) -> _Events:
    user, day = _poisson_days(rng, users.first_active_day, tables.segment_view_rate[users.segment])
    courses = _choose_courses(rng, users, user, tables)
    return _Events.of("course_view", user, courses, _seconds_in_active_hours(rng, day))


def _draw_activity_joins(rng: np.random.Generator, users: _Users, tables: _Tables) -> _Events:
    user, day = _poisson_days(rng, users.first_active_day, tables.segment_activity_rate[users.segment])
    return _Events.of("activity_join", user, tables.activity_item_by_day[day], _seconds_in_active_hours(rng, day))


def _draw_offer_redeems(rng: np.random.Generator, users: _Users, tables: _Tables) -> _Events:
    user, day = _poisson_days(rng, users.first_active_day, tables.segment_redeem_rate[users.segment])
    return _Events.of("offer_redeem", user, tables.coupon_item_by_day[day], _seconds_in_active_hours(rng, day))


def _draw_memberships(
    rng: np.random.Generator, users: _Users, tables: _Tables, background_joins: _Events
) -> tuple[_Events, _Events]:
    """Draw paid membership spells from the planted Cox model: (membership events, extra joins)."""
    member = np.flatnonzero(rng.random(users.count) < tables.segment_membership_probability[users.segment])
    segment = users.segment[member]
    first_day = users.first_active_day[member]
    start_day = first_day + np.floor(rng.random(len(member)) * (parameters.WORLD_DAYS - first_day)).astype(np.int64)
    start_seconds = _seconds_in_active_hours(rng, start_day)

    plan = tables.home_partner_plan[users.home_partner[member]]
    other = plan < 0
    plan[other] = np.where(rng.random(other.sum()) < parameters.LANYING_SHARE_OF_OTHER_MEMBERSHIPS, 0, 1)
    discount_percent = np.rint(100 * np.array(parameters.MEMBERSHIP_DISCOUNT_LEVELS)).astype(np.int64)[
        _draw_rows(rng, tables.segment_discount_probabilities[segment])
    ]
    # Integer arithmetic keeps amount / list price exactly the discount (list prices are whole CNY).
    amount_cents = tables.plan_list_cents[plan] * (100 - discount_percent) // 100

    # Some members were brought in by an activity they joined shortly before.
    brought = rng.random(len(member)) < tables.segment_activity_before_membership[segment]
    join_day = start_day[brought] - rng.integers(1, parameters.CHURN_ACTIVITY_LOOKBACK_DAYS, brought.sum())
    kept = join_day >= first_day[brought]
    join_user, join_day = member[brought][kept], join_day[kept]
    extra_joins = _Events.of(
        "activity_join", join_user, tables.activity_item_by_day[join_day], _seconds_in_active_hours(rng, join_day)
    )

    # The covariate is read off the events, as a model fitted on the events would read it.
    member_start = np.full(users.count, np.iinfo(np.int64).min // 2)
    member_start[member] = start_seconds
    joins = _Events.concat([background_joins, extra_joins])
    lookback = parameters.CHURN_ACTIVITY_LOOKBACK_DAYS * parameters.SECONDS_PER_DAY
    in_window = (joins.seconds >= member_start[joins.user] - lookback) & (joins.seconds < member_start[joins.user])
    joined_activity = np.bincount(joins.user[in_window], minlength=users.count)[member] > 0

    coefficients = parameters.CHURN_COEFFICIENTS
    log_hazard_ratio = (
        tables.channel_hazard[users.channel[member]]
        + coefficients["discount_depth"] * (1 - amount_cents / tables.plan_list_cents[plan])
        + coefficients["joined_activity_14d"] * joined_activity
    )
    # Inverting S(t) = exp(-H0(t) * exp(lp)) at an Exp(1) draw of the cumulative hazard.
    duration_days = parameters.CHURN_BASELINE_SCALE_DAYS * (
        rng.exponential(1.0, len(member)) * np.exp(-log_hazard_ratio)
    ) ** (1.0 / parameters.CHURN_BASELINE_SHAPE)
    cancel_seconds = start_seconds + np.maximum(np.rint(duration_days * parameters.SECONDS_PER_DAY), 1).astype(np.int64)
    cancelled = cancel_seconds < _WORLD_END_SECONDS

    starts = _Events.of("membership_start", member, tables.plan_items[plan], start_seconds, amount_cents)
    cancels = _Events.of(
        "membership_cancel", member[cancelled], tables.plan_items[plan[cancelled]], cancel_seconds[cancelled]
    )
    return _Events.concat([starts, cancels]), extra_joins


def _draw_propensity_labels(
    rng: np.random.Generator, users: _Users, tables: _Tables, watches: _Events, purchases: _Purchases
) -> tuple[_Events, Array[np.float64]]:
    """Draw the target-course purchases from the planted logit of the observed features."""
    observation_end_seconds = parameters.OBSERVATION_END_DAY * parameters.SECONDS_PER_DAY
    features = pd.DataFrame(
        {
            "watching_count": np.bincount(
                watches.user[watches.seconds < observation_end_seconds], minlength=users.count
            ),
            "purchasing_count": np.bincount(
                purchases.events.user[purchases.events.seconds < observation_end_seconds], minlength=users.count
            ),
            "age": users.age,
            "education": np.array(parameters.EDUCATION_LEVELS, dtype=object)[users.education],
            "occupation": np.array(parameters.OCCUPATIONS, dtype=object)[users.occupation],
        }
    )
    probability = 1.0 / (1.0 + np.exp(-propensity_log_odds(features)))
    buyer = np.flatnonzero(rng.random(users.count) < probability)
    day = parameters.OBSERVATION_END_DAY + rng.integers(0, parameters.LABEL_WINDOW_DAYS, len(buyer))
    purchases_of_target = _Events.of(
        "course_purchase", buyer, tables.target_item, _seconds_in_active_hours(rng, day), tables.target_price_cents
    )
    return purchases_of_target, probability


def _generate_block(block_index: int, seed: int, tables: _Tables) -> _Block:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block_index,)))
    users = _draw_users(rng, BLOCK_SIZE, tables)
    watches = _draw_film_watches(rng, users, tables)
    purchases = _draw_course_purchases(rng, users, tables)
    background_joins = _draw_activity_joins(rng, users, tables)
    memberships, extra_joins = _draw_memberships(rng, users, tables, background_joins)
    target_purchases, purchase_probability = _draw_propensity_labels(rng, users, tables, watches, purchases)
    events = _Events.concat(
        [
            watches,
            purchases.events,
            _views_before(rng, purchases.events),
            target_purchases,
            _views_before(rng, target_purchases),
            _draw_course_views(rng, users, tables),
            background_joins,
            extra_joins,
            memberships,
            _draw_offer_redeems(rng, users, tables),
        ]
    )
    first_user_index = block_index * BLOCK_SIZE
    user_ids = np.array([user_id_for(first_user_index + index) for index in range(users.count)], dtype=object)
    users_frame = _users_frame(users, user_ids, purchases, purchase_probability)
    events_frame, event_user = _events_frame(events, user_ids, tables)
    _share_customers_of_several_partners(users_frame, events_frame, event_user)
    return _Block(users_frame, events_frame, event_user)


def _share_customers_of_several_partners(
    users_frame: pd.DataFrame, events_frame: pd.DataFrame, event_user: Array[np.int64]
) -> None:
    """Give the people with events at a partner other than their home partner consent and an alliance id.

    Drawn after everything else, so the world's other draws stay as they were.
    """
    home = users_frame["home_partner"].to_numpy()[event_user]
    several = np.zeros(len(users_frame), dtype=bool)
    several[event_user[events_frame["partner"].to_numpy() != home]] = True
    users_frame["data_sharing_consent"] = users_frame["data_sharing_consent"].to_numpy() | several
    alliance = np.where(several, users_frame["user_id"].to_numpy(), None)
    users_frame.insert(users_frame.columns.get_loc("signup_at"), "alliance_id", alliance)


def _users_frame(
    users: _Users, user_ids: Array[np.object_], purchases: _Purchases, purchase_probability: Array[np.float64]
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": user_ids,
            "home_partner": np.array(parameters.HOME_PARTNERS, dtype=object)[users.home_partner],
            "age": users.age,
            "gender": np.array(parameters.GENDERS, dtype=object)[users.gender],
            "education": np.array(parameters.EDUCATION_LEVELS, dtype=object)[users.education],
            "occupation": np.array(parameters.OCCUPATIONS, dtype=object)[users.occupation],
            "acquisition_channel": np.array(parameters.ACQUISITION_CHANNELS, dtype=object)[users.channel],
            "marketing_consent": users.marketing_consent,
            "data_sharing_consent": users.data_sharing_consent,
            "signup_at": pd.to_datetime(_START_EPOCH_SECONDS + users.signup_seconds, unit="s", utc=True),
            "latent_segment": np.array(parameters.SEGMENT_NAMES, dtype=object)[users.segment],
            "latent_top_category": np.array(parameters.CATEGORY_SLUGS, dtype=object)[users.top_category],
        }
    )
    for index, category in enumerate(CATEGORIES):
        frame[f"latent_interest_{category.slug}"] = users.interest[:, index]
    frame["latent_purchase_rate"] = purchases.rate_per_week
    frame["latent_dropout_probability"] = purchases.dropout_probability
    frame["latent_mean_spend"] = purchases.mean_spend
    frame["latent_purchase_probability"] = purchase_probability
    return frame


def _amount_strings(cents: Array[np.int64]) -> Array[np.object_]:
    """Format cents as Decimal strings with two places, once per distinct amount."""
    distinct, index = np.unique(cents, return_inverse=True)
    labels = np.array([f"{value // 100}.{value % 100:02d}" for value in distinct.tolist()], dtype=object)
    return labels[index]


def _events_frame(
    events: _Events, user_ids: Array[np.object_], tables: _Tables
) -> tuple[pd.DataFrame, Array[np.int64]]:
    order = np.lexsort((events.kind, events.seconds, events.user))
    user = events.user[order]
    sequence = np.arange(len(user)) - np.searchsorted(user, user) + 1
    event_user_ids = user_ids[user]
    item = events.item[order]
    frame = pd.DataFrame(
        {
            "event_id": [
                f"{user_id}-{number:03d}"
                for user_id, number in zip(event_user_ids.tolist(), sequence.tolist(), strict=True)
            ],
            "user_id": event_user_ids,
            "partner": tables.item_partner[item],
            "kind": np.array(EVENT_KINDS, dtype=object)[events.kind[order]],
            "item_id": tables.item_ids[item],
            "amount": _amount_strings(events.amount_cents[order]),
            "occurred_at": pd.to_datetime(_START_EPOCH_SECONDS + events.seconds[order], unit="s", utc=True),
        }
    )
    return frame, user
