"""Which user an id a partner sends stands for: the set-based resolution events go through.

The order is ``identity``'s (its module docstring says why): the partner's consented link, its
own user, a consenting person whose alliance id it is (a link is made), else a new user of its own.
"""

import numpy as np
import pandas as pd
from django.db import connection

from crossmkt_site.bulk import bulk_insert_frame

from ..models import UserLink

_LINKED = """
    SELECT b.partner_id, b.external_id, l.user_id FROM identity_batch b
    JOIN analytics_userlink l ON l.partner_id = b.partner_id AND l.external_id = b.external_id
    JOIN analytics_enduser u ON u.id = l.user_id
    WHERE u.data_sharing_consent AND u.erased_at IS NULL
"""
_OWN = """
    SELECT b.partner_id, b.external_id, u.id FROM identity_batch b
    JOIN analytics_enduser u ON u.home_partner_id = b.partner_id AND u.external_id = b.external_id
"""
_BY_ALLIANCE_ID = """
    SELECT b.partner_id, b.external_id, u.id FROM identity_batch b
    JOIN analytics_enduser u ON u.alliance_id = b.external_id
    WHERE u.data_sharing_consent AND u.erased_at IS NULL AND u.home_partner_id <> b.partner_id
      AND NOT EXISTS (SELECT 1 FROM analytics_userlink l
                      WHERE l.partner_id = b.partner_id AND (l.user_id = u.id OR l.external_id = b.external_id))
"""


def _fetch(cursor, sql: str, params=()) -> dict[tuple[int, str], int]:
    cursor.execute(sql, params)
    return {(int(partner), external): int(user) for partner, external, user in cursor.fetchall()}


def user_ids_resolve(cursor, partner_ids: np.ndarray, external_ids: np.ndarray, *, now) -> tuple[np.ndarray, int]:
    """Return the user id each (partner, id) pair stands for, creating links and users as needed; and users created.

    Set-based: one staging table and a few joins per batch, whatever its size.
    """
    pairs = pd.DataFrame({"partner_id": np.asarray(partner_ids, dtype="int64"), "external_id": external_ids})
    distinct = pairs.drop_duplicates()
    cursor.execute("DROP TABLE IF EXISTS identity_batch")
    cursor.execute("CREATE TEMPORARY TABLE identity_batch (partner_id bigint, external_id varchar(64))")
    bulk_insert_frame(cursor, "identity_batch", distinct)
    found = _fetch(cursor, _LINKED)
    for key, user in _fetch(cursor, _OWN).items():
        found.setdefault(key, user)
    matched = {key: user for key, user in _fetch(cursor, _BY_ALLIANCE_ID).items() if key not in found}
    if matched:
        stamp = connection.ops.adapt_datetimefield_value(now)
        for (partner, external), user in matched.items():
            # One statement per new link: alliance matches are rare next to the rows of a batch.
            cursor.execute(
                "INSERT INTO analytics_userlink (user_id, partner_id, external_id, via, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [user, partner, external, UserLink.Via.ALLIANCE_ID, stamp],
            )
        found.update(_fetch(cursor, _LINKED))
    created = 0
    missing = [key for key in distinct.itertuples(index=False, name=None) if key not in found]
    if missing:
        cursor.execute("DROP TABLE IF EXISTS identity_new")
        cursor.execute("CREATE TEMPORARY TABLE identity_new (partner_id bigint, external_id varchar(64))")
        bulk_insert_frame(cursor, "identity_new", pd.DataFrame(missing, columns=["partner_id", "external_id"]))
        # Another request may be creating some of them right now: theirs stand, ours are skipped.
        cursor.execute(
            """INSERT INTO analytics_enduser (external_id, home_partner_id, education, occupation, gender,
                   acquisition_channel, marketing_consent, data_sharing_consent, created_at)
               SELECT external_id, partner_id, '', '', '', '', FALSE, FALSE, %s FROM identity_new
               WHERE TRUE ON CONFLICT (home_partner_id, external_id) DO NOTHING
               RETURNING home_partner_id, external_id, id""",
            [connection.ops.adapt_datetimefield_value(now)],
        )
        inserted = {(int(partner), external): int(user) for partner, external, user in cursor.fetchall()}
        created = len(inserted)
        found.update(inserted)
        cursor.execute("DROP TABLE identity_new")
        if created < len(missing):
            for key, user in _fetch(cursor, _OWN).items():
                found.setdefault(key, user)
    cursor.execute("DROP TABLE identity_batch")
    keys = zip(pairs["partner_id"].tolist(), pairs["external_id"].tolist(), strict=True)
    return np.fromiter((found[key] for key in keys), dtype="int64", count=len(pairs)), created
