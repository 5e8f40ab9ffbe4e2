"""Writing many rows at once: COPY on PostgreSQL, executemany elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection
from django.db.models import Model

if TYPE_CHECKING:
    import pandas as pd
    from django.db.backends.utils import CursorWrapper

ModelT = TypeVar("ModelT", bound=Model)


def bulk_insert(cursor: CursorWrapper, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Insert rows into a table in one round of COPY (PostgreSQL) or executemany (SQLite)."""
    names = ", ".join(columns)
    if connection.vendor == "postgresql":
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if table.startswith("staging_"):
            # A fresh temporary table has no statistics; without them the planner joins it
            # against millions of rows as if it held a handful.
            cursor.execute(f"ANALYZE {table}")
    else:
        placeholders = ", ".join(["%s"] * len(columns))
        cursor.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({placeholders})", [tuple(map(_adapt, row)) for row in rows]
        )


# Rows per write to COPY: large enough to amortise the call, small enough to keep the text a few MB.
COPY_BLOCK_ROWS = 100_000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def bulk_insert_frame(cursor: CursorWrapper, table: str, frame: pd.DataFrame) -> None:
    """Insert a DataFrame into the table's columns of the same names: COPY text built a column at a time (PostgreSQL).

    Each column is turned into text in one vectorised pass, so a million rows cost a few
    seconds, not a Python call per value. Times are written in UTC (a naive datetime64
    column is taken to be UTC already); NaN, NaT and None are NULL. Elsewhere the rows go
    through ``bulk_insert``.
    """
    columns = list(frame.columns)
    if connection.vendor != "postgresql":
        bulk_insert(cursor, table, columns, zip(*(_sqlite_column(frame[name]) for name in columns), strict=True))
        return
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        # Block by block, so that only one block's text is held at a time.
        for start in range(0, len(frame), COPY_BLOCK_ROWS):
            block = frame.iloc[start : start + COPY_BLOCK_ROWS]
            copy.write(
                "\n".join(map("\t".join, zip(*(_copy_text(block[name]) for name in columns), strict=True))) + "\n"
            )
    if table.startswith("staging_"):
        cursor.execute(f"ANALYZE {table}")


def _copy_text(column: pd.Series) -> list[str]:
    """Render one column as COPY text values: escaped, with NULL as \\N."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind == "M":
        if isinstance(dtype, pd.DatetimeTZDtype):
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        text = np.datetime_as_string(column.to_numpy("datetime64[us]"), unit="us", timezone="UTC").tolist()
        return [value if value != "NaT" else _COPY_NULL for value in text]
    if dtype.kind == "b":
        return np.where(column.to_numpy(), "t", "f").tolist()
    if dtype.kind in "iu" and not column.hasnans:  # a nullable Int64 column with gaps is handled below
        return list(map(str, column.to_numpy().tolist()))
    if dtype.kind == "f":
        return [repr(value) if value == value else _COPY_NULL for value in column.to_numpy().tolist()]
    text = [
        value if value.__class__ is str else None if value is None or value is pd.NA or value != value else str(value)
        for value in column.to_numpy(dtype=object).tolist()
    ]
    missing = None in text
    joined = "".join(value for value in text if value is not None) if missing else "".join(text)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        text = [value if value is None else value.translate(_COPY_ESCAPES) for value in text]
    if missing:
        text = [_COPY_NULL if value is None else value for value in text]
    return text


def _sqlite_column(column: pd.Series) -> list[Any]:
    """Adapt a column for SQLite as ``_sqlite_value`` does each value; a time column in one vectorised pass."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if not (isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind == "M"):
        return [_sqlite_value(value) for value in column.tolist()]
    if isinstance(dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    # Floored to microseconds, naive UTC, written as str(datetime) writes it (no fraction when it is zero).
    text = np.datetime_as_string(column.to_numpy().astype("datetime64[us]"), unit="us").tolist()
    return [
        None if value == "NaT" else value[:10] + " " + (value[11:19] if value.endswith(".000000") else value[11:])
        for value in text
    ]


def _sqlite_value(value: Any) -> Any:
    """Adapt a DataFrame value for SQLite: pandas times to naive UTC text, missing values to NULL."""
    import pandas as pd

    if value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        # As Django writes it (UTC, microseconds only when there are some), so text comparisons with ORM rows hold.
        value = value.floor("us").to_pydatetime()
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    return _adapt(value)


def _adapt(value: Any) -> Any:
    """Store values the way Django's SQLite backend does, so SQL comparisons with ORM-written rows hold."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return value


def query_frame(
    sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *, columns_as_text: Iterable[str] = ()
) -> pd.DataFrame:
    """Run a SELECT and return its rows as a DataFrame, parsed in C rather than row by row.

    On PostgreSQL the rows leave as CSV through ``COPY (…) TO STDOUT`` and pandas parses
    them; elsewhere they are fetched. Numbers come back as floats, NULL as NaN; columns named
    in ``columns_as_text`` are kept as strings (NULL as None) whatever they look like.
    """
    import io

    import pandas as pd

    text_columns = set(columns_as_text)
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(sql, params)
            return pd.DataFrame(cursor.fetchall(), columns=[c[0] for c in cursor.description])
        buffer = io.BytesIO()
        with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)", params or None) as copy:
            for block in copy:
                buffer.write(block)
    buffer.seek(0)
    frame = pd.read_csv(
        buffer, dtype=dict.fromkeys(text_columns, object), keep_default_na=False, na_values=[""], low_memory=False
    )
    for name in text_columns & set(frame.columns):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def instance_from_row(model: type[ModelT], values: Sequence[Any]) -> ModelT:
    """Build a model instance from a row of its concrete columns, in field order, converted as the ORM would.

    For hot paths that write their SELECT out: the backend's and the fields' converters
    (SQLite's text times, say) run as they do for a queryset.
    """
    from django.db.models.expressions import Col

    fields = model._meta.concrete_fields
    converted = []
    for field, value in zip(fields, values, strict=True):
        expression = Col(model._meta.db_table, field)
        for convert in connection.ops.get_db_converters(expression) + field.get_db_converters(connection):
            value = convert(value, expression, connection)
        converted.append(value)
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


# A set of ids filling less than this share of its id range is read id by id, not as the range.
SPARSE_SHARE = 0.25


def sparse_ids(ids: Iterable[int]) -> list[int] | None:
    """Return the ids, sorted, if they are few for the range they span (the live path's scattered users), else None.

    A chunk of consecutive users is cheapest to read as its id range; a few hundred users
    scattered over a million ids are not: their range is the whole table.
    """
    values = sorted({int(pk) for pk in ids})
    if not values:
        return None
    return values if len(values) < SPARSE_SHARE * (values[-1] - values[0] + 1) else None


def ids_in_sql(column: str, ids: Iterable[int]) -> str:
    """``column IN (1, 2, …)`` for these ids: integers only, so safe to write into the statement on any backend."""
    values = sorted({int(pk) for pk in ids})
    return f"{column} IN ({', '.join(map(str, values))})" if values else "FALSE"
