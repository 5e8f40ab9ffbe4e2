"""Reading users as the campaign engine and the models see them: one row per user, named fields.

``USER_FIELDS`` describes every field (``CONDITION_FIELDS`` those a rule may name, from which
the campaigns side builds the registry conditions are checked against); ``user_frame`` loads
any of those fields for a range of users with one SQL query, deriving ages such as
``days_since_last_activity`` from stored times at the moment asked for.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Model

from crossmkt_site.bulk import ids_in_sql, query_frame, sparse_ids
from crossmkt_site.errors import ApplicationError

from .models import EndUser, ModelRun, UserLink

CHURN_BANDS = ("low", "medium", "high")


# The field types rule conditions know (campaigns.rules.FieldType).
UserFieldType = Literal["number", "category", "bool"]


@dataclass(frozen=True)
class UserField:
    """Describe a user field: its type ("number", "category" or "bool"), meaning, allowed values and source."""

    type: UserFieldType
    description: str
    sql: str | None  # a column expression over the joined tables, or None when derived in pandas
    needs: tuple[str, ...] = ()  # the SQL fields a derived field is computed from
    allowed_values: tuple[str, ...] | None = None


def _number(description: str, sql: str | None, needs: tuple[str, ...] = ()) -> UserField:
    return UserField("number", description, sql, needs)


def _category(description: str, sql: str, allowed: tuple[str, ...] | None = None) -> UserField:
    return UserField("category", description, sql, allowed_values=allowed)


def _flag(description: str, sql: str) -> UserField:
    return UserField("bool", description, sql)


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
    "last_event_at": _number("time of the last event", "f.last_event_at"),
    "last_purchase_at": _number("time of the last purchase", "f.last_purchase_at"),
    "first_purchase_at": _number("time of the first purchase", "f.first_purchase_at"),
    "first_event_at": _number("time of the first event", "f.first_event_at"),
    "signed_up_at": _number("sign-up time", "u.signed_up_at"),
    "membership_started_at": _number("membership start", "f.membership_started_at"),
    "membership_cancelled_at": _number("membership end", "f.membership_cancelled_at"),
    "days_since_last_activity": _number("days since the last event", None, ("last_event_at",)),
    "recency_days": _number("days since the last purchase", None, ("last_purchase_at",)),
    "tenure_days": _number("days since sign-up (or the first event)", None, ("signed_up_at", "first_event_at")),
    "frequency": _number("repeat purchase days (distinct purchase days − 1)", None, ("purchase_days",)),
    "is_member": UserField(
        "bool", "has a running membership", None, ("membership_started_at", "membership_cancelled_at")
    ),
}
_TIME_FIELDS = {name for name, field in USER_FIELDS.items() if name.endswith("_at")}
# The fields a rule condition may name: every user field but the raw times.
CONDITION_FIELDS: dict[str, UserField] = {
    name: field for name, field in USER_FIELDS.items() if name not in _TIME_FIELDS
}


@dataclass(frozen=True)
class CategoryCount:
    """A family of per-category counts: ``<prefix><category>`` counts a user's events of one kind per item category."""

    event_kind: str
    description: str  # with ``{category}`` where the category's name goes


# Per-category counts: ``watching_count_<film category>`` and ``purchasing_count_<course category>``. Which
# category an item is in is the catalog's to say: ``user_frame`` takes it as ``item_categories``.
CATEGORY_COUNTS = {
    "watching_count_": CategoryCount("film_watch", "films watched in category {category}"),
    "purchasing_count_": CategoryCount("course_purchase", "courses bought in category {category}"),
}


def _category_field(name: str) -> tuple[str, str] | None:
    """Return (prefix, category) when name is a per-category count, else None."""
    for prefix in CATEGORY_COUNTS:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix, name[len(prefix) :]
    return None


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
        for part in field.needs if field.sql is None else (name,):
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


def user_frame(
    fields,
    *,
    as_of: datetime,
    id_range: tuple[int, int] | None = None,
    reachable_only: bool = False,
    user_ids=None,
    where=None,
    item_categories: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Load the named fields for users (optionally an id range or list), indexed by user id.

    ``where`` is an extra filter, an object with ``sql`` and ``params`` (a compiled rule
    condition, say), over the same tables; the fields it names must be among ``fields``.
    Per-category counts need ``item_categories``: per event kind, an SQL query giving the
    ``partner_id``, ``item_id`` and ``category`` of every item an event of that kind may name.
    """
    names = list(dict.fromkeys(fields))
    # In UTC: SQLite compares times as text, so a time with another offset would be compared wrongly.
    as_of = as_of.astimezone(UTC)
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
    extra, where = where, ["u.erased_at IS NULL"]
    params: list[object] = []
    if reachable_only:
        where.append("u.marketing_consent")
    if id_range is not None:
        where.append("u.id >= %s AND u.id < %s")
        params.extend(id_range)
    if user_ids is not None:
        where.append(ids_in_sql("u.id", user_ids))
    if extra is not None:
        where.append(extra.sql)
        params.extend(extra.params)
    sql = (
        f"SELECT u.id AS user_id{', ' + selects if selects else ''} FROM analytics_enduser u {joins} "
        f"WHERE {' AND '.join(where)} ORDER BY u.id"
    )
    params = join_params + params
    text = [name for name in sql_names if USER_FIELDS[name].type == "category" or name in _TIME_FIELDS]
    frame = query_frame(sql, params, columns_as_text=text)
    if frame.empty:
        frame = pd.DataFrame(columns=["user_id", *sql_names])
    frame = frame.set_index("user_id")
    frame.index = frame.index.astype("int64")
    for name in sql_names:
        if USER_FIELDS[name].type == "number" and name not in _TIME_FIELDS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif USER_FIELDS[name].type == "bool":
            frame[name] = _as_bool(frame[name])
        elif name in _TIME_FIELDS:
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    _derive(frame, names, as_of)
    category_fields = {name: found for name in names if (found := _category_field(name)) is not None}
    if category_fields:
        if item_categories is None:
            raise ValueError(f"{next(iter(category_fields))!r} is a per-category count: pass item_categories")
        _add_category_counts(
            frame,
            category_fields,
            as_of=as_of,
            id_range=id_range,
            user_ids=sparse_ids(frame.index) if user_ids is not None else None,
            item_categories=item_categories,
        )
    return frame[names]


def _as_bool(column: pd.Series) -> pd.Series:
    """Read a boolean column as it arrives: PostgreSQL's CSV says t/f, SQLite says 1/0."""
    if column.dtype == object:
        return column.isin(("t", "true", "True", True, 1, "1"))
    return column.fillna(False).astype(bool)


def _add_category_counts(
    frame: pd.DataFrame,
    fields: Mapping[str, tuple[str, str]],
    *,
    as_of: datetime,
    id_range: tuple[int, int] | None,
    item_categories: Mapping[str, str],
    user_ids: Sequence[int] | None = None,
) -> None:
    """Count each user's events per catalog category (films watched, courses bought) up to as_of.

    ``fields`` maps each per-category count to its (prefix, category), as ``_category_field`` reads it.
    """
    for prefix in {field_prefix for field_prefix, _ in fields.values()}:
        kind = CATEGORY_COUNTS[prefix].event_kind
        where = ["e.kind = %s", "e.occurred_at < %s"]
        params: list[str | int | datetime] = [kind, as_of]
        if id_range is not None:
            where.append("e.user_id >= %s AND e.user_id < %s")
            params.extend(id_range)
        if user_ids is not None:
            where.append(ids_in_sql("e.user_id", user_ids))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT e.user_id, i.category, COUNT(*) FROM analytics_behaviorevent e "
                f"JOIN ({item_categories[kind]}) i ON i.partner_id = e.partner_id AND i.item_id = e.item_id "
                f"WHERE {' AND '.join(where)} GROUP BY e.user_id, i.category",
                params,
            )
            counts = pd.DataFrame(cursor.fetchall(), columns=["user_id", "category", "n"])
        table_counts = counts.pivot_table(index="user_id", columns="category", values="n", aggfunc="sum", fill_value=0)
        for name, (field_prefix, category) in fields.items():
            if field_prefix == prefix:
                column = table_counts[category] if category in table_counts else pd.Series(dtype=float)
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


# The user a partner means by an id, in the order of ``analytics.services.identity``, without writing:
# its consented link, its own user, a consenting user of another partner whose alliance id it is.
VISIBLE_USER_SQL = """
SELECT user_id FROM (
    SELECT 1 AS step, u.id AS user_id FROM analytics_userlink l JOIN analytics_enduser u ON u.id = l.user_id
    WHERE l.partner_id = %(partner)s AND l.external_id = %(id)s AND u.data_sharing_consent AND u.erased_at IS NULL
    UNION ALL
    SELECT 2, u.id FROM analytics_enduser u
    WHERE u.home_partner_id = %(partner)s AND u.external_id = %(id)s AND u.erased_at IS NULL
    UNION ALL
    SELECT 3, u.id FROM analytics_enduser u
    WHERE u.alliance_id = %(id)s AND u.data_sharing_consent AND u.erased_at IS NULL
      AND u.home_partner_id <> %(partner)s
      AND NOT EXISTS (SELECT 1 FROM analytics_userlink l
                      WHERE l.partner_id = %(partner)s AND (l.user_id = u.id OR l.external_id = %(id)s))
) candidates ORDER BY step LIMIT 1
"""


def enduser_id_visible(*, partner: Model, external_id: str, field: str | None = "user_id") -> int:
    """Return the id of the user a partner means by ``external_id`` and may see, or a 404 error naming field.

    Its own user, or a person linked to it (or whose alliance id it sends) who consents to data
    sharing; another partner's unlinked user is a 404 like an unknown id. One written-out
    statement (a hot path).
    """
    row = None
    # An id no user can have is answered without a query (PostgreSQL refuses NUL characters outright).
    if len(external_id) <= EndUser.EXTERNAL_ID_MAX_LENGTH and "\x00" not in external_id:
        with connection.cursor() as cursor:
            cursor.execute(VISIBLE_USER_SQL, {"partner": partner.pk, "id": external_id})
            row = cursor.fetchone()
    if row is None:
        raise ApplicationError("no such user", code="not_found", field=field, status=404)
    return row[0]


def ids_known_to_partner(*, partner_id: int, user_ids: Sequence[int]) -> dict[int, str]:
    """Map the users a partner may see among ``user_ids`` to the id that partner knows each by.

    Its own users by their id, people linked to it (while they consent to data sharing) by its id
    for them; anyone else is left out.
    """
    ids = sorted({int(pk) for pk in user_ids})
    known: dict[int, str] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        known.update(
            EndUser.objects.filter(pk__in=chunk, home_partner_id=partner_id, erased_at__isnull=True).values_list(
                "pk", "external_id"
            )
        )
        known.update(
            UserLink.objects.filter(
                user_id__in=chunk, partner_id=partner_id, user__data_sharing_consent=True, user__erased_at__isnull=True
            ).values_list("user_id", "external_id")
        )
    return known


# Ids per query; SQLite takes at most 32,766 parameters.
_ID_CHUNK = 5_000


def users_known_by_partner_ids(*, partner_id: int, external_ids: Sequence[str]) -> dict[str, int]:
    """Map the ids among ``external_ids`` that a partner knows someone by to that person's user id.

    As ``analytics.services.identity`` resolves, without writing: the partner's link of that id
    (while the person consents to data sharing), else its own user of that id; erased people and
    other partners' users are left out, so the same id at another partner never answers.
    """
    wanted = sorted({str(value) for value in external_ids})
    known: dict[str, int] = {}
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start : start + _ID_CHUNK]
        known.update(
            EndUser.objects.filter(
                home_partner_id=partner_id, external_id__in=chunk, erased_at__isnull=True
            ).values_list("external_id", "pk")
        )
        known.update(
            UserLink.objects.filter(
                partner_id=partner_id,
                external_id__in=chunk,
                user__data_sharing_consent=True,
                user__erased_at__isnull=True,
            ).values_list("external_id", "user_id")
        )
    return known


def enduser_get_visible(*, partner: Model, external_id: str, field: str | None = "user_id") -> EndUser:
    """Return the user a partner means by ``external_id`` if it may see them, or a 404 error naming field."""
    return EndUser.objects.get(pk=enduser_id_visible(partner=partner, external_id=external_id, field=field))


def uplift_models_summary(*, campaign_slug: str | None = None) -> dict | None:
    """Return the active uplift run's held-out evaluation: per method and offer package, AUUC and the Qini curve.

    None while no uplift model is trained. ``learned_from_this_campaign`` says whether the
    records of the campaign named by ``campaign_slug`` were among the experiments the models learned from.
    """
    run = ModelRun.objects.filter(model=ModelRun.Model.UPLIFT, is_active=True).defer("artifact").first()
    if run is None:
        return None
    metrics = run.metrics or {}
    models = []
    for method, packages in (metrics.get("evaluation") or {}).items():
        for package, curves in packages.items():
            conversion, value = curves["conversion"], curves.get("value") or {}
            models.append(
                {
                    "method": method,
                    "package": package,
                    "users": conversion["users"],
                    "users_treated": conversion["users_treated"],
                    "users_control": conversion["users_control"],
                    "auuc": conversion["auuc"],
                    "auuc_random": conversion["auuc_random"],
                    "auuc_lift": conversion["auuc_lift"],
                    "qini_coefficient": conversion["qini_coefficient"],
                    "revenue_auuc_lift": value.get("auuc_lift"),
                    "qini_curve": {
                        "fraction": conversion["fraction"],
                        "qini": conversion["qini"],
                        "random": conversion["random_qini"],
                    },
                }
            )
    sources = [source["campaign"] for source in metrics.get("sources", [])]
    return {
        "model": f"uplift v{run.version}",
        "trained_at": run.created_at.isoformat(),
        "selected_method": metrics.get("selected_method"),
        "sources": sources,
        "learned_from_this_campaign": campaign_slug is not None and campaign_slug in sources,
        "outcome": "conversion (0/1) of held-out users of the experiments; AUUC and Qini per user of that set",
        "models": models,
    }
