"""CSV imports of users and events: stream a file, validate in batches, upsert, report every bad row."""

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError

from ..models import EndUser
from .csvfiles import CsvStream
from .ingest import (
    EVENT_COLUMNS,
    MAX_ID_LENGTH,
    IngestResult,
    Rejection,
    RowChecker,
    check_ids,
    events_ingest,
    parse_timestamps,
    stage_frame,
    validate_events,
)
from .live import pending_users_record
from .progress import progress_bar
from .suppression import staged_without_erased

BEHAVIOR_COLUMNS = (
    "user_id",
    "watching_count",
    "purchasing_count",
    "age",
    "education",
    "occupation",
    "purchased_course",
)
# Columns of the per-user table we understand beyond the article's; anything else is kept in `extra`.
BEHAVIOR_OPTIONAL = (
    "gender",
    "acquisition_channel",
    "marketing_consent",
    "data_sharing_consent",
    "signed_up_at",
    "signup_at",
    "home_partner",
    "alliance_id",
)
TRUE_WORDS = {"1", "true", "yes", "y", "t", "是", "真"}
FALSE_WORDS = {"0", "false", "no", "n", "f", "否", "假"}


def events_import_file(
    path,
    *,
    partner_ids: dict[str, int],
    encoding: str | None = None,
    progress: bool = False,
    on_batch: Callable[[IngestResult], None] | None = None,
) -> IngestResult:
    """Import an events CSV batch by batch; good rows are kept, bad rows named with line, column and reason.

    ``partner_ids`` maps the partner slugs a file may name to their ids; ``on_batch`` hears of
    each batch once it is stored (its ``users_with_new_events`` among the rest).
    """
    result = IngestResult()
    with (
        CsvStream(path, required=EVENT_COLUMNS, encoding=encoding) as stream,
        progress_bar(f"importing {stream.path.name}", stream.size, unit="bytes", enabled=progress) as advance,
    ):
        for batch in stream.batches(on_progress=advance):
            staged, rejected = validate_events(batch.columns, batch.lines, partner_ids=partner_ids)
            staged, erased = staged_without_erased(staged, partner_column="partner_id")
            rejected.extend(erased)
            stored = events_ingest(staged)
            if on_batch is not None:
                on_batch(stored)
            result.add(stored)
            result.rejected.extend(rejected)
        result.rejected.extend(Rejection(row.line, row.column, row.reason) for row in stream.malformed)
    result.rejected.sort(key=lambda rejection: rejection.position)
    return result


def _parse_count(values: pd.Series, column: str, checker: RowChecker) -> pd.Series:
    ok = values.str.fullmatch(r"\d{1,9}")
    checker.flag(~ok.to_numpy(), column, lambda i: f"not a whole number of at least 0: {values.iloc[i]!r}")
    return pd.to_numeric(values.where(ok, "0"))


def parse_flag(values: pd.Series, column: str, checker: RowChecker) -> pd.Series:
    lowered = values.str.lower()
    known = lowered.isin(TRUE_WORDS | FALSE_WORDS) | (lowered == "")
    checker.flag(~known.to_numpy(), column, lambda i: f"not yes/no (1/0, true/false, 是/否): {values.iloc[i]!r}")
    return lowered.map(lambda word: True if word in TRUE_WORDS else False if word in FALSE_WORDS else None)


def _blank_as_missing(values: pd.Series) -> np.ndarray:
    """Text of an optional column with blank cells as None: the user then keeps what is stored."""
    return values.where(values != "", None).to_numpy()


def _parse_optional_times(values: pd.Series, column: str, checker: RowChecker) -> pd.Series:
    """Parse the times given in an optional column; a blank cell is no time (NaT), not a missing one."""
    given = (values != "").to_numpy()
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if given.any():
        # Checked apart, then each problem is put back on its row of the batch.
        inner = RowChecker(np.flatnonzero(given).tolist())
        parsed[given] = parse_timestamps(values[given].reset_index(drop=True), column, inner).to_numpy()
        reasons = {rejection.position: rejection.reason for rejection in inner.rejections}
        checker.flag(np.isin(np.arange(len(values)), list(reasons)), column, lambda i: reasons[i])
    return parsed


def validate_behavior(
    columns: dict[str, list[str]],
    positions,
    *,
    partner_ids: dict[str, int],
    default_partner_id: int | None,
    extra_names: list[str],
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Check rows of the per-user table; return good rows ready to stage, and the rejections."""
    frame = pd.DataFrame({name: pd.Series(values, dtype=object).astype(str) for name, values in columns.items()})
    if "signup_at" in frame and "signed_up_at" not in frame:
        frame = frame.rename(columns={"signup_at": "signed_up_at"})
    checker = RowChecker(positions)
    check_ids(frame["user_id"], "user_id", checker)
    if "alliance_id" in frame:
        checker.flag(
            (frame["alliance_id"].str.len() > MAX_ID_LENGTH).to_numpy(),
            "alliance_id",
            f"longer than {MAX_ID_LENGTH} characters",
        )
    watching = _parse_count(frame["watching_count"], "watching_count", checker)
    purchasing = _parse_count(frame["purchasing_count"], "purchasing_count", checker)
    age_text = frame["age"]
    age_ok = age_text.str.fullmatch(r"\d{1,3}") & (
        pd.to_numeric(age_text.where(age_text.str.fullmatch(r"\d{1,3}"), "0")) <= 130
    )
    checker.flag(
        (~age_ok & (age_text != "")).to_numpy(), "age", lambda i: f"not an age between 0 and 130: {age_text.iloc[i]!r}"
    )
    for name, limit in (("education", 32), ("occupation", 64), ("gender", 16), ("acquisition_channel", 32)):
        if name in frame:
            checker.flag((frame[name].str.len() > limit).to_numpy(), name, f"longer than {limit} characters")
    purchased = parse_flag(frame["purchased_course"], "purchased_course", checker)
    flags = {
        name: parse_flag(frame[name], name, checker) if name in frame else pd.Series([None] * len(frame))
        for name in ("marketing_consent", "data_sharing_consent")
    }
    if "home_partner" in frame:
        home = frame["home_partner"].map(lambda slug: partner_ids.get(slug) if slug else default_partner_id)
        checker.flag(
            home.isna().to_numpy(), "home_partner", lambda i: f"unknown partner {frame['home_partner'].iloc[i]!r}"
        )
    else:
        home = pd.Series([default_partner_id] * len(frame))
    signed_up = (
        _parse_optional_times(frame["signed_up_at"], "signed_up_at", checker)
        if "signed_up_at" in frame
        else pd.Series([pd.NaT] * len(frame), dtype="datetime64[ns, UTC]")
    )
    good = checker.good
    extra = frame[extra_names].to_dict("records") if extra_names else [{}] * len(frame)
    staged = pd.DataFrame(
        {
            "position": np.asarray(positions)[good],
            "user_ext": frame["user_id"][good].to_numpy(),
            "home_partner_id": home[good].astype("int64").to_numpy(),
            # Nullable integers: a blank age is NULL, and the others stay whole numbers (not 25.0).
            "age": pd.array([int(a) if a else None for a in age_text[good]], dtype="Int64"),
            "education": frame["education"][good].to_numpy(),
            "occupation": frame["occupation"][good].to_numpy(),
            "gender": _blank_as_missing(frame["gender"][good]) if "gender" in frame else None,
            "acquisition_channel": _blank_as_missing(frame["acquisition_channel"][good])
            if "acquisition_channel" in frame
            else None,
            "alliance_id": _blank_as_missing(frame["alliance_id"][good]) if "alliance_id" in frame else None,
            "marketing_consent": flags["marketing_consent"][good].to_numpy(),
            "data_sharing_consent": flags["data_sharing_consent"][good].to_numpy(),
            "signed_up_at": [None if pd.isna(t) else t for t in signed_up[good]],
            "watching_count": watching[good].astype("int64").to_numpy(),
            "purchasing_count": purchasing[good].astype("int64").to_numpy(),
            "purchased_course": purchased[good].to_numpy(),
            "extra": [json.dumps(row, ensure_ascii=False) for row, keep in zip(extra, good, strict=True) if keep],
        }
    )
    staged = staged.astype(object).where(staged.notna(), None)
    checker.rejections.sort(key=lambda rejection: rejection.position)
    return staged, checker.rejections


_BEHAVIOR_STAGING = {
    "position": "bigint",
    "user_ext": "varchar(64)",
    "home_partner_id": "bigint",
    "age": "integer",
    "education": "varchar(32)",
    "occupation": "varchar(64)",
    "gender": "varchar(16)",
    "acquisition_channel": "varchar(32)",
    "alliance_id": "varchar(64)",
    "marketing_consent": "boolean",
    "data_sharing_consent": "boolean",
    "signed_up_at": "timestamp with time zone",
    "watching_count": "integer",
    "purchasing_count": "integer",
    "purchased_course": "boolean",
    "extra": "text",
}
# Columns a file may leave out: NULL in staging, and then the user keeps what they had.
_KEEP_IF_ABSENT = (
    "gender",
    "acquisition_channel",
    "alliance_id",
    "marketing_consent",
    "data_sharing_consent",
    "signed_up_at",
)
_USER_COLUMNS = ("age", "education", "occupation", *_KEEP_IF_ABSENT)


def behavior_ingest(staged: pd.DataFrame) -> IngestResult:
    """Upsert users and their per-user rows; a row identical to what is stored counts as a duplicate."""
    result = IngestResult()
    if staged.empty:
        return result
    postgres = connection.vendor == "postgresql"
    distinct = "IS DISTINCT FROM" if postgres else "IS NOT"
    as_json = "::jsonb" if postgres else ""
    ddl = ", ".join(f"{name} {kind}" for name, kind in _BEHAVIOR_STAGING.items())
    now = timezone.now()
    new_value = {name: f"s.{name}" for name in _USER_COLUMNS} | {
        name: f"COALESCE(s.{name}, u.{name})" for name in _KEEP_IF_ABSENT
    }
    with transaction.atomic(), connection.cursor() as cursor:
        stage_frame(cursor, "staging_behavior", ddl, staged, ", ".join(_BEHAVIOR_STAGING))
        cursor.execute(
            """INSERT INTO analytics_enduser (external_id, home_partner_id, age, education, occupation, gender,
                   acquisition_channel, alliance_id, marketing_consent, data_sharing_consent, signed_up_at,
                   created_at)
               SELECT s.user_ext, s.home_partner_id, s.age, s.education, s.occupation, COALESCE(s.gender, ''),
                   COALESCE(s.acquisition_channel, ''), s.alliance_id, COALESCE(s.marketing_consent, FALSE),
                   COALESCE(s.data_sharing_consent, FALSE), s.signed_up_at, %s
               FROM staging_behavior s
               WHERE NOT EXISTS (SELECT 1 FROM analytics_enduser e
                                 WHERE e.home_partner_id = s.home_partner_id AND e.external_id = s.user_ext)
               RETURNING id""",
            [now],
        )
        changed = {row[0] for row in cursor.fetchall()}
        result.users_created = len(changed)
        cursor.execute(
            f"""UPDATE analytics_enduser AS u SET {", ".join(f"{name} = {value}" for name, value in new_value.items())}
                FROM staging_behavior s
                WHERE u.home_partner_id = s.home_partner_id AND u.external_id = s.user_ext AND u.erased_at IS NULL
                  AND ({", ".join(f"u.{name}" for name in new_value)}) {distinct} ({", ".join(new_value.values())})
                RETURNING id"""
        )
        changed |= {row[0] for row in cursor.fetchall()}
        cursor.execute(
            f"""INSERT INTO analytics_importedbehavior (user_id, watching_count, purchasing_count, purchased_course,
                    extra, imported_at)
                SELECT u.id, s.watching_count, s.purchasing_count, s.purchased_course, s.extra{as_json}, %s
                FROM staging_behavior s JOIN analytics_enduser u
                    ON u.home_partner_id = s.home_partner_id AND u.external_id = s.user_ext
                WHERE u.erased_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM analytics_importedbehavior b WHERE b.user_id = u.id)
                RETURNING user_id""",
            [now],
        )
        changed |= {row[0] for row in cursor.fetchall()}
        cursor.execute(
            f"""UPDATE analytics_importedbehavior AS b SET watching_count = s.watching_count,
                    purchasing_count = s.purchasing_count, purchased_course = s.purchased_course,
                    extra = s.extra{as_json}, imported_at = %s
                FROM staging_behavior s JOIN analytics_enduser u
                    ON u.home_partner_id = s.home_partner_id AND u.external_id = s.user_ext
                WHERE b.user_id = u.id
                  AND (b.watching_count, b.purchasing_count, b.purchased_course, b.extra) {distinct}
                      (s.watching_count, s.purchasing_count, s.purchased_course, s.extra{as_json})
                RETURNING user_id""",
            [now],
        )
        changed |= {row[0] for row in cursor.fetchall()}
        cursor.execute("DROP TABLE staging_behavior")
        # Every id above is a user's: their fields changed, so the live path evaluates them again.
        pending_users_record(user_ids=changed, now=now)
    result.imported = len(changed)
    result.duplicates = len(staged) - result.imported
    return result


ALLIANCE_ID_TAKEN = "alliance id already registered for another user"


def _staged_without_taken_alliance_ids(staged: pd.DataFrame) -> tuple[pd.DataFrame, list[Rejection]]:
    """Reject the rows whose alliance id another user has, or an earlier row of the batch gave another user."""
    given = staged["alliance_id"].notna() if "alliance_id" in staged else pd.Series(False, index=staged.index)
    if not given.any():
        return staged, []
    rows = staged[given]
    owners = {
        alliance: (home, external)
        for alliance, home, external in EndUser.objects.filter(alliance_id__in=set(rows["alliance_id"])).values_list(
            "alliance_id", "home_partner_id", "external_id"
        )
    }
    taken = np.zeros(len(staged), dtype=bool)
    for index, (alliance, home, external) in enumerate(
        zip(staged["alliance_id"], staged["home_partner_id"], staged["user_ext"], strict=True)
    ):
        if alliance is None:
            continue
        owner = owners.setdefault(alliance, (home, external))
        taken[index] = owner != (home, external)
    rejections = [Rejection(int(position), "alliance_id", ALLIANCE_ID_TAKEN) for position in staged["position"][taken]]
    return staged[~taken].reset_index(drop=True), rejections


def behavior_import_file(
    path,
    *,
    partner_ids: dict[str, int],
    partner_id: int | None = None,
    fallback_partner_id: int | None = None,
    encoding: str | None = None,
    progress: bool = False,
) -> IngestResult:
    """Import the article's per-user table; unknown extra columns are kept with the row.

    ``partner_ids`` maps the slugs a ``home_partner`` column may name to their ids; new users
    without one belong to ``partner_id``, or when none is given and the file has no such
    column, to ``fallback_partner_id`` (the only knowledge platform, if there is one).
    """
    result = IngestResult()
    with CsvStream(
        path, required=BEHAVIOR_COLUMNS, optional=BEHAVIOR_OPTIONAL, encoding=encoding, keep_extra=True
    ) as stream:
        # None only with a home_partner column: a row that leaves it blank names no known partner.
        default_partner_id: int | None
        if partner_id is None and "home_partner" not in stream.header:
            if fallback_partner_id is None:
                raise ApplicationError(
                    "cannot tell whose users these are: pass --partner SLUG (or add a home_partner column)",
                    field="partner",
                )
            default_partner_id = fallback_partner_id
        else:
            default_partner_id = partner_id
        with progress_bar(f"importing {stream.path.name}", stream.size, unit="bytes", enabled=progress) as advance:
            for batch in stream.batches(on_progress=advance):
                staged, rejected = validate_behavior(
                    batch.columns,
                    batch.lines,
                    partner_ids=partner_ids,
                    default_partner_id=default_partner_id,
                    extra_names=stream.extra_columns,
                )
                staged, erased = staged_without_erased(staged, partner_column="home_partner_id")
                rejected.extend(erased)
                staged = staged.drop_duplicates(["home_partner_id", "user_ext"], keep="last")
                staged, taken = _staged_without_taken_alliance_ids(staged)
                rejected.extend(taken)
                result.add(behavior_ingest(staged))
                result.rejected.extend(rejected)
        result.rejected.extend(Rejection(row.line, row.column, row.reason) for row in stream.malformed)
    result.rejected.sort(key=lambda rejection: rejection.position)
    return result
