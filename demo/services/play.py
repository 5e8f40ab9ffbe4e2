"""Playing the demo campaigns and what follows them, up to the time the demo runs, from the planted truth.

Campaigns whose window has begun are run as of their start; the planted treatment effects
(``demo.world.truth``) then decide who converts and for how much, and the planted funnel
(``truth["funnel"]``) what happens to every offer: converted users use their coupons through
the redemption service (so the ledger records each discount), trials are activated and some
become paid memberships, tickets are used, and membership grants (a deal's benefit for buying a
course) are taken up by users who bought one, after the purchase; nobody else can take one up. Those purchases and
visits enter as ordinary behaviour events, so the campaign report measures them like real ones.

After the campaigns, the deals are evaluated over the new purchases (grants are confirmed, the
partners pull them), granted users spend at the target partner, and memberships still open end
at times drawn from the planted churn model, up to now. Every draw after the campaigns is a
hash of the world's seed, the user and what was granted or started (never a row id), so playing
again later adds only what has come due meanwhile.
"""

import contextlib
import datetime as dt
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from analytics.selectors import ids_known_to_partner
from analytics.services.ingest import events_ingest
from campaigns.models import Campaign, CampaignAssignment, Deal, DealGrant, Offer, Partner, Rule, StockItem
from campaigns.selectors.grant_triggers import GrantUse, benefit_given, grants_earned
from campaigns.services.campaign_run import (
    campaign_check_runnable,
    campaign_dry_run,
    campaign_run,
)
from campaigns.services.deals import deals_evaluate
from campaigns.services.intake import partner_ids_by_slug
from campaigns.services.offers import offer_expire_due
from campaigns.services.redemption import RedemptionRequest, offer_redeem_many
from campaigns.services.stock import rule_needs_stock
from crossmkt_site.bulk import bulk_insert
from crossmkt_site.errors import ApplicationError

from ..models import DemoWorld, PlantedUser
from ..selectors import demo_world_latest
from ..world import catalog as demo
from ..world import parameters
from ..world.truth import planted_campaign_roi, simulate_campaign_outcomes

STARTED_AFTER = dt.timedelta(minutes=5)
DAY = dt.timedelta(days=1)
# A trial is activated, and a membership grant taken up, within this long of its issue; a ticket used within this.
ACTIVATION_WITHIN = dt.timedelta(days=3)
TICKET_USED_WITHIN = dt.timedelta(days=14)
# A granted movie ticket brings a paid cinema visit within this long.
GRANT_VISIT_WITHIN_DAYS = 30


def _effect_keys(campaign: Campaign) -> dict[int, str]:
    """Map each of our rules to the offer package (effect key) of the catalog rule it came from."""
    source = demo.demo_catalog().campaign(campaign.slug)
    by_name = {rule.name_zh: rule.effect_key for rule in source.rules}
    return {rule.pk: by_name[rule.name.split("·")[0]] for rule in campaign.rules.all()}


def _stock_for(campaign: Campaign, started: dt.datetime) -> None:
    """Give the partners behind ticket and trial offers enough codes in their pools for this campaign."""
    if StockItem.objects.filter(code__startswith=f"{campaign.slug}-").exists():
        return
    forecast = campaign_dry_run(campaign=campaign, now=started)
    offers = {rule.rule: rule.offers for rule in forecast.rules}
    rows = []
    for rule in campaign.rules.all():
        if rule_needs_stock(rule):
            rows += [
                (
                    rule.benefit_partner_id,
                    rule.offer_kind,
                    f"{campaign.slug}-{rule.pk}-{n:07d}",
                    rule.cost,
                    campaign.ends_at + dt.timedelta(days=90),
                    StockItem.Status.AVAILABLE,
                    started,
                )
                for n in range(offers.get(rule.name, 0))
            ]
    with transaction.atomic(), connection.cursor() as cursor:
        bulk_insert(
            cursor,
            StockItem._meta.db_table,
            ["partner_id", "kind", "code", "face_value", "expires_at", "status", "loaded_at"],
            rows,
        )


def _plans() -> dict[str, demo.MembershipPlan]:
    """Each partner's paid membership plan, by partner slug."""
    return {plan.partner: plan for plan in demo.demo_catalog().membership_plans}


def _cinema_film(at: dt.datetime, preferred: Iterable[str] = ()) -> demo.Film:
    """Return a cinema film showing that day: one of ``preferred`` if any shows, else the first that does."""
    day = timezone.localtime(at, demo.SHANGHAI).date()
    films = [film for film in demo.demo_catalog().films if film.partner == demo.CINEMA]
    showing = [film for film in films if film.licence_start <= day <= film.licence_end] or films
    wanted = [film for film in showing if film.external_id in set(preferred)]
    return (wanted or showing)[0]


class _Events:
    """Behaviour events gathered for one ``events_ingest`` call, each sent as its partner would send it.

    A partner names a person by the id it knows them by (its own user's id, or its id in a
    consented link); a person it does not know yet but who consented and carries an alliance id is
    sent under that alliance id, which links them as ingestion resolves it; anyone else's event is
    reported by their home partner under its id, so no stray person is created.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, str, str, dt.datetime]] = []

    def add(self, partner: str, event_id: str, user: int, kind: str, item: str, amount: Decimal, at: dt.datetime):
        self.rows.append((partner, event_id, int(user), kind, item, f"{amount:.2f}", at))

    def ingest(self) -> int:
        if not self.rows:
            return 0
        partners = partner_ids_by_slug()
        frame = pd.DataFrame(
            self.rows, columns=["partner", "event_id", "user_id", "kind", "item_id", "amount", "occurred_at"]
        )
        frame.insert(0, "position", np.arange(len(frame)))
        frame.insert(1, "partner_id", frame.pop("partner").map(partners).astype("int64"))
        people = {
            pk: (home, external, alliance if consent else None)
            for pk, home, external, alliance, consent in EndUser.objects.filter(
                pk__in=frame["user_id"].unique().tolist()
            ).values_list("pk", "home_partner_id", "external_id", "alliance_id", "data_sharing_consent")
        }
        partner_ids, user_ext = frame["partner_id"].to_numpy().copy(), np.empty(len(frame), dtype=object)
        for partner_id, rows in frame.groupby("partner_id").groups.items():
            known = ids_known_to_partner(partner_id=int(partner_id), user_ids=frame.loc[rows, "user_id"].tolist())
            for row in rows:
                user = int(frame.at[row, "user_id"])
                home, external, alliance = people[user]
                if user in known:
                    user_ext[row] = known[user]
                elif alliance:
                    user_ext[row] = alliance
                else:
                    partner_ids[row], user_ext[row] = home, external
        frame["partner_id"], frame["user_ext"] = partner_ids, user_ext
        frame = frame.drop(columns="user_id")
        frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
        # A replay of what partners did, not a partner's batch: the live path does not evaluate it.
        return events_ingest(frame, record_touched=False).imported


def _offers_of(campaign: Campaign) -> pd.DataFrame:
    columns = ["pk", "code", "user_id", "kind", "partner_id", "rule_id", "deal_id", "issued_at", "expires_at", "days"]
    frame = pd.DataFrame(list(Offer.objects.filter(campaign=campaign).values_list(*columns)), columns=columns)
    return frame.sort_values("pk", kind="stable")


def _redemption(
    offer: dict, partners: dict[int, Partner], at: dt.datetime, order: Decimal, item: str
) -> RedemptionRequest:
    """The redemption of an offer as of ``at`` its partner sends the redemption service."""
    return RedemptionRequest(
        code=offer["code"],
        partner=partners[int(offer["partner_id"])],
        order_amount=order,
        item_id=item,
        idempotency_key=f"demo-{offer['code']}",
        now=at,
    )


def _records(frame: pd.DataFrame) -> list[dict]:
    """The rows of a frame as dicts of the values ``iterrows`` gives, without building a Series per row."""
    columns = {name: frame[name].tolist() for name in frame.columns}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _coupon_courses(campaign: Campaign) -> dict[int, list[str]]:
    """Each coupon rule's applicable course SKUs (empty: any course)."""
    return {
        rule.pk: list(rule.applicable_courses.order_by("sku").values_list("sku", flat=True))
        for rule in campaign.rules.filter(offer_kind=Rule.OfferKind.COUPON)
    }


def demo_campaign_play(*, campaign: Campaign, truth: dict, seed: int, now: dt.datetime) -> dict:
    """Run one demo campaign as of its start and play the outcomes and funnel its planted truth produces."""
    started = campaign.starts_at + STARTED_AFTER
    if campaign.status != Campaign.Status.RUNNING:
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
        campaign.refresh_from_db()
    campaign_check_runnable(campaign, started)
    _stock_for(campaign, started)
    result = campaign_run(campaign=campaign, now=started)
    columns = ["user_id", "user__external_id", "arm", "rule_id"]
    # Named columns, so a campaign that reached nobody (no scores yet, say) plays as an empty one.
    assignments = pd.DataFrame(
        list(CampaignAssignment.objects.filter(campaign=campaign).order_by("user_id").values_list(*columns)),
        columns=columns,
    )
    planted = dict(PlantedUser.objects.filter(user_id__in=assignments["user_id"]).values_list("user_id", "segment"))
    assignments = assignments[assignments["user_id"].isin(planted)]
    keys = _effect_keys(campaign)
    rng = np.random.default_rng([seed, campaign.pk])
    treated = (assignments["arm"] != CampaignAssignment.HOLDOUT).to_numpy()
    segments = assignments["user_id"].map(planted).to_numpy()
    packages = assignments["rule_id"].map(keys).to_numpy()
    converted, _ = simulate_campaign_outcomes(truth, campaign.slug, segments, treated, packages, rng)
    effects = truth["campaign_effects"][campaign.slug]
    with _one_commit():
        revenue, redeemed, activated = _play_funnel(campaign, assignments[converted], effects, rng, now)
    if campaign.ends_at <= now:
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.ENDED)
    roi = _planted_roi(campaign, truth, segments[treated], packages[treated], now) if treated.any() else None
    return {
        "campaign": campaign.slug,
        **result,
        "converted": int(converted.sum()),
        "revenue": str(revenue),
        "coupons_redeemed": redeemed,
        **activated,
        "planted": roi,
    }


def _planted_roi(
    campaign: Campaign, truth: dict, segments: npt.NDArray, packages: npt.NDArray, now: dt.datetime
) -> dict:
    """The planted ROI of the treated users as the report reads it now, and once every offer has ended.

    While the campaign's prepaid movie tickets are valid, each costs its value in the report,
    used or not; the unused ones' cost goes back with their codes when they expire.
    """
    tickets_open = Offer.objects.filter(
        campaign=campaign, kind=Rule.OfferKind.MOVIE_TICKET, expires_at__gt=now, stock_item__paid_on_use=False
    ).exists()
    final = planted_campaign_roi(truth, campaign.slug, segments, packages)
    planted = planted_campaign_roi(truth, campaign.slug, segments, packages, prepaid_tickets_open=tickets_open)
    return {
        **planted,
        "as_of": now.isoformat(),
        "when_offers_end": {key: final[key] for key in ("incremental_margin", "spent", "spent_by_kind", "roi")},
    }


@contextlib.contextmanager
def _one_commit() -> Iterator[None]:
    """Play a step in one transaction: each redemption is then a savepoint, not a commit waiting for the disk."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Played again from the start if it fails: no need to wait for the commit to reach disk.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def _play_funnel(
    campaign: Campaign, buyers: pd.DataFrame, effects: dict, rng: np.random.Generator, now: dt.datetime
) -> tuple[Decimal, int, dict[str, int]]:
    """Record the converted users' purchases (using their coupons), then the partner offers' take-up."""
    started = campaign.starts_at + STARTED_AFTER
    ends = min(started + dt.timedelta(days=campaign.conversion_window_days), now)
    skus = list(campaign.promoted_courses.order_by("sku").values_list("sku", flat=True)) or ["DATA-101"]
    offers = _offers_of(campaign)
    coupons_by_user: dict[int, list[dict]] = defaultdict(list)
    for offer in _records(offers[offers["kind"] == Rule.OfferKind.COUPON]):
        coupons_by_user[offer["user_id"]].append(offer)
    partners = {partner.pk: partner for partner in Partner.objects.all()}
    owner = campaign.owner
    if owner is None:
        # Every demo campaign is loaded with its owner partner (demo_catalog_load).
        raise ValueError(f"demo campaign {campaign.slug!r} has no owner partner")
    coupon_courses = _coupon_courses(campaign)
    events = _Events()
    fractions = rng.random(len(buyers))
    factors = rng.gamma(parameters.ORDER_VALUE_SHAPE, 1.0 / parameters.ORDER_VALUE_SHAPE, len(buyers))
    purchases = []
    requests: list[RedemptionRequest] = []
    for buyer, fraction, factor in zip(_records(buyers), fractions, factors, strict=True):
        coupons = coupons_by_user.get(buyer["user_id"], [])
        draws = rng.random(len(coupons))
        using = [
            coupon
            for coupon, draw in zip(coupons, draws, strict=True)
            if draw < parameters.COUPON_REDEMPTION_PROBABILITY
        ]
        # Who buys to use a coupon buys while it is valid (a member day's coupons last the day).
        last = min([ends, *(coupon["expires_at"] for coupon in using)])
        at = started + (last - started) * float(fraction)
        # A coupon names the course it is for: who holds one buys that course.
        named = [sku for coupon in coupons for sku in coupon_courses.get(coupon["rule_id"], []) if sku in skus]
        item = named[0] if named else str(rng.choice(skus))
        order = Decimal(f"{effects['order_value'] * factor:.2f}")
        purchases.append((buyer, at, item, order, len(using)))
        requests += [_redemption(coupon, partners, at, order, item) for coupon in using]
    # The coupons are used through the redemption service, a campaign's worth in one batch.
    discounts = iter([entry.discount for entry in offer_redeem_many(requests=requests)])
    revenue = Decimal("0.00")
    for buyer, at, item, order, used in purchases:
        paid = order
        for _ in range(used):
            paid -= next(discounts)
        paid = max(paid, Decimal("0.00"))
        revenue += paid
        events.add(
            owner.slug,
            f"{campaign.slug}-conversion-{buyer['user__external_id']}",
            int(buyer["user_id"]),
            "course_purchase",
            item,
            paid,
            at,
        )
    # The purchases are recorded first: a membership grant is taken up on one, and the service checks it is there.
    events.ingest()
    bought_at = {int(buyer["user_id"]): at for buyer, at, *_ in purchases}
    partner_events = _Events()
    activated = _play_partner_offers(offers, partners, campaign, rng, now, partner_events, bought_at)
    partner_events.ingest()
    return revenue, len(requests), activated


def _play_partner_offers(
    offers: pd.DataFrame,
    partners: dict[int, Partner],
    campaign: Campaign,
    rng: np.random.Generator,
    now: dt.datetime,
    events: _Events,
    bought_at: dict[int, dt.datetime],
) -> dict[str, int]:
    """Activate trials (some become paid memberships), use tickets, take up grants, via the redemption service.

    A membership grant is a deal's benefit for buying a course: only a user who bought one (``bought_at``,
    the purchase's time) takes it up, after the purchase and while the grant is valid.
    """
    plans = _plans()
    films = list(campaign.promoted_films.values_list("external_id", flat=True))
    counts = {
        "trials_activated": 0,
        "trials_converted": 0,
        "tickets_used": 0,
        "grants_activated": 0,
        "grants_not_earned": 0,
        "grants_already_granted": 0,
    }
    probability = {
        Rule.OfferKind.FREE_VIEWING: parameters.TRIAL_ACTIVATION_PROBABILITY,
        Rule.OfferKind.MOVIE_TICKET: parameters.TICKET_USE_PROBABILITY,
        Rule.OfferKind.MEMBERSHIP_GRANT: parameters.GRANT_ACTIVATION_PROBABILITY,
    }
    within = {
        Rule.OfferKind.FREE_VIEWING: ACTIVATION_WITHIN,
        Rule.OfferKind.MOVIE_TICKET: TICKET_USED_WITHIN,
        Rule.OfferKind.MEMBERSHIP_GRANT: ACTIVATION_WITHIN,
    }
    requests: list[RedemptionRequest] = []
    grants: list[tuple[dict, dt.datetime]] = []
    for offer in _records(offers[offers["kind"].isin(list(probability))]):
        kind = offer["kind"]
        used, fraction, paid_draw = rng.random(3)
        since = offer["issued_at"]
        if kind == Rule.OfferKind.MEMBERSHIP_GRANT:
            bought = bought_at.get(int(offer["user_id"]))
            if bought is None or bought >= offer["expires_at"]:
                continue
            since = max(since, bought)
        # Taken up while it is valid: within its first days, or before the campaign's last day ends.
        at = since + min(within[kind], offer["expires_at"] - since) * float(fraction)
        if used >= probability[kind] or at >= now:
            continue
        if kind == Rule.OfferKind.MEMBERSHIP_GRANT:
            grants.append((offer, at))
            continue
        requests.append(_redemption(offer, partners, at, Decimal("0.00"), ""))
        user = int(offer["user_id"])
        partner = partners[int(offer["partner_id"])]
        if kind == Rule.OfferKind.FREE_VIEWING:
            counts["trials_activated"] += 1
            plan = plans.get(partner.slug)
            paid_at = at + DAY * int(offer["days"] or 7)
            if plan and paid_draw < parameters.TRIAL_TO_PAID_PROBABILITY and paid_at < now:
                counts["trials_converted"] += 1
                events.add(
                    partner.slug,
                    f"trial-{offer['code']}",
                    user,
                    "membership_start",
                    plan.plan_id,
                    Decimal(plan.list_price),
                    paid_at,
                )
        else:
            counts["tickets_used"] += 1
            film = _cinema_film(at, films)
            events.add(
                partner.slug, f"ticket-{offer['code']}", user, "film_watch", film.external_id, Decimal("0.00"), at
            )
    # The partner honouring a grant asks whether the purchase that earns it is on record, as the service checks:
    # a purchase reported by another partner than the deal's source does not earn it.
    uses = [
        GrantUse(
            Offer(
                code=offer["code"],
                kind=offer["kind"],
                deal_id=offer["deal_id"],
                user_id=int(offer["user_id"]),
                issued_at=offer["issued_at"],
            ),
            at,
        )
        for offer, at in grants
    ]
    earned = [
        (use.offer, offer, at) for use, (offer, at), ok in zip(uses, grants, grants_earned(uses), strict=True) if ok
    ]
    counts["grants_not_earned"] = len(grants) - len(earned)
    # And whether the user has the benefit already (the deal granted it, or another grant of the deal was taken up
    # since): one purchase, one benefit, as the service checks.
    for (_, offer, at), given in zip(earned, benefit_given([grant for grant, _, _ in earned]), strict=True):
        if given is not None:
            counts["grants_already_granted"] += 1
        else:
            counts["grants_activated"] += 1
            requests.append(_redemption(offer, partners, at, Decimal("0.00"), ""))
    offer_redeem_many(requests=requests)
    return counts


def _uniform(seed: int, *keys: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return a uniform number in [0, 1) per row of the keys, a hash (SplitMix64) of the seed and the keys."""
    with np.errstate(over="ignore"):
        state = np.full(np.shape(np.asarray(keys[0])), np.uint64(seed % 2**64), dtype=np.uint64)
        for key in keys:
            state = state ^ np.asarray(key, dtype=np.int64).astype(np.uint64)
            state = state + np.uint64(0x9E3779B97F4A7C15)
            state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = state ^ (state >> np.uint64(31))
    return (state >> np.uint64(11)).astype(np.float64) / float(2**53)


def _name_key(name: str) -> int:
    """Return a stable integer key of a name (a user's id at their partner, a deal's slug, a plan) for ``_uniform``."""
    return zlib.crc32(str(name).encode("utf-8"))


# Salts that keep the hashes of different draws apart.
_SPEND, _WHEN, _CANCEL = 1, 2, 3


def _deal_grants_spend(*, seed: int, now: dt.datetime) -> int:
    """Record what users granted a deal's benefit spend at its target partner afterwards; return how many events."""
    plans = _plans()
    grants = pd.DataFrame(
        list(
            DealGrant.objects.filter(status=DealGrant.Status.CONFIRMED).values_list(
                "pk",
                "user_id",
                "user__external_id",
                "triggered_at",
                "deal__slug",
                "deal__benefit",
                "deal__benefit_days",
                "deal__target_partner__slug",
            )
        ),
        columns=["pk", "user_id", "user", "triggered_at", "deal", "benefit", "days", "target"],
    )
    benefits = {Deal.Benefit.VIDEO_MEMBERSHIP: "membership_days", Deal.Benefit.MOVIE_TICKET: "movie_ticket"}
    grants = grants[grants["benefit"].isin(list(benefits))]
    if grants.empty:
        return 0
    # Keyed by who was granted what (the user's id at their partner, the deal's slug), never by a row id: the
    # same world draws the same, whatever else the database held before it (row ids are not part of the world).
    person = grants["user"].map(_name_key).to_numpy(np.int64)
    deal = grants["deal"].map(_name_key).to_numpy(np.int64)
    spends = _uniform(seed, person, deal, np.full(len(grants), _SPEND))
    when = _uniform(seed, person, deal, np.full(len(grants), _WHEN))
    events = _Events()
    for (_, grant), spend, fraction in zip(grants.iterrows(), spends, when, strict=True):
        benefit = benefits[grant["benefit"]]
        if spend >= parameters.DEAL_GRANT_SPEND_PROBABILITY[benefit]:
            continue
        if benefit == "membership_days":
            plan = plans.get(grant["target"])
            at = grant["triggered_at"] + DAY * int(grant["days"] or 30) + dt.timedelta(hours=16 * float(fraction))
            if plan is None or at >= now:
                continue
            events.add(
                grant["target"],
                f"grant-{grant['deal']}-{grant['user']}",
                int(grant["user_id"]),
                "membership_start",
                plan.plan_id,
                Decimal(plan.list_price),
                at,
            )
        else:
            at = grant["triggered_at"] + DAY * (1 + GRANT_VISIT_WITHIN_DAYS * float(fraction))
            if at >= now:
                continue
            film = _cinema_film(at)
            events.add(
                grant["target"],
                f"grant-{grant['deal']}-{grant['user']}",
                int(grant["user_id"]),
                "film_watch",
                film.external_id,
                Decimal(film.ticket_price),
                at,
            )
    return events.ingest()


def _open_memberships() -> pd.DataFrame:
    """Each user's earliest membership spell per plan that no cancel of that plan has ended, with its covariates."""
    lookback = dt.timedelta(days=parameters.CHURN_ACTIVITY_LOOKBACK_DAYS)
    starts = BehaviorEvent.objects.filter(kind=BehaviorEvent.Kind.MEMBERSHIP_START)
    rows = pd.DataFrame(
        list(
            starts.values_list(
                "pk",
                "user_id",
                "user__external_id",
                "event_id",
                "partner__slug",
                "item_id",
                "amount",
                "occurred_at",
                "user__acquisition_channel",
            )
        ),
        columns=["pk", "user_id", "user", "event_id", "partner", "plan", "amount", "started_at", "channel"],
    )
    cancels = pd.DataFrame(
        list(
            BehaviorEvent.objects.filter(kind=BehaviorEvent.Kind.MEMBERSHIP_CANCEL).values_list(
                "user_id", "item_id", "occurred_at"
            )
        ),
        columns=["user_id", "plan", "cancelled_at"],
    )
    if rows.empty:
        return rows
    last_cancel = cancels.groupby(["user_id", "plan"])["cancelled_at"].max().rename("last_cancel")
    rows = rows.join(last_cancel, on=["user_id", "plan"])
    rows = rows[rows["last_cancel"].isna() | (rows["last_cancel"] < rows["started_at"])]
    rows = rows.sort_values(["user_id", "plan", "started_at"]).drop_duplicates(["user_id", "plan"])
    joins = pd.DataFrame(
        list(
            BehaviorEvent.objects.filter(
                kind=BehaviorEvent.Kind.ACTIVITY_JOIN, user_id__in=rows["user_id"].tolist()
            ).values_list("user_id", "occurred_at")
        ),
        columns=["user_id", "joined_at"],
    ).merge(rows[["user_id", "started_at"]], on="user_id")
    joined = joins[(joins["joined_at"] >= joins["started_at"] - lookback) & (joins["joined_at"] < joins["started_at"])]
    rows["joined_activity"] = rows.set_index(["user_id", "started_at"]).index.isin(
        joined.set_index(["user_id", "started_at"]).index
    )
    return rows


def _memberships_end(*, seed: int, now: dt.datetime) -> int:
    """Cancel the open memberships whose planted duration has run out by now; return how many cancels."""
    rows = _open_memberships()
    if rows.empty:
        return 0
    list_price = {plan.plan_id: float(plan.list_price) for plan in demo.demo_catalog().membership_plans}
    coefficients = parameters.CHURN_COEFFICIENTS
    channel = rows["channel"].map(lambda name: coefficients.get(f"acquisition_channel_{name}", 0.0)).to_numpy(float)
    depth = 1 - rows["amount"].astype(float).to_numpy() / rows["plan"].map(list_price).to_numpy(float)
    log_hazard_ratio = (
        channel
        + coefficients["discount_depth"] * np.clip(depth, 0, 1)
        + coefficients["joined_activity_14d"] * rows["joined_activity"].to_numpy(float)
    )
    started = pd.to_datetime(rows["started_at"], utc=True)
    # A spell of the generated world was still open at its end: its duration is drawn given that.
    world_spell = rows["event_id"].str.fullmatch(r"u\d+-\d+").to_numpy()
    survived_days = np.where(
        world_spell, np.maximum((parameters.WORLD_END - started).dt.total_seconds().to_numpy() / 86_400, 0), 0.0
    )
    shape, scale = parameters.CHURN_BASELINE_SHAPE, parameters.CHURN_BASELINE_SCALE_DAYS
    # Keyed by the spell (the user's id at their partner, the plan, when it started), never by a row id or an
    # event id: a trial's paid start is named after its offer's random code.
    uniform = _uniform(
        seed,
        rows["user"].map(_name_key).to_numpy(np.int64),
        rows["plan"].map(_name_key).to_numpy(np.int64),
        (started - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.int64),
        np.full(len(rows), _CANCEL),
    )
    # Inverting S(t | t > s) = exp(-(H0(t) - H0(s)) * exp(lp)) at a uniform draw.
    cumulative = (survived_days / scale) ** shape - np.log1p(-uniform) * np.exp(-log_hazard_ratio)
    duration_days = scale * cumulative ** (1 / shape)
    cancelled_at = started + pd.to_timedelta(duration_days, unit="D")
    due = (cancelled_at < pd.Timestamp(now)).to_numpy()
    events = _Events()
    for (_, row), at in zip(rows[due].iterrows(), cancelled_at[due].dt.round("s"), strict=True):
        events.add(
            row["partner"],
            f"cancel-{row['event_id']}",
            int(row["user_id"]),
            "membership_cancel",
            row["plan"],
            Decimal("0.00"),
            at.to_pydatetime(),
        )
    return events.ingest()


def demo_funnel_follow_up(*, seed: int, now: dt.datetime) -> dict[str, int]:
    """Evaluate the deals over what the campaigns brought, play what granted users spend, end memberships due."""
    runs = deals_evaluate(now=now)
    with _one_commit():
        spend = _deal_grants_spend(seed=seed, now=now)
    with _one_commit():
        cancels = _memberships_end(seed=seed, now=now)
    return {
        "grants": sum(run.reserved for run in runs),
        "grant_spend_events": spend,
        "membership_cancels": cancels,
        "offers_expired": offer_expire_due(now=now),
    }


def _record_planted(world: DemoWorld, played: list[dict]) -> None:
    """Keep each played campaign's planted incremental revenue, spend and ROI with the world's truth."""
    planted = {item["campaign"]: item["planted"] for item in played if item.get("planted")}
    if planted:
        truth = dict(world.truth)
        truth["played_campaigns"] = {**truth.get("played_campaigns", {}), **planted}
        DemoWorld.objects.filter(pk=world.pk).update(truth=truth)
        world.truth = truth


def demo_campaigns_play(
    *, now: dt.datetime | None = None, seed: int | None = None, follow_up: bool = True
) -> list[dict]:
    """Play every demo campaign whose window has begun and not played yet; return what each did.

    Outcomes are drawn with the world's seed, or ``seed`` (the same world played again with other
    draws). With ``follow_up`` (the default), what follows the campaigns is then played up to now
    too (``demo_funnel_follow_up``).
    """
    now = now or timezone.now()
    world = demo_world_latest()
    if world is None:
        return []
    played = []
    slugs = [c.slug for c in demo.demo_catalog().campaigns]
    for campaign in Campaign.objects.filter(slug__in=slugs, starts_at__lte=now).order_by("starts_at"):
        if campaign.assignments.exists():
            continue
        try:
            played.append(
                demo_campaign_play(
                    campaign=campaign, truth=world.truth, seed=world.seed if seed is None else seed, now=now
                )
            )
        except ApplicationError as error:
            # A campaign the engine refuses (a film out of licence, say) is left for a manager to fix.
            Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
            played.append({"campaign": campaign.slug, "refused": error.message})
    _record_planted(world, played)
    if follow_up:
        demo_funnel_follow_up(seed=world.seed if seed is None else seed, now=now)
    return played
