"""The database cache, with an increment that counts every call when several processes increment at once."""

import base64
import pickle
from typing import Any

from django.core.cache.backends import db
from django.db import connections, router, transaction
from django.utils.timezone import now as tz_now


class DatabaseCache(db.DatabaseCache):
    """Django's database cache whose ``incr`` locks the row, as Redis's INCR is atomic.

    Django's own ``incr`` reads the value and writes it back, so two server processes increasing
    an API throttle counter at once both write the same number and one request goes uncounted.
    Where the database can lock a row (PostgreSQL) the read and the write happen under the lock;
    elsewhere (SQLite, one machine) Django's increment is used.
    """

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        alias = router.db_for_write(self.cache_model_class)
        connection = connections[alias]
        if not connection.features.has_select_for_update:
            return super().incr(key, delta, version)
        cache_key = self.make_and_validate_key(key, version=version)
        quote_name = connection.ops.quote_name
        table, key_column, value_column = (
            quote_name(self.cache_model_class._meta.db_table),
            quote_name("cache_key"),
            quote_name("value"),
        )
        now = connection.ops.adapt_datetimefield_value(tz_now().replace(microsecond=0))
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {value_column} FROM {table} WHERE {key_column} = %s AND {quote_name('expires')} > %s "
                "FOR UPDATE",
                [cache_key, now],
            )
            row = cursor.fetchone()
            if row is None:
                raise ValueError(f"Key '{key}' not found.")
            value = pickle.loads(base64.b64decode(connection.ops.process_clob(row[0]).encode())) + delta
            encoded = base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")
            cursor.execute(f"UPDATE {table} SET {value_column} = %s WHERE {key_column} = %s", [encoded, cache_key])
        return value
