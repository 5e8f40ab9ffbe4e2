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
