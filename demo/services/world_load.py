"""Loading the demo world into the database: catalog, users, a year of events, and the planted truth.

Users and events go through staging tables and set-based upserts, so a second ``seed_demo``
with the same seed adds nothing, and a load over part of the world adds the rest. When no
event of the demo partners is stored yet (PostgreSQL), the events are gathered in a load table
and moved into the events table in one transaction that builds its indexes and foreign keys
afterwards, instead of maintaining them row by row.
"""

import datetime as dt
import multiprocessing
import multiprocessing.queues
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from analytics.models import BehaviorEvent, UserLink
from analytics.services.ingest import events_ingest, user_ids_by_external_id
from campaigns.models import Bundle, Campaign, Course, Deal, Film, Partner, Rule
from campaigns.rules import to_json, validate_text
from campaigns.selectors.rule_fields import condition_registry
from campaigns.services.deals import deals_evaluate
from campaigns.services.intake import partner_ids_by_slug
from crossmkt_site.bulk import bulk_insert_frame

from ..models import DemoWorld, PlantedUser
from ..world import catalog as demo
from ..world.generator import iter_world
from ..world.truth import planted_truth

SHANGHAI = demo.SHANGHAI
TRIGGERS = {
    "course_in_set": Deal.Trigger.COURSE_PURCHASE,
    "spend_at_least": Deal.Trigger.SPEND_AT_LEAST,
    "membership_start": Deal.Trigger.MEMBERSHIP_START,
}
BENEFITS = {
    "membership_days": Deal.Benefit.VIDEO_MEMBERSHIP,
    "free_viewing": Deal.Benefit.FREE_VIEWING,
    "movie_ticket": Deal.Benefit.MOVIE_TICKET,
    "coupon": Deal.Benefit.COURSE_COUPON,
}


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=SHANGHAI)


@transaction.atomic
def demo_catalog_load(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Create or update the demo partners, catalog, deals and campaigns by their slugs and ids."""
    now = now or timezone.now()
    catalog = demo.demo_catalog()
    partners = {}
    for p in catalog.partners:
        partners[p.slug], _ = Partner.objects.update_or_create(
            slug=p.slug, defaults={"name": p.name_zh, "kind": p.kind}
        )
    courses = {}
    for c in catalog.courses:
        courses[c.sku], _ = Course.objects.update_or_create(
            partner=partners[c.partner],
            sku=c.sku,
            defaults={"title": c.title_zh, "category": c.category, "tags": list(c.tags), "price": Decimal(c.price)},
        )
    films = {}
    for f in catalog.films:
        films[f.external_id], _ = Film.objects.update_or_create(
            partner=partners[f.partner],
            external_id=f.external_id,
            defaults={
                "title": f.title_zh,
                "category": f.category,
                "tags": list(f.tags),
                "licence_start": _day_start(f.licence_start),
                "licence_end": _day_start(f.licence_end),
            },
        )
    for b in catalog.bundles:
        bundle, _ = Bundle.objects.update_or_create(
            slug=b.slug, defaults={"title": b.title_zh, "price": Decimal(b.price)}
        )
        bundle.courses.set([courses[sku] for sku in b.course_skus])
        bundle.films.set([films[film_id] for film_id in b.film_ids])
    deals = {}
    for d in catalog.deals:
        deals[d.slug], _ = Deal.objects.update_or_create(
            slug=d.slug,
            defaults={
                "name": d.name_zh,
                "source_partner": partners[d.source_partner],
                "target_partner": partners[d.benefit_partner],
                "trigger": TRIGGERS[d.trigger_kind],
                "trigger_min_spend": Decimal(d.trigger_min_spend) if d.trigger_min_spend else None,
                "benefit": BENEFITS[d.benefit_kind],
                "benefit_days": d.benefit_days,
                "benefit_value": Decimal(d.benefit_amount or "0"),
                "starts_at": _day_start(d.starts_on),
                "ends_at": _day_start(d.ends_on + dt.timedelta(days=1)),
                "max_grants": d.cap_grants,
                "max_amount": Decimal(d.cap_amount),
                "settlement_price": Decimal(d.settlement_price_per_grant),
                "revenue_share": Decimal(d.revenue_split_share),
                "status": d.status,
            },
        )
        deals[d.slug].trigger_courses.set([courses[sku] for sku in d.trigger_course_skus])
    registry = condition_registry()
    for spec in catalog.campaigns:
        _campaign_load(spec, partners, courses, films, deals, registry, now)
    return {
        "partners": len(partners),
        "courses": len(courses),
        "films": len(films),
        "deals": len(deals),
        "campaigns": len(catalog.campaigns),
    }


def _campaign_load(
    c: demo.Campaign,
    partners: dict[str, Partner],
    courses: dict[str, Course],
    films: dict[str, Film],
    deals: dict[str, Deal],
    registry: Mapping[str, Any],
    now: dt.datetime,
) -> Campaign:
    status = (
        Campaign.Status.RUNNING
        if c.starts_at <= now < c.ends_at
        else (Campaign.Status.ENDED if c.ends_at <= now else Campaign.Status.DRAFT)
    )
    package = max(len(rule.offers) for rule in c.rules)
    campaign, created = Campaign.objects.get_or_create(
        slug=c.slug,
        defaults={
            "name": c.name_zh,
            "description": c.description_zh,
            "owner": partners[c.owner_partner],
            "deal": deals.get(c.deal) if c.deal else None,
            "starts_at": c.starts_at,
            # The catalog's windows name their last second; ours end just after it.
            "ends_at": c.ends_at + dt.timedelta(seconds=1),
            "timezone": "Asia/Shanghai",
            "budget": Decimal(c.budget),
            "holdout_share": Decimal(str(c.holdout_share)),
            "per_user_limit": c.per_user_limit * package,
            "global_limit": c.global_limit,
            "offer_valid_days": max(o.valid_days for r in c.rules for o in r.offers),
            "status": status,
            "reach": c.reach,
        },
    )
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
                campaign=campaign,
                name=f"{rule.name_zh}·{_OFFER_LABELS[offer.kind]}",
                priority=1000 - 100 * rank - index,
                exclusive=rule.exclusive and last,
                condition=condition,
                offer_kind=offer.kind,
                benefit_partner=partners[offer.partner],
                deal=deals.get(offer.deal) if offer.deal else None,
                amount_off=Decimal(offer.amount) if offer.amount else None,
                percent_off=Decimal(offer.percent_off) if offer.percent_off else None,
                days=offer.days,
                cost=Decimal(offer.cost_per_issue),
            )
            if offer.kind == "coupon" and offer.item_id in courses:
                created_rule.applicable_courses.set([courses[offer.item_id]])
    return campaign


_OFFER_LABELS = {
    "coupon": "课程券",
    "free_viewing": "免费试看",
    "movie_ticket": "电影票",
    "membership_grant": "会员月卡",
}

USER_COLUMNS = [
    "external_id",
    "home_partner_id",
    "age",
    "education",
    "occupation",
    "gender",
    "acquisition_channel",
    "marketing_consent",
    "data_sharing_consent",
    "alliance_id",
    "signed_up_at",
    "created_at",
]


def _users_ingest(
    cursor: CursorWrapper, users: pd.DataFrame, partner_ids: dict[str, int], now: dt.datetime
) -> tuple[dict[str, int], int]:
    """Insert the chunk's users who are not there yet; return every user's id by external id, and how many were new.

    The world's ids are unique across partners, so each names one user of its home partner.
    """
    ids = _own_user_ids(cursor, users, partner_ids)
    new = users[~users["user_id"].isin(list(ids))]
    if new.empty:
        return ids, 0
    rows = pd.DataFrame(
        {
            "external_id": new["user_id"],
            "home_partner_id": new["home_partner"].map(partner_ids).astype("int64"),
            "age": new["age"].astype("int64"),
            "education": new["education"],
            "occupation": new["occupation"],
            "gender": new["gender"].fillna(""),
            "acquisition_channel": new["acquisition_channel"],
            "marketing_consent": new["marketing_consent"].astype(bool),
            "data_sharing_consent": new["data_sharing_consent"].astype(bool),
            "alliance_id": new["alliance_id"],
            "signed_up_at": pd.to_datetime(new["signup_at"], utc=True),
            "created_at": now,
        }
    )
    cursor.execute("DROP TABLE IF EXISTS demo_user_batch")
    cursor.execute("CREATE TEMPORARY TABLE demo_user_batch AS SELECT * FROM analytics_enduser WHERE FALSE")
    bulk_insert_frame(cursor, "demo_user_batch", rows[USER_COLUMNS])
    columns = ", ".join(USER_COLUMNS)
    # Looked up first, so the upsert only guards against another loader of the same world.
    cursor.execute(
        f"INSERT INTO analytics_enduser ({columns}) SELECT {columns} FROM demo_user_batch "
        "WHERE TRUE ON CONFLICT (home_partner_id, external_id) DO NOTHING RETURNING external_id, id"
    )
    created = dict(cursor.fetchall())
    cursor.execute("DROP TABLE demo_user_batch")
    ids.update(created)
    if len(created) < len(new):
        ids.update(_own_user_ids(cursor, new[~new["user_id"].isin(list(created))], partner_ids))
    return ids, len(created)


def _own_user_ids(cursor: CursorWrapper, users: pd.DataFrame, partner_ids: dict[str, int]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for slug, group in users.groupby("home_partner"):
        ids.update(user_ids_by_external_id(cursor, group["user_id"].tolist(), partner_id=partner_ids[str(slug)]))
    return ids


def _links_ingest(
    cursor: CursorWrapper, users: pd.DataFrame, events: pd.DataFrame, user_ids: dict[str, int], partner_ids, now
) -> None:
    """Link the partners other than a person's home partner that they have events at, as their alliance id would.

    The link is what ``events_ingest`` makes when such a partner first sends the alliance id; made
    here so that the bulk path, which bypasses it, stores each event on the person too.
    """
    home = events["user_id"].map(users.set_index("user_id")["home_partner"])
    pairs = events.loc[events["partner"] != home, ["partner", "user_id"]].drop_duplicates()
    if pairs.empty:
        return
    cursor.execute("DROP TABLE IF EXISTS demo_link_batch")
    cursor.execute(
        "CREATE TEMPORARY TABLE demo_link_batch (user_id bigint, partner_id bigint, external_id varchar(64))"
    )
    bulk_insert_frame(
        cursor,
        "demo_link_batch",
        pd.DataFrame(
            {
                "user_id": pairs["user_id"].map(user_ids).to_numpy(dtype="int64"),
                "partner_id": pairs["partner"].map(partner_ids).to_numpy(dtype="int64"),
                "external_id": pairs["user_id"].to_numpy(),
            }
        ),
    )
    cursor.execute(
        "INSERT INTO analytics_userlink (user_id, partner_id, external_id, via, created_at) "
        "SELECT user_id, partner_id, external_id, %s, %s FROM demo_link_batch WHERE TRUE ON CONFLICT DO NOTHING",
        [UserLink.Via.ALLIANCE_ID, connection.ops.adapt_datetimefield_value(now)],
    )
    cursor.execute("DROP TABLE demo_link_batch")


def _planted_ingest(cursor: CursorWrapper, users: pd.DataFrame, user_ids: dict[str, int]) -> None:
    """Store each user's planted segment and label probability, kept apart from anything a model reads."""
    cursor.execute("DROP TABLE IF EXISTS demo_planted_batch")
    cursor.execute(
        "CREATE TEMPORARY TABLE demo_planted_batch (user_id bigint, segment varchar(32), "
        "top_category varchar(32), purchase_probability double precision)"
    )
    bulk_insert_frame(
        cursor,
        "demo_planted_batch",
        pd.DataFrame(
            {
                "user_id": users["user_id"].map(user_ids).to_numpy(dtype="int64"),
                "segment": users["latent_segment"].to_numpy(),
                "top_category": users["latent_top_category"].to_numpy(),
                "purchase_probability": users["latent_purchase_probability"].to_numpy(dtype=float),
            }
        ),
    )
    cursor.execute(
        f"INSERT INTO {PlantedUser._meta.db_table} (user_id, segment, top_category, purchase_probability) "
        "SELECT user_id, segment, top_category, purchase_probability FROM demo_planted_batch "
        "WHERE TRUE ON CONFLICT (user_id) DO NOTHING"
    )
    cursor.execute("DROP TABLE demo_planted_batch")


def _staged_events(events: pd.DataFrame, partner_ids: dict[str, int]) -> pd.DataFrame:
    """Stage the generator's events as ``validate_events`` would: they are well-formed by construction."""
    return pd.DataFrame(
        {
            "position": np.arange(len(events)),
            "partner_id": events["partner"].map(partner_ids).to_numpy(dtype="int64"),
            "event_id": events["event_id"].to_numpy(),
            "user_ext": events["user_id"].to_numpy(),
            "kind": events["kind"].to_numpy(),
            "item_id": events["item_id"].to_numpy(),
            "amount": events["amount"].to_numpy(),
            "occurred_at": events["occurred_at"].to_numpy(dtype="datetime64[ns]"),
        }
    )


def _load_users(
    n_users: int, seed: int, start: int, end: int, now: dt.datetime, bulk: bool, progress: Callable[[int], None]
) -> tuple[int, int, int]:
    """Load users start..end-1 of the world and their events; report each chunk's size to progress.

    Return the users created, the events stored and the events already there; with ``bulk``,
    the events go to the load table for ``_events_bulk_load`` instead, and are counted as stored.
    """
    partner_ids = partner_ids_by_slug()
    users_created = events_imported = duplicates = 0
    for chunk in iter_world(n_users=end, seed=seed, start=start):
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # A bulk load that can simply be run again need not wait for each commit to reach disk.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            with connection.cursor() as cursor:
                user_ids, created = _users_ingest(cursor, chunk.users, partner_ids, now)
                _links_ingest(cursor, chunk.users, chunk.events, user_ids, partner_ids, now)
                _planted_ingest(cursor, chunk.users, user_ids)
                if bulk:
                    _events_stage(cursor, _staged_events(chunk.events, partner_ids), user_ids)
                    events_imported += len(chunk.events)
            users_created += created
            if not bulk:
                result = events_ingest(_staged_events(chunk.events, partner_ids), record_touched=False)
                events_imported += result.imported
                duplicates += result.duplicates
        progress(len(chunk.users))
    return users_created, events_imported, duplicates


# Roughly how many events the generator draws per user (10.6), rounded down.
EVENTS_PER_USER = 10
# The world's events wait here (an unlogged table, so that every loader process can write
# it) until one transaction moves them all into the events table.
EVENT_LOAD_TABLE = "demo_event_load"


def _bulk_load_applies(n_users: int) -> bool:
    """Whether the events can be loaded in bulk: PostgreSQL, and no event of the demo partners stored yet.

    Then no event of the world can be a duplicate, and the events table's indexes and
    foreign keys can be built once after the load instead of maintained row by row, as
    long as what is already there is small next to what comes.
    """
    if connection.vendor != "postgresql" or _demo_events_exist():
        return False
    if not BehaviorEvent.objects.exists():
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'analytics_behaviorevent'::regclass")
        (stored_estimate,) = cursor.fetchone()
    return stored_estimate < EVENTS_PER_USER * n_users


def _demo_events_exist() -> bool:
    slugs = [p.slug for p in demo.demo_catalog().partners]
    return BehaviorEvent.objects.filter(partner__slug__in=slugs).exists()


def _events_stage(cursor: CursorWrapper, staged: pd.DataFrame, user_ids: dict[str, int]) -> None:
    """Write a chunk's events to the load table with the ids of their users."""
    bulk_insert_frame(
        cursor,
        EVENT_LOAD_TABLE,
        pd.DataFrame(
            {
                "partner_id": staged["partner_id"],
                "event_id": staged["event_id"],
                "user_id": staged["user_ext"].map(user_ids).to_numpy(dtype="int64"),
                "kind": staged["kind"],
                "item_id": staged["item_id"],
                "amount": staged["amount"],
                "occurred_at": staged["occurred_at"],
            }
        ),
    )


def _events_bulk_load(now: dt.datetime) -> int:
    """Move the load table into the events table in one transaction; return how many events were stored.

    The events table's unique constraint, secondary indexes and foreign keys are dropped and
    built again afterwards (with their names and definitions as the database has them): one
    sort per index and one join per foreign key instead of an index update and two lookups
    per row. A failure anywhere rolls all of it back. If events of the demo partners appeared
    meanwhile, the rows are upserted with everything in place instead.
    """
    table = BehaviorEvent._meta.db_table
    columns = "partner_id, event_id, user_id, kind, item_id, amount, occurred_at"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        # Foreign keys cannot be dropped from under checks still pending in this transaction
        # (there are some when an outer transaction wrote the users): run those checks now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        dropped = [] if _demo_events_exist() else _secondary_structures(cursor, table)
        # Sorting for an index and hashing users for a foreign key check are faster in memory.
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        for name, kind, _definition in dropped:
            cursor.execute(
                f"DROP INDEX {connection.ops.quote_name(name)}"
                if kind == "index"
                else f"ALTER TABLE {table} DROP CONSTRAINT {connection.ops.quote_name(name)}"
            )
        upsert = "" if dropped else "ON CONFLICT (partner_id, event_id) DO NOTHING"
        cursor.execute(
            f"INSERT INTO {table} ({columns}, received_at) SELECT {columns}, %s FROM {EVENT_LOAD_TABLE} {upsert}", [now]
        )
        stored = cursor.rowcount
        for name, kind, definition in dropped:
            cursor.execute(
                definition
                if kind == "index"
                else f"ALTER TABLE {table} ADD CONSTRAINT {connection.ops.quote_name(name)} {definition}"
            )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    return stored


def _secondary_structures(cursor: CursorWrapper, table: str) -> list[tuple[str, str, str]]:
    """List the table's unique constraints, then its other non-primary indexes, then its foreign keys.

    Each as (name, "unique" | "index" | "foreign", definition), in the order they are to be
    built again: indexes first, so that foreign keys are checked last.
    """
    cursor.execute(
        """SELECT conname, CASE contype WHEN 'u' THEN 'unique' ELSE 'foreign' END, pg_get_constraintdef(oid)
           FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('u', 'f')
           ORDER BY contype DESC, conname""",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        """SELECT c.relname, 'index', pg_get_indexdef(i.indexrelid)
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = %s::regclass AND NOT EXISTS (
               SELECT 1 FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)
           ORDER BY c.relname""",
        [table],
    )
    indexes = cursor.fetchall()
    unique = [row for row in constraints if row[1] == "unique"]
    foreign = [row for row in constraints if row[1] == "foreign"]
    return unique + indexes + foreign


# The positional arguments of ``_load_users`` before ``progress``: n_users, seed, start, end, now, bulk.
_LoadArgs = tuple[int, int, int, int, dt.datetime, bool]


def _load_in_child(args: _LoadArgs, queue: multiprocessing.queues.Queue) -> None:
    for conn in connections.all(initialized_only=True):
        conn.inc_thread_sharing()
        conn.close()
    try:
        totals = _load_users(*args, progress=lambda n: queue.put(("progress", n)))
        queue.put(("done", totals))
    except Exception as error:
        queue.put(("error", repr(error)))


def _load_parallel(
    n_users: int, seed: int, now: dt.datetime, bulk: bool, processes: int, on_progress: Callable[[int], None] | None
) -> tuple[int, int, int]:
    """Load the users in contiguous ranges, one forked process per range, each with its own connection."""
    step = -(-n_users // processes)
    ranges = [(start, min(start + step, n_users)) for start in range(0, n_users, step)]
    connections.close_all()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [
        context.Process(target=_load_in_child, args=((n_users, seed, lo, hi, now, bulk), queue)) for lo, hi in ranges
    ]
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
            # payload is a child's (users created, events stored, events already there), like totals.
            totals = [a + b for a, b in zip(totals, payload, strict=True)]
        else:
            for child in children:
                child.terminate()
            raise RuntimeError(f"loading the demo world failed in a worker process: {payload}")
    for child in children:
        child.join()
    users_created, events_imported, duplicates = totals
    return users_created, events_imported, duplicates


def demo_world_load(
    *, n_users: int, seed: int, on_progress: Callable[[int], None] | None = None, processes: int = 1
) -> dict[str, int]:
    """Load the demo world of n_users users for a seed; loading the same world twice adds nothing.

    With ``processes`` > 1 (PostgreSQL only), ranges of users are generated and written by
    that many processes at once; the world is the same.
    """
    now = timezone.now()
    summary = demo_catalog_load(now=now)
    bulk = _bulk_load_applies(n_users)
    if bulk:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {EVENT_LOAD_TABLE}")
            cursor.execute(
                f"CREATE UNLOGGED TABLE {EVENT_LOAD_TABLE} (partner_id bigint, event_id varchar(64), "
                "user_id bigint, kind varchar(32), item_id varchar(64), amount numeric(14, 2), "
                "occurred_at timestamp with time zone)"
            )
    try:
        if processes > 1 and connection.vendor == "postgresql" and n_users >= 2 * 50_000:
            users_created, events_imported, duplicates = _load_parallel(
                n_users, seed, now, bulk, processes, on_progress
            )
        else:
            done = 0

            def progress(n: int) -> None:
                nonlocal done
                done += n
                if on_progress:
                    on_progress(done)

            users_created, events_imported, duplicates = _load_users(n_users, seed, 0, n_users, now, bulk, progress)
        if bulk:
            staged, events_imported = events_imported, _events_bulk_load(now)
            duplicates = staged - events_imported
    finally:
        if bulk:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {EVENT_LOAD_TABLE}")
    deals_evaluate()
    DemoWorld.objects.update_or_create(
        seed=seed,
        n_users=n_users,
        defaults={
            "truth": planted_truth(n_users=n_users, seed=seed),
            "catalog": demo.demo_catalog().to_dict(),
        },
    )
    return summary | {"users": users_created, "events": events_imported, "duplicate_events": duplicates}
