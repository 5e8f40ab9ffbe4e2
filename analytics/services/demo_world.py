"""Loading the demo world into the database: catalog, users, a year of events, and the planted truth.

Users and events go through the same staging and set-based upserts as the imports, so a
second ``seed_demo`` with the same seed adds nothing, and the demo exercises the real path.
"""

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from campaigns.conditions import to_json, validate_text
from campaigns.models import Bundle, Campaign, Course, Deal, Film, Partner, Rule
from crossmkt_site.bulk import bulk_insert

from ..demo import catalog as demo
from ..demo.truth import planted_truth
from ..demo.world import iter_world
from ..selectors import condition_registry
from campaigns.services.deals import deals_evaluate

from .ingest import events_ingest, partner_ids_by_slug

SHANGHAI = demo.SHANGHAI
TRIGGERS = {"course_in_set": Deal.Trigger.COURSE_PURCHASE, "spend_at_least": Deal.Trigger.SPEND_AT_LEAST,
            "membership_start": Deal.Trigger.MEMBERSHIP_START}
BENEFITS = {"membership_days": Deal.Benefit.VIDEO_MEMBERSHIP, "free_viewing": Deal.Benefit.FREE_VIEWING,
            "movie_ticket": Deal.Benefit.MOVIE_TICKET, "coupon": Deal.Benefit.COURSE_COUPON}


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=SHANGHAI)


@transaction.atomic
def demo_catalog_load(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Create or update the demo partners, catalog, deals and campaigns by their slugs and ids."""
    now = now or timezone.now()
    catalog = demo.demo_catalog()
    partners = {}
    for p in catalog.partners:
        partners[p.slug], _ = Partner.objects.update_or_create(slug=p.slug, defaults={"name": p.name_zh, "kind": p.kind})
    courses = {}
    for c in catalog.courses:
        courses[c.sku], _ = Course.objects.update_or_create(
            partner=partners[c.partner], sku=c.sku,
            defaults={"title": c.title_zh, "category": c.category, "tags": list(c.tags), "price": Decimal(c.price)},
        )
    films = {}
    for f in catalog.films:
        films[f.external_id], _ = Film.objects.update_or_create(
            partner=partners[f.partner], external_id=f.external_id,
            defaults={"title": f.title_zh, "category": f.category, "tags": list(f.tags),
                      "licence_start": _day_start(f.licence_start), "licence_end": _day_start(f.licence_end)},
        )
    for b in catalog.bundles:
        bundle, _ = Bundle.objects.update_or_create(slug=b.slug, defaults={"title": b.title_zh, "price": Decimal(b.price)})
        bundle.courses.set([courses[sku] for sku in b.course_skus])
        bundle.films.set([films[film_id] for film_id in b.film_ids])
    deals = {}
    for d in catalog.deals:
        deals[d.slug], _ = Deal.objects.update_or_create(slug=d.slug, defaults={
            "name": d.name_zh, "source_partner": partners[d.source_partner], "target_partner": partners[d.benefit_partner],
            "trigger": TRIGGERS[d.trigger_kind],
            "trigger_min_spend": Decimal(d.trigger_min_spend) if d.trigger_min_spend else None,
            "benefit": BENEFITS[d.benefit_kind], "benefit_days": d.benefit_days,
            "benefit_value": Decimal(d.benefit_amount or "0"), "starts_at": _day_start(d.starts_on),
            "ends_at": _day_start(d.ends_on + dt.timedelta(days=1)), "max_grants": d.cap_grants,
            "max_amount": Decimal(d.cap_amount), "settlement_price": Decimal(d.settlement_price_per_grant),
            "revenue_share": Decimal(d.revenue_split_share), "status": d.status,
        })
        deals[d.slug].trigger_courses.set([courses[sku] for sku in d.trigger_course_skus])
    registry = condition_registry()
    for c in catalog.campaigns:
        _campaign_load(c, partners, courses, films, deals, registry, now)
    return {"partners": len(partners), "courses": len(courses), "films": len(films), "deals": len(deals),
            "campaigns": len(catalog.campaigns)}


def _campaign_load(c, partners, courses, films, deals, registry, now) -> Campaign:
    status = Campaign.Status.RUNNING if c.starts_at <= now < c.ends_at else (
        Campaign.Status.ENDED if c.ends_at <= now else Campaign.Status.DRAFT)
    package = max(len(rule.offers) for rule in c.rules)
    campaign, created = Campaign.objects.get_or_create(slug=c.slug, defaults={
        "name": c.name_zh, "description": c.description_zh, "owner": partners[c.owner_partner],
        "deal": deals.get(c.deal) if c.deal else None, "starts_at": c.starts_at,
        # The catalog's windows name their last second; ours end just after it.
        "ends_at": c.ends_at + dt.timedelta(seconds=1), "timezone": "Asia/Shanghai", "budget": Decimal(c.budget),
        "holdout_share": Decimal(str(c.holdout_share)), "per_user_limit": c.per_user_limit * package,
        "global_limit": c.global_limit, "offer_valid_days": max(o.valid_days for r in c.rules for o in r.offers),
        "status": status,
    })
    if not created:
        return campaign
    campaign.partners.set([partners[slug] for slug in c.partners if slug != c.owner_partner])
    campaign.promoted_courses.set([courses[sku] for sku in c.target_course_skus])
    campaign.promoted_films.set([films[o.item_id] for r in c.rules for o in r.offers if o.item_id in films])
    for rank, rule in enumerate(sorted(c.rules, key=lambda r: r.priority)):
        condition = to_json(validate_text(rule.condition, registry))
        # A package of offers becomes one rule per offer with the same condition: all but the
        # last let the user through to the next, the last carries the rule's exclusivity.
        for index, offer in enumerate(rule.offers):
            last = index == len(rule.offers) - 1
            created_rule = Rule.objects.create(
                campaign=campaign, name=f"{rule.name_zh}·{_OFFER_LABELS[offer.kind]}",
                priority=1000 - 100 * rank - index, exclusive=rule.exclusive and last, condition=condition,
                offer_kind=offer.kind, benefit_partner=partners[offer.partner], deal=deals.get(offer.deal) if offer.deal else None,
                amount_off=Decimal(offer.amount) if offer.amount else None,
                percent_off=Decimal(offer.percent_off) if offer.percent_off else None,
                days=offer.days, cost=Decimal(offer.cost_per_issue),
            )
            if offer.kind == "coupon" and offer.item_id in courses:
                created_rule.applicable_courses.set([courses[offer.item_id]])
    return campaign


_OFFER_LABELS = {"coupon": "课程券", "free_viewing": "免费试看", "movie_ticket": "电影票", "membership_grant": "会员月卡"}

USER_COLUMNS = ["external_id", "home_partner_id", "age", "education", "occupation", "gender", "acquisition_channel",
                "marketing_consent", "data_sharing_consent", "signed_up_at", "created_at"]


def _users_ingest(users: pd.DataFrame, partner_ids: dict[str, int], now: dt.datetime) -> int:
    """Insert the chunk's users who are not there yet; return how many were new."""
    rows = pd.DataFrame({
        "external_id": users["user_id"], "home_partner_id": users["home_partner"].map(partner_ids).astype("int64"),
        "age": users["age"].astype("int64"), "education": users["education"], "occupation": users["occupation"],
        "gender": users["gender"].fillna(""), "acquisition_channel": users["acquisition_channel"],
        "marketing_consent": users["marketing_consent"].astype(bool),
        "data_sharing_consent": users["data_sharing_consent"].astype(bool),
        "signed_up_at": pd.to_datetime(users["signup_at"], utc=True), "created_at": now,
    })
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS staging_users")
        cursor.execute("CREATE TEMPORARY TABLE staging_users AS SELECT * FROM analytics_enduser WHERE FALSE")
        bulk_insert(cursor, "staging_users", USER_COLUMNS, (
            tuple(None if value is pd.NaT else value for value in row) for row in rows.itertuples(index=False, name=None)
        ))
        columns = ", ".join(USER_COLUMNS)
        cursor.execute(
            f"INSERT INTO analytics_enduser ({columns}) SELECT {columns} FROM staging_users s "
            "WHERE NOT EXISTS (SELECT 1 FROM analytics_enduser u WHERE u.external_id = s.external_id)"
        )
        created = cursor.rowcount
        cursor.execute("DROP TABLE staging_users")
    return created


def _planted_ingest(users: pd.DataFrame) -> None:
    """Store each user's planted segment and label probability, kept apart from anything a model reads."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS staging_planted")
        cursor.execute("CREATE TEMPORARY TABLE staging_planted (external_id varchar(64), segment varchar(32), "
                       "top_category varchar(32), purchase_probability double precision)")
        bulk_insert(cursor, "staging_planted", ["external_id", "segment", "top_category", "purchase_probability"], zip(
            users["user_id"], users["latent_segment"], users["latent_top_category"],
            users["latent_purchase_probability"].astype(float),
        ))
        cursor.execute(
            "INSERT INTO analytics_planteduser (user_id, segment, top_category, purchase_probability) "
            "SELECT u.id, s.segment, s.top_category, s.purchase_probability FROM staging_planted s "
            "JOIN analytics_enduser u ON u.external_id = s.external_id "
            "WHERE NOT EXISTS (SELECT 1 FROM analytics_planteduser p WHERE p.user_id = u.id)"
        )
        cursor.execute("DROP TABLE staging_planted")


def _staged_events(events: pd.DataFrame, partner_ids: dict[str, int]) -> pd.DataFrame:
    """Stage the generator's events as ``validate_events`` would: they are well-formed by construction."""
    return pd.DataFrame({
        "position": np.arange(len(events)), "partner_id": events["partner"].map(partner_ids).to_numpy(dtype="int64"),
        "event_id": events["event_id"].to_numpy(), "user_ext": events["user_id"].to_numpy(),
        "kind": events["kind"].to_numpy(), "item_id": events["item_id"].to_numpy(), "amount": events["amount"].to_numpy(),
        "occurred_at": events["occurred_at"].to_numpy(),
    })


def _load_users(n_users: int, seed: int, start: int, end: int, now: dt.datetime, progress) -> tuple[int, int, int]:
    """Load users start..end-1 of the world and their events; report each chunk's size to progress."""
    partner_ids = partner_ids_by_slug()
    users_created = events_imported = duplicates = 0
    for chunk in iter_world(n_users=end, seed=seed, start=start):
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # A bulk load that can simply be run again need not wait for each commit to reach disk.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            users_created += _users_ingest(chunk.users, partner_ids, now)
            _planted_ingest(chunk.users)
            result = events_ingest(_staged_events(chunk.events, partner_ids), evaluate_deals=False)
        events_imported += result.imported
        duplicates += result.duplicates
        progress(len(chunk.users))
    return users_created, events_imported, duplicates


def _load_in_child(args, queue) -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.inc_thread_sharing()
        conn.close()
    try:
        totals = _load_users(*args, progress=lambda n: queue.put(("progress", n)))
        queue.put(("done", totals))
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        queue.put(("error", repr(error)))


def _load_parallel(n_users: int, seed: int, now: dt.datetime, processes: int, on_progress) -> tuple[int, int, int]:
    """Load the users in contiguous ranges, one forked process per range, each with its own connection."""
    import multiprocessing

    from django.db import connections

    step = -(-n_users // processes)
    ranges = [(start, min(start + step, n_users)) for start in range(0, n_users, step)]
    connections.close_all()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_load_in_child, args=((n_users, seed, lo, hi, now), queue)) for lo, hi in ranges]
    for child in children:
        child.start()
    totals, finished, done = [0, 0, 0], 0, 0
    while finished < len(children):
        kind, payload = queue.get()
        if kind == "progress":
            done += payload
            if on_progress:
                on_progress(done)
        elif kind == "done":
            finished += 1
            totals = [a + b for a, b in zip(totals, payload)]
        else:
            for child in children:
                child.terminate()
            raise RuntimeError(f"loading the demo world failed in a worker process: {payload}")
    for child in children:
        child.join()
    return tuple(totals)


def demo_world_load(*, n_users: int, seed: int, on_progress=None, processes: int = 1) -> dict[str, int]:
    """Load the demo world of n_users users for a seed; loading the same world twice adds nothing.

    With ``processes`` > 1 (PostgreSQL only), ranges of users are generated and written by
    that many processes at once; the world is the same.
    """
    from ..models import DemoWorld

    now = timezone.now()
    summary = demo_catalog_load(now=now)
    if processes > 1 and connection.vendor == "postgresql" and n_users >= 2 * 50_000:
        users_created, events_imported, duplicates = _load_parallel(n_users, seed, now, processes, on_progress)
    else:
        done = 0

        def progress(n):
            nonlocal done
            done += n
            if on_progress:
                on_progress(done)

        users_created, events_imported, duplicates = _load_users(n_users, seed, 0, n_users, now, progress)
    deals_evaluate()
    DemoWorld.objects.update_or_create(seed=seed, n_users=n_users, defaults={
        "truth": planted_truth(n_users=n_users, seed=seed), "catalog": demo.demo_catalog().to_dict(),
    })
    return summary | {"users": users_created, "events": events_imported, "duplicate_events": duplicates}
