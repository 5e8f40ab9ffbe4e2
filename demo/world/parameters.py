"""Planted parameters of the demo world: its clock, its user segments and its true models.

The world generator draws from these values and ``truth.planted_truth()`` reports them, so
that every fitted model can be compared with what was planted. Nothing here is random.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from demo.world.catalog import (
    CATEGORIES,
    CINEMA,
    GUANGNIAN,
    KNOWLEDGE,
    LANYING,
    STUDIO,
    TARGET_COURSE_SKU,
)

# The world's clock. Fixed dates, not today's, so that a seed always gives the same world.
WORLD_START = pd.Timestamp("2025-11-01T00:00:00Z")
WORLD_DAYS = 365
WORLD_END = WORLD_START + pd.Timedelta(days=WORLD_DAYS)
# The propensity model's observation end is the target course's launch (08:00 Shanghai).
OBSERVATION_END_DAY = 309
OBSERVATION_END = WORLD_START + pd.Timedelta(days=OBSERVATION_END_DAY)
LABEL_WINDOW_DAYS = 28
LABEL_WINDOW_END = OBSERVATION_END + pd.Timedelta(days=LABEL_WINDOW_DAYS)
SECONDS_PER_DAY = 86_400
# Users act between 08:00 and 24:00 Shanghai time, i.e. 00:00-16:00 UTC, so that an event's
# calendar day is the same in UTC and in Asia/Shanghai, and a day boundary drawn at either
# midnight splits the events the same way.
ACTIVE_SECONDS_PER_DAY = 16 * 3_600
# Users signed up during the two years before the world's year or during it, at the latest
# two days before the observation end, so that every user has at least one day to act
# before it.
SIGNUP_FIRST_DAY = -730
SIGNUP_LAST_DAY = OBSERVATION_END_DAY - 2
SHARE_SIGNED_UP_BEFORE_START = 0.55

CATEGORY_SLUGS = tuple(category.slug for category in CATEGORIES)
EDUCATION_LEVELS = ("高中", "大专", "本科", "硕士", "博士")
EDUCATION_REFERENCE = "本科"
OCCUPATIONS = ("学生", "互联网从业者", "金融从业者", "教师", "自由职业者", "公司职员")
OCCUPATION_REFERENCE = "公司职员"
ACQUISITION_CHANNELS = ("线上广告", "社交裂变", "应用商店", "合作伙伴", "自然流量")
CHANNEL_REFERENCE = "自然流量"
GENDERS = ("男", "女", None)
GENDER_PROBABILITIES = (0.48, 0.45, 0.07)
HOME_PARTNERS = (KNOWLEDGE, LANYING, GUANGNIAN, CINEMA, STUDIO)
MARKETING_CONSENT_PROBABILITY = 0.88
# Data sharing is asked right after marketing consent; those who refused one mostly refuse both.
DATA_SHARING_PROBABILITY_GIVEN_MARKETING = {True: 0.80, False: 0.30}
# A first-month discount is one of these fractions of the membership's list price.
MEMBERSHIP_DISCOUNT_LEVELS = (0.0, 0.1, 0.3, 0.5)
# Where a user does not belong to a video platform, this share of memberships goes to Lanying.
LANYING_SHARE_OF_OTHER_MEMBERSHIPS = 0.6
# Course pages are usually viewed shortly before a purchase.
VIEW_BEFORE_PURCHASE_PROBABILITY = 0.5
# How much of a user's interest goes to their favourite category (the rest is spread).
TOP_CATEGORY_INTEREST = 0.6
# Item popularity within a category falls with the item's rank: 1 / (rank + 1) ** this.
POPULARITY_DECAY = 0.8
# Cinema tickets cost money, so cinema films are chosen less often than streamed ones.
CINEMA_POPULARITY_FACTOR = 0.5


@dataclass(frozen=True)
class SegmentProfile:
    """A latent user segment and the behaviour it drives.

    Rates are per year of the user's time in the world; probabilities are per user.
    Tuples of probabilities follow the order of the matching module constant
    (``CATEGORY_SLUGS``, ``EDUCATION_LEVELS``, ``OCCUPATIONS``, ``ACQUISITION_CHANNELS``,
    ``HOME_PARTNERS``, ``MEMBERSHIP_DISCOUNT_LEVELS``).
    """

    name: str
    name_zh: str
    description: str
    share: float
    film_watches_per_year: float
    course_views_per_year: float
    buyer_probability: float
    purchase_rate_tilt: float
    membership_probability: float
    discount_probabilities: tuple[float, ...]
    activity_joins_per_year: float
    activity_before_membership_probability: float
    offer_redeems_per_year: float
    top_category_probabilities: tuple[float, ...]
    age_mean: float
    age_sd: float
    education_probabilities: tuple[float, ...]
    occupation_probabilities: tuple[float, ...]
    channel_probabilities: tuple[float, ...]
    home_partner_probabilities: tuple[float, ...]


SEGMENTS = (
    SegmentProfile(
        "film_buff",
        "影迷",
        "watches many films, rarely buys courses, often a video member",
        0.22,
        13.0,
        0.5,
        0.30,
        -0.4,
        0.60,
        (0.5, 0.2, 0.2, 0.1),
        0.7,
        0.25,
        0.3,
        (0.20, 0.20, 0.20, 0.30, 0.10),
        28,
        7,
        (0.20, 0.30, 0.40, 0.08, 0.02),
        (0.20, 0.15, 0.05, 0.05, 0.20, 0.35),
        (0.30, 0.15, 0.20, 0.15, 0.20),
        (0.15, 0.40, 0.25, 0.12, 0.08),
    ),
    SegmentProfile(
        "eager_learner",
        "好学者",
        "buys courses often and early, watches little",
        0.18,
        2.5,
        1.8,
        0.85,
        0.8,
        0.20,
        (0.6, 0.2, 0.15, 0.05),
        1.0,
        0.30,
        0.3,
        (0.25, 0.35, 0.10, 0.10, 0.20),
        27,
        6,
        (0.05, 0.15, 0.50, 0.25, 0.05),
        (0.30, 0.25, 0.15, 0.08, 0.05, 0.17),
        (0.25, 0.10, 0.20, 0.15, 0.30),
        (0.70, 0.10, 0.08, 0.02, 0.10),
    ),
    SegmentProfile(
        "culture_enthusiast",
        "文化达人",
        "watches and learns a lot, joins activities",
        0.08,
        11.0,
        1.8,
        0.80,
        1.0,
        0.60,
        (0.5, 0.2, 0.2, 0.1),
        2.0,
        0.50,
        0.5,
        (0.20, 0.20, 0.20, 0.20, 0.20),
        33,
        8,
        (0.05, 0.20, 0.50, 0.20, 0.05),
        (0.10, 0.20, 0.15, 0.15, 0.15, 0.25),
        (0.20, 0.15, 0.15, 0.20, 0.30),
        (0.40, 0.20, 0.15, 0.10, 0.15),
    ),
    SegmentProfile(
        "bargain_hunter",
        "价格敏感型",
        "redeems offers, takes deep discounts, came through referrals",
        0.22,
        3.2,
        0.9,
        0.45,
        -0.3,
        0.40,
        (0.1, 0.2, 0.3, 0.4),
        1.4,
        0.40,
        2.5,
        (0.25, 0.20, 0.20, 0.15, 0.20),
        31,
        9,
        (0.25, 0.35, 0.33, 0.06, 0.01),
        (0.25, 0.10, 0.05, 0.05, 0.15, 0.40),
        (0.20, 0.45, 0.15, 0.10, 0.10),
        (0.40, 0.25, 0.20, 0.10, 0.05),
    ),
    SegmentProfile(
        "dormant",
        "沉睡用户",
        "signed up and does little",
        0.30,
        0.8,
        0.2,
        0.08,
        -0.8,
        0.05,
        (0.4, 0.2, 0.2, 0.2),
        0.1,
        0.10,
        0.05,
        (0.20, 0.20, 0.20, 0.20, 0.20),
        38,
        11,
        (0.30, 0.30, 0.30, 0.08, 0.02),
        (0.10, 0.10, 0.08, 0.10, 0.12, 0.50),
        (0.35, 0.20, 0.20, 0.10, 0.15),
        (0.40, 0.25, 0.20, 0.10, 0.05),
    ),
)
SEGMENT_NAMES = tuple(segment.name for segment in SEGMENTS)
# Students are young whatever their segment: 18 plus a Poisson number of years.
STUDENT_AGE_FLOOR = 18
STUDENT_AGE_POISSON_MEAN = 3.0
AGE_RANGE = (18, 65)
# Film watching rates vary within a segment: each user's rate is the segment's times a
# Gamma(shape, 1 / shape) factor with mean 1.
FILM_RATE_HETEROGENEITY_SHAPE = 2.0

# a. Purchase propensity: logit P(purchased_course = 1) for the target course.
PROPENSITY_TARGET_COURSE = TARGET_COURSE_SKU
PROPENSITY_COEFFICIENTS = {
    "intercept": -2.6,
    "watching_count": 0.05,
    "purchasing_count": 0.30,
    "age": -0.03,
    "education_高中": -0.50,
    "education_大专": -0.25,
    "education_硕士": 0.30,
    "education_博士": 0.15,
    "occupation_学生": 0.35,
    "occupation_互联网从业者": 0.60,
    "occupation_金融从业者": 0.70,
    "occupation_教师": 0.10,
    "occupation_自由职业者": -0.20,
}

# b. Churn: Cox proportional hazards with a Weibull baseline, time in days:
# cumulative baseline hazard H0(t) = (t / scale) ** shape.
CHURN_BASELINE_SHAPE = 0.9
CHURN_BASELINE_SCALE_DAYS = 150.0
CHURN_ACTIVITY_LOOKBACK_DAYS = 14
CHURN_COEFFICIENTS = {
    "acquisition_channel_线上广告": 0.35,
    "acquisition_channel_社交裂变": 0.50,
    "acquisition_channel_应用商店": 0.15,
    "acquisition_channel_合作伙伴": -0.25,
    "discount_depth": 1.20,
    "joined_activity_14d": -0.60,
}

# c. Repeat course purchases: BG/NBD (time unit: weeks) and Gamma-Gamma spend (CNY).
BGNBD_PARAMETERS = {"r": 1.0, "alpha": 3.0, "a": 0.7, "b": 3.5}
GAMMA_GAMMA_PARAMETERS = {"p": 6.0, "q": 4.0, "v": 75.0}
# Mean days from a buyer's first day in the world to their first course purchase.
FIRST_PURCHASE_MEAN_DAYS = 60.0
# A course order costs at least this much (a Gamma draw below it is raised to it).
MINIMUM_ORDER_CENTS = 100

# d. Campaign effects. Conversion = buying one of the campaign's target courses within its
# conversion window. These per-segment tables are scaled per campaign below; the truth
# reports the resulting numbers per campaign, segment and offer package.
BASE_CONVERSION_BY_SEGMENT = {
    "film_buff": 0.015,
    "eager_learner": 0.10,
    "culture_enthusiast": 0.12,
    "bargain_hunter": 0.025,
    "dormant": 0.004,
}
# Absolute conversion uplift of one offer of each kind; a package of several offers adds up.
# Zeros are the "would have bought anyway" (or "would not buy anyway") cases.
CONVERSION_UPLIFT_BY_OFFER_KIND = {
    "coupon": {
        "film_buff": 0.02,
        "eager_learner": 0.0,
        "culture_enthusiast": 0.0,
        "bargain_hunter": 0.08,
        "dormant": 0.004,
    },
    "free_viewing": {
        "film_buff": 0.05,
        "eager_learner": 0.01,
        "culture_enthusiast": 0.0,
        "bargain_hunter": 0.015,
        "dormant": 0.002,
    },
    "movie_ticket": {
        "film_buff": 0.03,
        "eager_learner": 0.0,
        "culture_enthusiast": 0.0,
        "bargain_hunter": 0.04,
        "dormant": 0.003,
    },
    "membership_grant": {
        "film_buff": 0.04,
        "eager_learner": 0.02,
        "culture_enthusiast": 0.0,
        "bargain_hunter": 0.05,
        "dormant": 0.002,
    },
}
# Per campaign: (scale of the base conversion, scale of the uplift, mean order value in CNY
# before any coupon). Campaigns for all courses use the mean course order.
CAMPAIGN_RESPONSE = {
    "member-day-rewards": (1.5, 1.0, 150.0),
    "economics-in-movies": (0.5, 1.3, 199.0),
    "strategy-documentary": (0.4, 1.2, 269.0),
    "coding-drama": (0.6, 1.2, 169.0),
    "course-buy-membership": (1.2, 1.0, 150.0),
    "script-workshop": (0.3, 1.5, 299.0),
    "double12-flash-sale": (1.0, 1.0, 150.0),
}
MAXIMUM_CONVERSION = 0.95
# Order values of converted users vary around the mean: Gamma with this shape and mean 1.
ORDER_VALUE_SHAPE = 16.0

# e. The funnel after an offer is issued, which the demo plays through the real services
# (``demo.services.play``): redemption, activation and use, deal grants and what granted users
# spend, and how memberships end after the world's year. Probabilities are per offer or user.
# A treated user who buys a promoted course with a coupon for it in hand uses the coupon with this
# probability; coupons of users who buy nothing are never used.
COUPON_REDEMPTION_PROBABILITY = 0.85
# A free-viewing trial is activated with this probability, some time in its first days; an
# activated trial of a partner with a paid plan becomes a paid membership when the trial ends
# with this probability.
TRIAL_ACTIVATION_PROBABILITY = 0.6
TRIAL_TO_PAID_PROBABILITY = 0.25
# A movie ticket is used (a cinema film_watch on the ticket) with this probability before it expires.
TICKET_USE_PROBABILITY = 0.7
# A campaign's membership grant is the benefit of a deal triggered by buying a course: a treated user who buys one
# takes the grant up with this probability (after the purchase); one who buys nothing cannot take it up.
GRANT_ACTIVATION_PROBABILITY = 0.8
# What a user granted a deal's benefit then spends at the deal's target partner, by benefit: a month
# of membership turns into a paid month of the partner's plan when it ends; a movie ticket brings
# a paid cinema visit (at a film's ticket price) within a month. Free viewing leads to no spend
# (the studio sells nothing).
DEAL_GRANT_SPEND_PROBABILITY = {"membership_days": 0.35, "movie_ticket": 0.4}
# What each issued offer costs the campaign (its budget reserves face value at issue regardless).
OFFER_COST_MODEL = {
    "coupon": "its discount, when redeemed (the ledger's discount); nothing if never used",
    "movie_ticket": "its stock code's value, bought from the cinema at issue; an unused ticket's code goes back to "
    "the pool when the offer expires (the codes outlive the offers) and takes its cost with it, so once the offers "
    "have ended a ticket costs its value when used",
    "free_viewing": "the video partner's settlement price (the offer's cost), per activated trial",
    "membership_grant": "the deal's settlement price (the offer's cost), when taken up (redeemed), which only a user "
    "who bought a course the deal names since the grant was issued can do",
}
