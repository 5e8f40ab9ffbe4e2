"""Reading users as the campaign engine and the models see them: one row per user, named fields.

``USER_FIELDS`` is the registry rule conditions are checked against; ``user_frame`` loads
any of those fields for a range of users with one SQL query, deriving ages such as
``days_since_last_activity`` from stored times at the moment asked for.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from campaigns.conditions import FieldSpec
from campaigns.models import Campaign, Course, Film, Partner
from crossmkt_site.bulk import query_frame
from crossmkt_site.errors import ApplicationError

from .models import BehaviorEvent, EndUser

CHURN_BANDS = ("low", "medium", "high")


@dataclass(frozen=True)
class UserField:
    spec: FieldSpec
    sql: str | None  # a column expression over the joined tables, or None when derived in pandas
    needs: tuple[str, ...] = ()  # the SQL fields a derived field is computed from


def _number(description: str, sql: str | None, needs: tuple[str, ...] = ()) -> UserField:
    return UserField(FieldSpec("number", description=description), sql, needs)


def _category(description: str, sql: str, allowed=None) -> UserField:
    return UserField(FieldSpec("category", allowed_values=allowed, description=description), sql)


def _flag(description: str, sql: str) -> UserField:
    return UserField(FieldSpec("bool", description=description), sql)


# Features from events win; the imported per-user table stands in for users without events.
USER_FIELDS: dict[str, UserField] = {
    "watching_count": _number("films watched", "COALESCE(f.watching_count, b.watching_count, 0)"),
    "purchasing_count": _number("courses purchased", "COALESCE(f.purchasing_count, b.purchasing_count, 0)"),
    "course_view_count": _number("courses viewed", "COALESCE(f.course_view_count, 0)"),
    "purchase_days": _number("distinct days with a purchase", "COALESCE(f.purchase_days, 0)"),
    "total_spend": _number("money spent, CNY", "COALESCE(f.total_spend, 0)"),
    "activity_count": _number("activities joined", "COALESCE(f.activity_count, 0)"),
    "discounts_received": _number("offers redeemed", "COALESCE(f.discounts_received, 0)"),
    "age": _number("age in years", "u.age"),
    "education": _category("education (学历)", "NULLIF(u.education, '')"),
    "occupation": _category("occupation (职业)", "NULLIF(u.occupation, '')"),
    "gender": _category("gender", "NULLIF(u.gender, '')"),
    "acquisition_channel": _category("acquisition channel (营销渠道)", "NULLIF(u.acquisition_channel, '')"),
    "marketing_consent": _flag("agreed to marketing", "u.marketing_consent"),
    "data_sharing_consent": _flag("agreed to data sharing with partners", "u.data_sharing_consent"),
    "propensity": _number("purchase propensity, 0 to 1", "sp.score"),
    "churn_probability": _number("probability of churning within the horizon", "sc.score"),
    "churn_risk": _category("churn risk band", "NULLIF(sc.label, '')", CHURN_BANDS),
    "clv": _number("predicted lifetime value, CNY", "sv.value"),
    "segment": _category("segment name", "NULLIF(ss.label, '')"),
    # Stored times, from which the derived ages below are computed.
    "last_event_at": UserField(FieldSpec("number", description="time of the last event"), "f.last_event_at"),
    "last_purchase_at": UserField(FieldSpec("number", description="time of the last purchase"), "f.last_purchase_at"),
    "first_purchase_at": UserField(FieldSpec("number", description="time of the first purchase"), "f.first_purchase_at"),
    "first_event_at": UserField(FieldSpec("number", description="time of the first event"), "f.first_event_at"),
    "signed_up_at": UserField(FieldSpec("number", description="sign-up time"), "u.signed_up_at"),
    "membership_started_at": UserField(FieldSpec("number", description="membership start"), "f.membership_started_at"),
    "membership_cancelled_at": UserField(FieldSpec("number", description="membership end"), "f.membership_cancelled_at"),
    "days_since_last_activity": _number("days since the last event", None, ("last_event_at",)),
    "recency_days": _number("days since the last purchase", None, ("last_purchase_at",)),
    "tenure_days": _number("days since sign-up (or the first event)", None, ("signed_up_at", "first_event_at")),
    "frequency": _number("repeat purchase days (distinct purchase days − 1)", None, ("purchase_days",)),
    "is_member": UserField(FieldSpec("bool", description="has a running membership"), None,
                           ("membership_started_at", "membership_cancelled_at")),
}
_TIME_FIELDS = {name for name, field in USER_FIELDS.items() if name.endswith("_at")}
# Per-category counts: ``watching_count_<film category>`` and ``purchasing_count_<course category>``.
CATEGORY_COUNTS = {"watching_count_": ("film_watch", "campaigns_film"), "purchasing_count_": ("course_purchase", "campaigns_course")}


def _category_field(name: str) -> tuple[str, str] | None:
    """Return (prefix, category) when name is a per-category count, else None."""
    for prefix in CATEGORY_COUNTS:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix, name[len(prefix):]
    return None


def condition_registry() -> dict[str, FieldSpec]:
    """Return what a rule may refer to: every user field but raw times, and a count per catalog category."""
    registry = {name: field.spec for name, field in USER_FIELDS.items() if name not in _TIME_FIELDS}
    from campaigns.models import Course, Film

    for category in Film.objects.values_list("category", flat=True).distinct():
        registry[f"watching_count_{category}"] = FieldSpec("number", description=f"films watched in category {category}")
    for category in Course.objects.values_list("category", flat=True).distinct():
        registry[f"purchasing_count_{category}"] = FieldSpec("number", description=f"courses bought in category {category}")
    return registry


_JOINS = {
    "f": "LEFT JOIN analytics_userfeatures f ON f.user_id = u.id",
    "b": "LEFT JOIN analytics_importedbehavior b ON b.user_id = u.id",
    "sp": "LEFT JOIN analytics_userscore sp ON sp.user_id = u.id AND sp.model = 'propensity'",
    "sc": "LEFT JOIN analytics_userscore sc ON sc.user_id = u.id AND sc.model = 'churn'",
    "sv": "LEFT JOIN analytics_userscore sv ON sv.user_id = u.id AND sv.model = 'clv'",
    "ss": "LEFT JOIN analytics_userscore ss ON ss.user_id = u.id AND ss.model = 'segments'",
}


def _sql_fields(names) -> list[str]:
    wanted: list[str] = []
    for name in names:
        if _category_field(name):
            continue
        field = USER_FIELDS[name]
        for part in (field.needs if field.sql is None else (name,)):
            if part not in wanted:
                wanted.append(part)
    return wanted


def _days_between(later: datetime, earlier: pd.Series) -> pd.Series:
    earlier = pd.to_datetime(earlier, utc=True)
    return (pd.Timestamp(later) - earlier).dt.total_seconds() / 86400.0


def sql_columns(names) -> dict[str, str] | None:
    """Map fields to their SQL expressions over ``user_frame``'s tables, or None if one is computed in pandas."""
    columns = {}
    for name in names:
        field = USER_FIELDS.get(name)
        if field is None or field.sql is None or name in _TIME_FIELDS:
            return None
        columns[name] = field.sql
    return columns


def _aliases(expressions) -> set[str]:
    return {alias for alias in _JOINS for sql in expressions if f"{alias}." in sql}


def user_frame(fields, *, as_of: datetime, id_range: tuple[int, int] | None = None, reachable_only: bool = False,
               user_ids=None, where=None) -> pd.DataFrame:
    """Load the named fields for users (optionally an id range or list), indexed by user id.

    ``where`` is an extra filter, an object with ``sql`` and ``params`` (a compiled rule
    condition, say), over the same tables; the fields it names must be among ``fields``.
    """
    names = list(dict.fromkeys(fields))
    # In UTC: SQLite compares times as text, so a time with another offset would be compared wrongly.
    as_of = as_of.astimezone(dt_timezone.utc)
    sql_names = _sql_fields(names)
    selects = ", ".join(f"{USER_FIELDS[name].sql} AS {name}" for name in sql_names)
    aliases = _aliases([USER_FIELDS[name].sql for name in sql_names] + ([where.sql] if where is not None else []))
    joined = [alias for alias in _JOINS if alias in aliases]
    join_params: list = []
    if id_range is not None:
        # The range again on each joined table's key: PostgreSQL does not carry u.id's range
        # over the join, and would otherwise hash the whole table for every chunk.
        joins = " ".join(f"{_JOINS[alias]} AND {alias}.user_id >= %s AND {alias}.user_id < %s" for alias in joined)
        join_params = [bound for _ in joined for bound in id_range]
    else:
        joins = " ".join(_JOINS[alias] for alias in joined)
    extra, where, params = where, ["u.erased_at IS NULL"], []
    if reachable_only:
        where.append("u.marketing_consent")
    if id_range is not None:
        where.append("u.id >= %s AND u.id < %s")
        params.extend(id_range)
    if user_ids is not None:
        ids = [int(i) for i in user_ids]
        if not ids:
            ids = [-1]
        where.append(f"u.id IN ({', '.join(['%s'] * len(ids))})")
        params.extend(ids)
    if extra is not None:
        where.append(extra.sql)
        params.extend(extra.params)
    sql = f"SELECT u.id AS user_id{', ' + selects if selects else ''} FROM analytics_enduser u {joins} WHERE {' AND '.join(where)} ORDER BY u.id"
    params = join_params + params
    text = [name for name in sql_names if USER_FIELDS[name].spec.type == "category" or name in _TIME_FIELDS]
    frame = query_frame(sql, params, columns_as_text=text)
    if frame.empty:
        frame = pd.DataFrame(columns=["user_id", *sql_names])
    frame = frame.set_index("user_id")
    frame.index = frame.index.astype("int64")
    for name in sql_names:
        if USER_FIELDS[name].spec.type == "number" and name not in _TIME_FIELDS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif USER_FIELDS[name].spec.type == "bool":
            frame[name] = _as_bool(frame[name])
        elif name in _TIME_FIELDS:
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    _derive(frame, names, as_of)
    category_names = [name for name in names if _category_field(name)]
    if category_names:
        _add_category_counts(frame, category_names, as_of=as_of, id_range=id_range)
    return frame[names]


def _as_bool(column: pd.Series) -> pd.Series:
    """Read a boolean column as it arrives: PostgreSQL's CSV says t/f, SQLite says 1/0."""
    if column.dtype == object:
        return column.isin(("t", "true", "True", True, 1, "1"))
    return column.fillna(False).astype(bool)


def _add_category_counts(frame: pd.DataFrame, names: list[str], *, as_of: datetime, id_range) -> None:
    """Count each user's events per catalog category (films watched, courses bought) up to as_of."""
    for prefix in {_category_field(name)[0] for name in names}:
        kind, table = CATEGORY_COUNTS[prefix]
        item_key = "external_id" if table == "campaigns_film" else "sku"
        where, params = ["e.kind = %s", "e.occurred_at < %s"], [kind, as_of]
        if id_range is not None:
            where.append("e.user_id >= %s AND e.user_id < %s")
            params.extend(id_range)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT e.user_id, i.category, COUNT(*) FROM analytics_behaviorevent e "
                f"JOIN {table} i ON i.partner_id = e.partner_id AND i.{item_key} = e.item_id "
                f"WHERE {' AND '.join(where)} GROUP BY e.user_id, i.category", params,
            )
            counts = pd.DataFrame(cursor.fetchall(), columns=["user_id", "category", "n"])
        table_counts = counts.pivot_table(index="user_id", columns="category", values="n", aggfunc="sum", fill_value=0)
        for name in names:
            found = _category_field(name)
            if found[0] == prefix:
                column = table_counts[found[1]] if found[1] in table_counts else pd.Series(dtype=float)
                frame[name] = column.reindex(frame.index).fillna(0).astype(float)


def _derive(frame: pd.DataFrame, names, as_of: datetime) -> None:
    if "days_since_last_activity" in names:
        frame["days_since_last_activity"] = _days_between(as_of, frame["last_event_at"])
    if "recency_days" in names:
        frame["recency_days"] = _days_between(as_of, frame["last_purchase_at"])
    if "tenure_days" in names:
        frame["tenure_days"] = _days_between(as_of, frame["signed_up_at"].fillna(frame["first_event_at"]))
    if "frequency" in names:
        frame["frequency"] = np.maximum(frame["purchase_days"] - 1, 0)
    if "is_member" in names:
        started, cancelled = frame["membership_started_at"], frame["membership_cancelled_at"]
        frame["is_member"] = (started.notna() & (cancelled.isna() | (cancelled < started))).astype(bool)


def user_id_ranges(*, size: int, reachable_only: bool = False) -> list[tuple[int, int]]:
    """Split the users' id space into ranges of ``size`` ids, the chunks any worker can take."""
    low, high = user_id_bounds(reachable_only=reachable_only)
    return [(start, min(start + size, high)) for start in range(low, high, size)]


def user_id_bounds(*, reachable_only: bool = False) -> tuple[int, int]:
    """Return (lowest id, highest id + 1) of users, for splitting work into id ranges."""
    where = "WHERE erased_at IS NULL" + (" AND marketing_consent" if reachable_only else "")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(id), MAX(id) FROM analytics_enduser {where}")
        low, high = cursor.fetchone()
    return (0, 0) if low is None else (low, high + 1)


def enduser_id_visible(*, partner: Partner, external_id: str, field: str | None = "user_id") -> int:
    """Return the id of the user ``enduser_get_visible`` would return, in one written-out statement (a hot path)."""
    row = None
    if len(external_id) <= EndUser._meta.get_field("external_id").max_length and "\x00" not in external_id:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {EndUser._meta.db_table} WHERE external_id = %s AND erased_at IS NULL "
                           "AND (home_partner_id = %s OR data_sharing_consent)", [external_id, partner.pk])
            row = cursor.fetchone()
    if row is None:
        raise ApplicationError("no such user", code="not_found", field=field, status=404)
    return row[0]


def enduser_get_visible(*, partner: Partner, external_id: str, field: str | None = "user_id") -> EndUser:
    """Return the user with this pseudonymous id if the partner may see them, or a 404 error naming field."""
    user = None
    # An id no user can have is answered without a query (PostgreSQL refuses NUL characters outright).
    if len(external_id) <= EndUser._meta.get_field("external_id").max_length and "\x00" not in external_id:
        user = EndUser.objects.visible_to(partner).filter(external_id=external_id).first()
    if user is None:
        raise ApplicationError("no such user", code="not_found", field=field, status=404)
    return user


# How much one event says about interest in its item's category. A purchase is a stronger
# signal than a view or a watch; these are stated judgements, not fitted values.
INTEREST_WEIGHTS = {"course_purchase": 3.0, "course_view": 1.0, "film_watch": 1.0}
COURSE_KINDS = ("course_purchase", "course_view")


@dataclass(frozen=True)
class Recommendation:
    kind: str  # "course" or "film"
    partner: str  # slug of the partner whose catalog the item is in
    item_id: str  # the course SKU or the film's external id
    title: str
    category: str
    score: float  # the user's share of interest in this category, 0 to 1


def _interest_by_category(counts) -> Counter:
    course_keys = {(partner_id, item) for partner_id, kind, item, _n in counts if kind in COURSE_KINDS}
    film_keys = {(partner_id, item) for partner_id, kind, item, _n in counts if kind not in COURSE_KINDS}
    course_category = {
        (partner_id, sku): category for partner_id, sku, category in Course.objects.filter(
            partner_id__in={key[0] for key in course_keys}, sku__in={key[1] for key in course_keys},
        ).values_list("partner_id", "sku", "category")
    }
    film_category = {
        (partner_id, external_id): category for partner_id, external_id, category in Film.objects.filter(
            partner_id__in={key[0] for key in film_keys}, external_id__in={key[1] for key in film_keys},
        ).values_list("partner_id", "external_id", "category")
    }
    interest = Counter()
    for partner_id, kind, item, n in counts:
        category = (course_category if kind in COURSE_KINDS else film_category).get((partner_id, item))
        if category:
            interest[category] += INTEREST_WEIGHTS[kind] * n
    return interest


def user_recommendations(*, user: EndUser, partner: Partner, limit: int = 10,
                         now: datetime | None = None) -> list[Recommendation]:
    """Recommend courses and films the partner can offer, ranked by the user's interest in their categories.

    Interest is counted from the user's course and film events whose items are in the
    catalog; without data-sharing consent only the events this partner sent count.
    Candidates are the partner's own active courses and licensed films and those its
    running campaigns promote; courses the user bought and films they watched are left
    out. A user with no such events gets no recommendations rather than a guess.
    """
    now = now or timezone.now()
    events = BehaviorEvent.objects.filter(user=user, kind__in=INTEREST_WEIGHTS).exclude(item_id="")
    if not user.data_sharing_consent:
        events = events.filter(partner=partner)
    counts = list(events.values_list("partner_id", "kind", "item_id").annotate(n=Count("id")).order_by())
    interest = _interest_by_category(counts)
    if not interest:
        return []
    total = sum(interest.values())
    bought = {(partner_id, item) for partner_id, kind, item, _n in counts if kind == "course_purchase"}
    watched = {(partner_id, item) for partner_id, kind, item, _n in counts if kind == "film_watch"}
    campaigns = Campaign.objects.visible_to(partner).running_at(now).values("pk")
    courses = (
        Course.objects.filter(Q(partner=partner) | Q(campaigns__in=campaigns), is_active=True, category__in=interest)
        .select_related("partner").distinct()
    )
    films = (
        Film.objects.filter(Q(partner=partner) | Q(campaigns__in=campaigns), category__in=interest,
                            licence_start__lte=now, licence_end__gt=now)
        .select_related("partner").distinct()
    )
    candidates = [
        Recommendation("course", course.partner.slug, course.sku, course.title, course.category,
                       round(interest[course.category] / total, 4))
        for course in courses if (course.partner_id, course.sku) not in bought
    ] + [
        Recommendation("film", film.partner.slug, film.external_id, film.title, film.category,
                       round(interest[film.category] / total, 4))
        for film in films if (film.partner_id, film.external_id) not in watched
    ]
    candidates.sort(key=lambda item: (-item.score, item.title, item.partner, item.item_id))
    return candidates[:limit]
