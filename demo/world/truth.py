"""The demo world's planted truth: what every fitted model and report should recover.

``planted_truth()`` returns it as a JSON-safe dict (stored with the data by the loader).
Its top-level keys:

- ``world``: the clock (start, end, observation end, label window) and the event kinds;
- ``segments``: the latent segments with their shares and Chinese names;
- ``propensity``: population, exact feature and label definitions, coefficients (logit);
- ``churn``: the spell definition, covariates, reference level, Weibull baseline, coefficients;
- ``purchase_process``: BG/NBD ``r, alpha, a, b`` (weeks), Gamma-Gamma ``p, q, v`` and the
  fitting convention;
- ``markov_clv``: how the monthly active/lapsed/churned states follow from the purchases;
- ``recommendations``: how item choice depends on the users' latent category interest;
- ``campaign_effects``: per campaign, per segment the base conversion and revenue, and per
  offer package (``Rule.effect_key``) the absolute uplift in conversion and revenue.

``simulate_campaign_outcomes()`` draws a campaign's conversions from that truth and
``expected_campaign_uplift()`` says what a treated-versus-holdout comparison should find.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from demo.world import parameters
from demo.world.catalog import Campaign, demo_catalog

EVENT_KINDS = (
    "film_watch",
    "course_view",
    "course_purchase",
    "membership_start",
    "membership_cancel",
    "activity_join",
    "offer_redeem",
)
TRUTH_VERSION = 2


def _iso(timestamp: pd.Timestamp) -> str:
    return timestamp.isoformat()


def propensity_log_odds(features: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Return the true log-odds of buying the target course for each row of ``features``.

    ``features`` needs the columns ``watching_count``, ``purchasing_count``, ``age``,
    ``education`` and ``occupation``, defined as in ``planted_truth()["propensity"]``.
    """
    coefficients = parameters.PROPENSITY_COEFFICIENTS
    log_odds = (
        coefficients["intercept"]
        + coefficients["watching_count"] * features["watching_count"].to_numpy(dtype=float)
        + coefficients["purchasing_count"] * features["purchasing_count"].to_numpy(dtype=float)
        + coefficients["age"] * features["age"].to_numpy(dtype=float)
    )
    for column in ("education", "occupation"):
        level_effect = {
            name.removeprefix(f"{column}_"): value
            for name, value in coefficients.items()
            if name.startswith(f"{column}_")
        }
        log_odds = log_odds + features[column].map(level_effect).fillna(0.0).to_numpy(dtype=float)
    return log_odds


def true_purchase_probability(features: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Return the true probability of buying the target course in the label window."""
    return 1.0 / (1.0 + np.exp(-propensity_log_odds(features)))


def _price_reduction(rule_offers: Any, order_value: float) -> float:
    reduction = 0.0
    for offer in rule_offers:
        if offer.kind != "coupon":
            continue
        if offer.amount is not None:
            reduction += float(offer.amount)
        elif offer.percent_off is not None:
            reduction += order_value * offer.percent_off / 100.0
    return min(reduction, order_value)


def _package_spent(kinds: Sequence[str], offer_costs: Mapping[str, float], coupon_discount: float) -> dict[str, Any]:
    """Return, per offer kind of a package, what one treated user costs as a function of their conversion.

    Each value is ``(fixed, per_conversion)``: the expected spend is ``fixed + per_conversion *
    treated_conversion`` under ``parameters.OFFER_COST_MODEL``.
    """
    spent: dict[str, tuple[float, float]] = {}
    for kind in dict.fromkeys(kinds):
        cost = float(offer_costs.get(kind, 0.0))
        if kind == "coupon":
            spent[kind] = (0.0, parameters.COUPON_REDEMPTION_PROBABILITY * coupon_discount)
        elif kind in _TAKEN_UP_BY_BUYERS:
            spent[kind] = (0.0, _TAKE_UP_PROBABILITY[kind] * cost)
        elif kind in _TAKE_UP_PROBABILITY:
            spent[kind] = (_TAKE_UP_PROBABILITY[kind] * cost, 0.0)
        else:
            spent[kind] = (cost, 0.0)
    return spent


# What an offer of these kinds costs is paid only for the offers taken up (``campaigns.services.offer_costs``):
# a trial per activation, a grant when taken up, and a prepaid ticket when used, since an unused one's code (the
# demo's codes outlive its offers) goes back to the pool when the offer expires and takes its cost with it.
_TAKE_UP_PROBABILITY = {
    "free_viewing": parameters.TRIAL_ACTIVATION_PROBABILITY,
    "movie_ticket": parameters.TICKET_USE_PROBABILITY,
    "membership_grant": parameters.GRANT_ACTIVATION_PROBABILITY,
}
# A membership grant is the deal's benefit for buying a course: only a treated user who bought can take it up.
_TAKEN_UP_BY_BUYERS = frozenset({"membership_grant"})


def homogeneous_uplift() -> dict[str, dict[str, float]]:
    """Return the per-kind conversion uplift table with no heterogeneity: every segment gets the kind's mean effect.

    The mean is weighted by the segments' shares, so the population's average effect is the
    demo's; only who it falls on changes (nobody is changed more than anyone else).
    """
    shares = {segment.name: segment.share for segment in parameters.SEGMENTS}
    total = sum(shares.values())
    return {
        kind: dict.fromkeys(parameters.SEGMENT_NAMES, sum(effect[name] * shares[name] for name in effect) / total)
        for kind, effect in parameters.CONVERSION_UPLIFT_BY_OFFER_KIND.items()
    }


def amplified_uplift(factor: float) -> dict[str, dict[str, float]]:
    """Return the per-kind uplift table with each segment ``factor`` times as far from the kind's mean as in the demo.

    The share-weighted mean of each kind stays the demo's (before effects below zero are
    raised to zero); ``factor`` 0 is ``homogeneous_uplift()``, 1 the demo's own table.
    """
    mean = homogeneous_uplift()
    return {
        kind: {name: max(0.0, mean[kind][name] + factor * (value - mean[kind][name])) for name, value in effect.items()}
        for kind, effect in parameters.CONVERSION_UPLIFT_BY_OFFER_KIND.items()
    }


def planted_package_effects(
    campaign_slug: str,
    kinds: Sequence[str],
    price_reduction: float,
    offer_costs: Mapping[str, float] | None = None,
    uplift_by_kind: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Return the planted effect, per segment, of giving one package of offer kinds in a campaign's setting.

    The package's conversion uplifts add up per kind (scaled as the campaign's are), capped
    at ``MAXIMUM_CONVERSION``; a converted user pays the campaign's order value less
    ``price_reduction`` (the package's coupons) when they use the coupon, which they do with
    ``COUPON_REDEMPTION_PROBABILITY``. This is how the catalog's own packages are planted, so
    any other package (one offer of a kind, say) can be checked against the same truth.

    Revenue is what users pay (net of the coupon); margin is gross of the package's own coupon,
    as the campaign report measures it: what was paid plus the discount (``margin_per_conversion``
    is the order value, with no partner's share; ``margin_uplift_per_user`` is the revenue uplift
    plus ``discount_per_treated_user``), since the discount is the coupon's cost and is counted
    once, in spent. With ``offer_costs`` (the package's cost per issued offer, by kind), each
    segment also gets what a treated user is expected to cost under ``OFFER_COST_MODEL``
    (``spent_per_treated_user``) and the return on it, ``roi = (margin_uplift_per_user - spent) / spent``.
    ``uplift_by_kind`` replaces the demo's per-kind, per-segment table (``homogeneous_uplift()``).
    """
    table = parameters.CONVERSION_UPLIFT_BY_OFFER_KIND if uplift_by_kind is None else uplift_by_kind
    base_scale, uplift_scale, order_value = parameters.CAMPAIGN_RESPONSE[campaign_slug]
    reduction = min(float(price_reduction), order_value)
    uses_coupon = "coupon" in kinds and reduction > 0
    expected_discount = parameters.COUPON_REDEMPTION_PROBABILITY * reduction if uses_coupon else 0.0
    revenue_per_conversion = order_value - expected_discount
    spent_terms = _package_spent(kinds, offer_costs, reduction) if offer_costs is not None else None
    segments: dict[str, dict[str, Any]] = {}
    for name in parameters.SEGMENT_NAMES:
        base = parameters.BASE_CONVERSION_BY_SEGMENT[name] * base_scale
        uplift = uplift_scale * sum(table[kind][name] for kind in kinds)
        treated_conversion = min(base + uplift, parameters.MAXIMUM_CONVERSION)
        revenue_uplift = treated_conversion * revenue_per_conversion - base * order_value
        discount = treated_conversion * expected_discount
        segments[name] = {
            "conversion_uplift": round(treated_conversion - base, 6),
            "treated_conversion": round(treated_conversion, 6),
            "revenue_uplift_per_user": round(revenue_uplift, 6),
            "discount_per_treated_user": round(discount, 6),
            "margin_uplift_per_user": round(revenue_uplift + discount, 6),
        }
        if spent_terms is not None:
            by_kind = {
                kind: fixed + per_conversion * treated_conversion
                for kind, (fixed, per_conversion) in spent_terms.items()
            }
            spent = sum(by_kind.values())
            segments[name]["spent_per_treated_user"] = round(spent, 6)
            segments[name]["spent_by_kind"] = {kind: round(value, 6) for kind, value in by_kind.items()}
            segments[name]["roi"] = round((revenue_uplift + discount - spent) / spent, 6) if spent > 0 else None
    return {
        "price_reduction": round(reduction, 2),
        "expected_discount_per_conversion": round(expected_discount, 2),
        "revenue_per_conversion": round(revenue_per_conversion, 2),
        "margin_per_conversion": round(order_value, 2),
        **({"offer_costs": {kind: float(offer_costs.get(kind, 0.0)) for kind in kinds}} if offer_costs else {}),
        "segments": segments,
    }


def _offer_costs(rule_offers: Any) -> dict[str, float]:
    costs: dict[str, float] = {}
    for offer in rule_offers:
        costs[offer.kind] = costs.get(offer.kind, 0.0) + float(offer.cost_per_issue)
    return costs


def campaign_effects(uplift_by_kind: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Return every demo campaign's planted effects (the truth's ``campaign_effects``), optionally another table."""
    return {campaign.slug: _campaign_effects(campaign, uplift_by_kind) for campaign in demo_catalog().campaigns}


def _campaign_effects(
    campaign: Campaign, uplift_by_kind: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, Any]:
    base_scale, _uplift_scale, order_value = parameters.CAMPAIGN_RESPONSE[campaign.slug]
    base_conversion = {
        name: parameters.BASE_CONVERSION_BY_SEGMENT[name] * base_scale for name in parameters.SEGMENT_NAMES
    }
    offers: dict[str, Any] = {}
    for rule in campaign.rules:
        package = planted_package_effects(
            campaign.slug,
            [offer.kind for offer in rule.offers],
            _price_reduction(rule.offers, order_value),
            _offer_costs(rule.offers),
            uplift_by_kind,
        )
        offers[rule.effect_key] = {
            "rules": [other.slug for other in campaign.rules if other.effect_key == rule.effect_key],
            **package,
        }
    return {
        "outcome": "a course_purchase of one of target_course_skus within conversion_window_days of the offer "
        "(or of being held out)",
        "target_course_skus": list(campaign.target_course_skus),
        "conversion_window_days": campaign.conversion_window_days,
        "order_value": order_value,
        "order_value_distribution": f"a converted user's order = order_value * Gamma(shape "
        f"{parameters.ORDER_VALUE_SHAPE}, mean 1), rounded to cents; a treated user holding a coupon for the "
        f"course pays it less the coupon's discount with probability {parameters.COUPON_REDEMPTION_PROBABILITY} "
        f"(revenue_per_conversion is the expected price paid; margin_per_conversion what the order was worth before "
        f"the coupon, the margin the report measures with no partner's share: the discount is spent, counted once)",
        "segments": {
            name: {
                "base_conversion": round(base_conversion[name], 6),
                "base_revenue_per_user": round(base_conversion[name] * order_value, 6),
            }
            for name in parameters.SEGMENT_NAMES
        },
        "offers": offers,
    }


def planted_truth(*, n_users: int, seed: int) -> dict[str, Any]:
    """Return the planted truth of the demo world generated with these arguments."""
    catalog = demo_catalog()
    return {
        "version": TRUTH_VERSION,
        "seed": seed,
        "n_users": n_users,
        "world": {
            "start": _iso(parameters.WORLD_START),
            "end": _iso(parameters.WORLD_END),
            "observation_end": _iso(parameters.OBSERVATION_END),
            "label_window_end": _iso(parameters.LABEL_WINDOW_END),
            "event_kinds": list(EVENT_KINDS),
            "timestamps": "UTC. Users act 08:00-24:00 Asia/Shanghai (00:00-16:00 UTC), so an event's "
            "calendar day is the same in UTC and in Asia/Shanghai; only membership_cancel "
            "events fall at any time of day.",
            "user_ids": "one pseudonymous user_id per person, shared by all partners' events",
            "event_ids": "<user_id>-<sequence>, unique across all partners",
        },
        "segments": {
            segment.name: {"name_zh": segment.name_zh, "description": segment.description, "share": segment.share}
            for segment in parameters.SEGMENTS
        },
        "propensity": {
            "model": "logistic regression",
            "target_course": parameters.PROPENSITY_TARGET_COURSE,
            "observation_end": _iso(parameters.OBSERVATION_END),
            "label_window_end": _iso(parameters.LABEL_WINDOW_END),
            "population": "every user whose signup_at < observation_end (in the demo world: every user)",
            "label": "purchased_course = 1 if the user has a course_purchase event with item_id == target_course "
            "and observation_end <= occurred_at < label_window_end, else 0",
            "features": {
                "watching_count": "number of the user's film_watch events (any partner) with "
                "occurred_at < observation_end",
                "purchasing_count": "number of the user's course_purchase events (any course) with "
                "occurred_at < observation_end",
                "age": "users.age in years, as a number",
                "education": f"one 0/1 dummy per level other than the reference "
                f"{parameters.EDUCATION_REFERENCE}, named education_<level>",
                "occupation": f"one 0/1 dummy per level other than the reference "
                f"{parameters.OCCUPATION_REFERENCE}, named occupation_<level>",
            },
            "reference_levels": {
                "education": parameters.EDUCATION_REFERENCE,
                "occupation": parameters.OCCUPATION_REFERENCE,
            },
            "levels": {"education": list(parameters.EDUCATION_LEVELS), "occupation": list(parameters.OCCUPATIONS)},
            "coefficients": dict(parameters.PROPENSITY_COEFFICIENTS),
            "generation": "the label is drawn from exactly this logit of the features computed from the "
            "generated events; nothing else (segment, interest) enters it",
        },
        "churn": {
            "model": "Cox proportional hazards",
            "spell": "one row per membership_start event; duration_days = days from it to the user's "
            "membership_cancel event for the same plan (item_id), event observed = 1; without a "
            "cancel, duration_days = days to the world end, event observed = 0",
            "covariates": {
                "acquisition_channel": f"one 0/1 dummy per channel other than the reference "
                f"{parameters.CHANNEL_REFERENCE}, named acquisition_channel_<channel>",
                "discount_depth": "1 - amount / list_price of the membership plan, from the membership_start "
                "event (0 = full price, 0.5 = half price)",
                "joined_activity_14d": f"1 if the user has an activity_join event with membership_start - "
                f"{parameters.CHURN_ACTIVITY_LOOKBACK_DAYS} days <= occurred_at < membership_start, "
                f"else 0",
            },
            "reference_levels": {"acquisition_channel": parameters.CHANNEL_REFERENCE},
            "levels": {"acquisition_channel": list(parameters.ACQUISITION_CHANNELS)},
            "time_unit": "days",
            "baseline": {
                "distribution": "weibull",
                "cumulative_hazard": "H0(t) = (t / scale) ** shape",
                "shape": parameters.CHURN_BASELINE_SHAPE,
                "scale_days": parameters.CHURN_BASELINE_SCALE_DAYS,
            },
            "coefficients": dict(parameters.CHURN_COEFFICIENTS),
            "censoring": "administrative, at the world end; independent of the duration given the covariates",
        },
        "purchase_process": {
            "model": "BG/NBD",
            "time_unit": "weeks",
            "parameters": dict(parameters.BGNBD_PARAMETERS),
            "spend": {
                "model": "Gamma-Gamma",
                "parameters": dict(parameters.GAMMA_GAMMA_PARAMETERS),
                "meaning": "amount of each course_purchase ~ Gamma(shape p, rate nu), nu ~ Gamma(shape q, rate v) "
                "per customer; the amount is the order total (course plus add-ons, after coupons), "
                "not the course's list price",
            },
            "transactions": "course_purchase events, excluding those of the propensity target course (which "
            "only the propensity label plants, after observation_end)",
            "fitting_convention": {
                "calibration_end": _iso(parameters.OBSERVATION_END),
                "population": "every user with a course_purchase before calibration_end",
                "day": "calendar date of occurred_at (the same in UTC and Asia/Shanghai for purchases)",
                "frequency": "number of distinct purchase days before calibration_end, minus 1 (same-day "
                "purchases count as one)",
                "recency_weeks": "(last purchase day - first purchase day) / 7",
                "T_weeks": "(calibration_end date - first purchase day) / 7",
                "monetary_value": "mean amount of the repeat purchases (for the Gamma-Gamma fit)",
            },
            "generation": f"a would-be buyer's first purchase comes an exponential time (mean "
            f"{parameters.FIRST_PURCHASE_MEAN_DAYS:g} days) after their first day in the world; who would "
            f"first buy after calibration_end never buys, so every buyer is in the population. From "
            f"the first purchase, repeat purchases follow the BG/NBD process until the world end; a "
            f"repeat that falls on the day of an earlier purchase moves to the next free day, so "
            f"purchase days are distinct. The buyers' purchase rates are an iid Gamma(r, alpha) "
            f"sample handed out by segment (eager learners tend to get the larger rates), so the "
            f"population is BG/NBD while segments differ; dropout probabilities and spend rates "
            f"do not depend on the segment.",
        },
        "markov_clv": {
            "states": {
                "active": "at least one course_purchase in the calendar month (Asia/Shanghai)",
                "lapsed": "no course_purchase in the month, but one in one of the two months before",
                "churned": "no course_purchase in the month nor in the two months before, after a first purchase",
            },
            "generation": "not planted separately: the monthly states follow from the BG/NBD purchase process, "
            "so the transition matrix the Markov model fits summarises it. A customer who has dropped "
            "out stays churned for good, while one still alive with a low purchase rate moves from "
            "churned back to active now and then; the CLV of both models can be checked against the "
            "latent purchase rates, dropout probabilities and mean spends in the users table.",
        },
        "recommendations": {
            "model": "each user has a latent interest over categories (users.latent_interest_<category>, "
            f"{parameters.TOP_CATEGORY_INTEREST:.0%} on their latent_top_category); each film watched and "
            "course viewed or bought is chosen with probability proportional to "
            "interest[category] * popularity, among licensed films and launched courses",
            "popularity": f"1 / (rank within category + 1) ** {parameters.POPULARITY_DECAY}, cinema films times "
            f"{parameters.CINEMA_POPULARITY_FACTOR}",
            "category_pairs": {
                category.slug: [category.name_zh, category.film_genre_zh] for category in catalog.categories
            },
            "consequence": "a film lover's courses follow the categories of their films, so item-item "
            "co-occurrence beats recommending the most popular items",
        },
        "campaign_effects": {campaign.slug: _campaign_effects(campaign) for campaign in catalog.campaigns},
        "funnel": _funnel(),
    }


def _funnel() -> dict[str, Any]:
    return {
        "played_by": "demo.services.play, through the real services: offers redeemed or activated through the "
        "redemption service (so the ledger records each discount), deal grants through the deal evaluation, "
        "and the behaviour that follows as ordinary events up to the time the demo runs",
        "coupon_redemption_probability": parameters.COUPON_REDEMPTION_PROBABILITY,
        "coupon_redemption": "a treated user who converts (buys a promoted course; the course their coupon names, "
        "when it names one) uses each coupon for it with this probability, at the purchase, which then falls while "
        "the coupon is valid (a member day's coupons last the day); users who do not convert never use theirs, so "
        "some coupons are never used and expire",
        "trial_activation_probability": parameters.TRIAL_ACTIVATION_PROBABILITY,
        "trial_to_paid_probability": parameters.TRIAL_TO_PAID_PROBABILITY,
        "trials": "a free-viewing trial is activated (redeemed) within its first three days (and while valid) with the "
        "activation "
        "probability; an activated trial of a partner with a paid plan becomes a membership_start of that plan at "
        "list price when the trial's days end, with the trial-to-paid probability",
        "ticket_use_probability": parameters.TICKET_USE_PROBABILITY,
        "tickets": "a movie ticket is used (redeemed, and a cinema film_watch of amount 0 recorded) within its "
        "first two weeks (and while valid) with this probability",
        "grant_activation_probability": parameters.GRANT_ACTIVATION_PROBABILITY,
        "deal_grant_spend_probability": dict(parameters.DEAL_GRANT_SPEND_PROBABILITY),
        "deal_grants": "every deal grant is confirmed (the partners pull grants through the API). A user granted a "
        "month of membership starts a paid month of the target partner's plan at list price when it ends, and one "
        "granted a movie ticket buys a cinema ticket within 30 days, each with the spend probability; so the "
        "target partner owes a revenue share while the source partner owes the grants",
        "memberships_after_the_world": "every membership spell still open at the world end (and every paid "
        "membership the demo starts) ends at a time drawn from the planted Cox model given that it lasted until "
        "then; a membership_cancel is recorded when that time has come by the time the demo runs",
        "cost_model": dict(parameters.OFFER_COST_MODEL),
        "roi": "per campaign, (expected incremental margin - expected spent) / expected spent over the users it "
        "treated, where the incremental margin is revenue_uplift_per_user (what users paid) plus "
        "discount_per_treated_user (the campaign's own coupons: margin is gross of them, as the report measures it) "
        "of each user's segment and package, and spent is spent_per_treated_user under cost_model (a used coupon's "
        "discount among it, so it is counted once); recorded at play time under played_campaigns, as of that time "
        "(as_of): while a campaign's prepaid movie tickets are still valid each costs its value, used or not, as the "
        "report counts it then; when_offers_end holds the figures once every offer has ended",
    }


def planted_campaign_roi(
    truth: Mapping[str, Any],
    campaign_slug: str,
    segments: npt.ArrayLike,
    offer_keys: npt.ArrayLike,
    *,
    margin_rate: float = 1.0,
    prepaid_tickets_open: bool = False,
) -> dict[str, Any]:
    """Return what a campaign that treated these users should earn and spend by the planted truth, and its ROI.

    ``segments`` and ``offer_keys`` hold each treated user's ``latent_segment`` and package
    (``Rule.effect_key``). The incremental revenue and spend are expectations given exactly these
    users (the estimand of a treated-versus-holdout comparison); the ROI is on spent, under the
    truth's ``funnel.cost_model``. ``margin_rate`` is the share of what users paid kept as margin
    (1 less the course partner's share), when every promoted course keeps the same share. The
    incremental margin is ``margin_rate`` times the incremental revenue plus the treated users'
    expected coupon discount, as the campaign report measures it (gross of the campaign's own
    coupons: the partner's share is of what was paid, the discount is ours and is in spent).

    Spent is by default what the offers cost once every one has ended. A report read while a
    campaign's prepaid movie tickets are still valid counts each of them at its value, used or
    not (bought from the cinema; an unused one's code goes back to the pool, and its cost with
    it, only when the offer expires): ``prepaid_tickets_open`` gives the planted spend and ROI
    of that moment (every other kind costs on use, and the demo's uses come within days).
    """
    effects = truth["campaign_effects"][campaign_slug]
    codes = _segment_codes(segments)
    keys = _per_user_offer_keys(offer_keys, len(codes))
    revenue = discount = spent = 0.0
    by_kind: dict[str, float] = {}
    for key in pd.unique(keys):
        package = effects["offers"][key]
        counts = np.bincount(codes[keys == key], minlength=len(parameters.SEGMENT_NAMES))
        for index, name in enumerate(parameters.SEGMENT_NAMES):
            row = package["segments"][name]
            revenue += counts[index] * row["revenue_uplift_per_user"]
            discount += counts[index] * row["discount_per_treated_user"]
            for kind, value in row["spent_by_kind"].items():
                if prepaid_tickets_open and kind == "movie_ticket":
                    value = package["offer_costs"][kind]
                spent += counts[index] * value
                by_kind[kind] = by_kind.get(kind, 0.0) + counts[index] * value
    earned = margin_rate * revenue + discount
    return {
        "treated_users": len(codes),
        "incremental_revenue": round(revenue, 2),
        "discount": round(discount, 2),
        "incremental_margin": round(earned, 2),
        "margin_rate": margin_rate,
        "spent": round(spent, 2),
        "spent_by_kind": {kind: round(value, 2) for kind, value in by_kind.items()},
        "roi": round((earned - spent) / spent, 6) if spent > 0 else None,
        "prepaid_tickets_open": prepaid_tickets_open,
        "basis": "(margin_rate * expected incremental revenue over the treated users + their expected coupon "
        "discount - expected spent) / expected spent"
        + (", with every prepaid movie ticket still valid, so spent at its value" if prepaid_tickets_open else ""),
    }


def _segment_codes(segments: npt.ArrayLike) -> npt.NDArray[np.int64]:
    codes = pd.Categorical(np.asarray(segments, dtype=object), categories=parameters.SEGMENT_NAMES).codes
    if (codes < 0).any():
        unknown = sorted(set(np.asarray(segments, dtype=object)[codes < 0]))
        raise ValueError(f"unknown segments {unknown}; expected some of {parameters.SEGMENT_NAMES}")
    return codes.astype(np.int64)


def _per_user_offer_keys(offer_kind: str | npt.ArrayLike, n_users: int) -> npt.NDArray[np.object_]:
    if isinstance(offer_kind, str):
        return np.full(n_users, offer_kind, dtype=object)
    keys = np.asarray(offer_kind, dtype=object)
    if keys.shape != (n_users,):
        raise ValueError("offer_kind must be one string or one per user")
    return keys


def _user_rates(
    effects: Mapping[str, Any],
    segment_codes: npt.NDArray[np.int64],
    treated: npt.NDArray[np.bool_],
    offer_keys: npt.NDArray[np.object_],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return each user's conversion probability and mean revenue per conversion."""
    base = np.array([effects["segments"][name]["base_conversion"] for name in parameters.SEGMENT_NAMES])
    conversion = base[segment_codes]
    revenue_per_conversion = np.full(len(segment_codes), float(effects["order_value"]))
    for key in pd.unique(offer_keys[treated]):
        if key not in effects["offers"]:
            raise ValueError(f"no planted effect for offer {key!r}; expected one of {sorted(effects['offers'])}")
        package = effects["offers"][key]
        users = treated & (offer_keys == key)
        treated_conversion = np.array(
            [package["segments"][name]["treated_conversion"] for name in parameters.SEGMENT_NAMES]
        )
        conversion[users] = treated_conversion[segment_codes[users]]
        revenue_per_conversion[users] = package["revenue_per_conversion"]
    return conversion, revenue_per_conversion


def simulate_campaign_outcomes(
    truth: Mapping[str, Any],
    campaign_slug: str,
    segments: npt.ArrayLike,
    treated_mask: npt.ArrayLike,
    offer_kind: str | npt.ArrayLike,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Draw each user's conversion and revenue (CNY, rounded to cents) from the planted effects.

    ``segments`` holds each user's ``latent_segment``; ``treated_mask`` says who got the
    offers (everyone else, holdout included, converts at the base rate); ``offer_kind`` is
    the rule's ``effect_key`` (``"coupon+free_viewing"``), one for all or one per user.
    Convert a revenue to money with ``Decimal(f"{value:.2f}")``.
    """
    effects = truth["campaign_effects"][campaign_slug]
    segment_codes = _segment_codes(segments)
    treated = np.asarray(treated_mask, dtype=bool)
    offer_keys = _per_user_offer_keys(offer_kind, len(segment_codes))
    conversion, revenue_per_conversion = _user_rates(effects, segment_codes, treated, offer_keys)
    converted = rng.random(len(segment_codes)) < conversion
    order_value_factor = rng.gamma(parameters.ORDER_VALUE_SHAPE, 1.0 / parameters.ORDER_VALUE_SHAPE, len(segment_codes))
    revenue = np.where(converted, np.round(revenue_per_conversion * order_value_factor, 2), 0.0)
    return converted, revenue


def expected_campaign_uplift(
    truth: Mapping[str, Any],
    campaign_slug: str,
    segments: npt.ArrayLike,
    treated_mask: npt.ArrayLike,
    holdout_mask: npt.ArrayLike,
    offer_kind: str | npt.ArrayLike,
) -> dict[str, float]:
    """Return what a treated-versus-holdout comparison of this assignment should find.

    ``expected_*`` are the expectations of the treated and holdout means (conversion rate,
    revenue per user) given exactly this assignment, and of their differences; a measured
    uplift should lie within a few standard errors of ``conversion_uplift`` and
    ``revenue_uplift_per_user``. ``average_*_effect`` is the mean effect over treated and
    holdout users together (the estimand under a random holdout), where a holdout user's
    effect is that of the offer in ``offer_kind`` they would have got.
    """
    effects = truth["campaign_effects"][campaign_slug]
    segment_codes = _segment_codes(segments)
    treated = np.asarray(treated_mask, dtype=bool)
    holdout = np.asarray(holdout_mask, dtype=bool)
    if (treated & holdout).any():
        raise ValueError("a user cannot be both treated and held out")
    if not treated.any() or not holdout.any():
        raise ValueError("an uplift needs at least one treated and one holdout user")
    offer_keys = _per_user_offer_keys(offer_kind, len(segment_codes))
    everyone_treated = treated | holdout
    untreated_conversion, order_value = _user_rates(effects, segment_codes, np.zeros_like(treated), offer_keys)
    treated_conversion, treated_order_value = _user_rates(effects, segment_codes, everyone_treated, offer_keys)
    untreated_revenue = untreated_conversion * order_value
    treated_revenue = treated_conversion * treated_order_value
    expected = {
        "expected_treated_conversion": float(treated_conversion[treated].mean()),
        "expected_holdout_conversion": float(untreated_conversion[holdout].mean()),
        "expected_treated_revenue_per_user": float(treated_revenue[treated].mean()),
        "expected_holdout_revenue_per_user": float(untreated_revenue[holdout].mean()),
        "average_conversion_effect": float((treated_conversion - untreated_conversion)[everyone_treated].mean()),
        "average_revenue_effect_per_user": float((treated_revenue - untreated_revenue)[everyone_treated].mean()),
    }
    expected["conversion_uplift"] = expected["expected_treated_conversion"] - expected["expected_holdout_conversion"]
    expected["revenue_uplift_per_user"] = (
        expected["expected_treated_revenue_per_user"] - expected["expected_holdout_revenue_per_user"]
    )
    return expected


def simulate_campaign_money(
    truth: Mapping[str, Any],
    campaign_slug: str,
    segments: npt.ArrayLike,
    treated_mask: npt.ArrayLike,
    offer_kind: str | npt.ArrayLike,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Draw each user's conversion, the revenue they pay and what they cost, as the demo plays a campaign.

    The same process as ``demo.services.play`` without the database, for simulations over many
    seeds: conversions from the planted effects; a converted user's order is ``order_value``
    times a Gamma(shape ``ORDER_VALUE_SHAPE``, mean 1) factor; a treated converted user uses
    their package's coupon with ``COUPON_REDEMPTION_PROBABILITY`` and pays the order less its
    discount (at most the order; a percent coupon's discount is taken as its planted reduction
    on the mean order); spent follows ``OFFER_COST_MODEL`` once every offer has ended (a trial
    its cost when activated, a ticket when used, a grant when taken up, which only a converted user does, a coupon
    its discount when used). Returns
    (converted, revenue, spent, discount) per user, in CNY rounded to cents: revenue is what the user paid,
    discount what the campaign's coupon took off (so revenue + discount is the order, and a margin gross of the
    coupon is ``round(revenue * margin_rate, 2) + discount``, as the report measures it); untreated users cost
    nothing.
    """
    effects = truth["campaign_effects"][campaign_slug]
    codes = _segment_codes(segments)
    treated = np.asarray(treated_mask, dtype=bool)
    keys = _per_user_offer_keys(offer_kind, len(codes))
    conversion, _ = _user_rates(effects, codes, treated, keys)
    n = len(codes)
    converted = rng.random(n) < conversion
    order = np.round(
        float(effects["order_value"]) * rng.gamma(parameters.ORDER_VALUE_SHAPE, 1.0 / parameters.ORDER_VALUE_SHAPE, n),
        2,
    )
    coupon_use = rng.random(n) < parameters.COUPON_REDEMPTION_PROBABILITY
    taken_up = {kind: rng.random(n) < probability for kind, probability in _TAKE_UP_PROBABILITY.items()}
    discount = np.zeros(n)
    spent = np.zeros(n)
    for key in pd.unique(keys[treated]):
        package = effects["offers"][key]
        users = treated & (keys == key)
        costs = package.get("offer_costs", {})
        if "coupon" in costs:
            used = users & converted & coupon_use
            discount[used] = np.minimum(float(package["price_reduction"]), order[used])
        for kind, cost in costs.items():
            if kind in _TAKEN_UP_BY_BUYERS:
                spent[users & converted & taken_up[kind]] += cost
            elif kind in taken_up:
                spent[users & taken_up[kind]] += cost
            elif kind != "coupon":
                spent[users] += cost
    spent += discount
    revenue = np.where(converted, np.round(order - discount, 2), 0.0)
    return converted, revenue, np.round(spent, 2), np.round(discount, 2)
