"""Writing many rows at once: COPY on PostgreSQL, executemany elsewhere."""

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from django.db import connection


def bulk_insert(cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
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
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", [tuple(map(_adapt, row)) for row in rows])


def _adapt(value):
    """Store values the way Django's SQLite backend does, so SQL comparisons with ORM-written rows hold."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return value


def query_frame(sql: str, params: Sequence = (), *, columns_as_text: Iterable[str] = ()):
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
    header = buffer.readline().decode().rstrip("\r\n").split(",")
    buffer.seek(0)
    frame = pd.read_csv(buffer, dtype={name: object for name in header if name in text_columns},
                        keep_default_na=False, na_values=[""], low_memory=False)
    for name in text_columns & set(frame.columns):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame
