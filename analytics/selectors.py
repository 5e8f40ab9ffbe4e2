"""Reading users as the campaign engine and the models see them: one row per user, named fields.

``USER_FIELDS`` is the registry rule conditions are checked against; ``user_frame`` loads
any of those fields for a range of users with one SQL query, deriving ages such as
``days_since_last_activity`` from stored times at the moment asked for.
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection

from campaigns.conditions import FieldSpec

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
# What a rule may refer to: everything except raw timestamps.
CONDITION_REGISTRY: dict[str, FieldSpec] = {
    name: field.spec for name, field in USER_FIELDS.items() if name not in _TIME_FIELDS
}

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
        field = USER_FIELDS[name]
        for part in (field.needs if field.sql is None else (name,)):
            if part not in wanted:
                wanted.append(part)
    return wanted


def _days_between(later: datetime, earlier: pd.Series) -> pd.Series:
    earlier = pd.to_datetime(earlier, utc=True)
    return (pd.Timestamp(later) - earlier).dt.total_seconds() / 86400.0


def user_frame(fields, *, as_of: datetime, id_range: tuple[int, int] | None = None, reachable_only: bool = False,
               user_ids=None) -> pd.DataFrame:
    """Load the named fields for users (optionally an id range or list), indexed by user id."""
    names = list(dict.fromkeys(fields))
    sql_names = _sql_fields(names)
    selects = ", ".join(f"{USER_FIELDS[name].sql} AS {name}" for name in sql_names)
    aliases = {alias for alias in _JOINS for name in sql_names if f"{alias}." in USER_FIELDS[name].sql}
    joins = " ".join(_JOINS[alias] for alias in _JOINS if alias in aliases)
    where, params = ["u.erased_at IS NULL"], []
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
    sql = f"SELECT u.id AS user_id{', ' + selects if selects else ''} FROM analytics_enduser u {joins} WHERE {' AND '.join(where)} ORDER BY u.id"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        frame = pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])
    frame = frame.set_index("user_id")
    for name in sql_names:
        if USER_FIELDS[name].spec.type == "number" and name not in _TIME_FIELDS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif USER_FIELDS[name].spec.type == "bool":
            frame[name] = frame[name].astype(bool)
        elif name in _TIME_FIELDS:
            frame[name] = pd.to_datetime(frame[name], utc=True)
    _derive(frame, names, as_of)
    return frame[names]


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


def user_id_bounds(*, reachable_only: bool = False) -> tuple[int, int]:
    """Return (lowest id, highest id + 1) of users, for splitting work into id ranges."""
    where = "WHERE erased_at IS NULL" + (" AND marketing_consent" if reachable_only else "")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(id), MAX(id) FROM analytics_enduser {where}")
        low, high = cursor.fetchone()
    return (0, 0) if low is None else (low, high + 1)
