"""Move existing data to identities per partner, losing nothing.

Before identities were per partner, a user id was global: an event a partner sent for an id
another partner had brought in was stored on that other partner's user. Now:

- where the user consented to data sharing, the sender's use becomes a ``UserLink`` (the
  sender's id for the person is the id it sent), and the events stay with the person;
- where the user did not consent, the sender gets a user of its own with the same id (no
  consents, as any user first seen in events), and the events (and reported conversions) it
  sent for that id move to that user. Offers, scores and the imported per-user rows stay
  with the home partner's user;
- erased users are left as they are (their events are already gone).

Moving events makes the stored features of both sides stale: when anything moved, stored
features are deleted, so the next ``build_features`` is a full build. The migration prints what
it did. It cannot be reversed: the same id may now stand for several people.
"""

from django.db import migrations
from django.utils import timezone

# Senders' (partner, user) pairs where the sender is not the user's home partner.
_FOREIGN_PAIRS = """
    SELECT DISTINCT e.partner_id, e.user_id FROM {table} e JOIN analytics_enduser u ON u.id = e.user_id
    WHERE e.partner_id <> u.home_partner_id AND u.erased_at IS NULL AND {consent}
"""


def _pairs(consent: str) -> str:
    return " UNION ".join(
        _FOREIGN_PAIRS.format(table=table, consent=consent)
        for table in ("analytics_behaviorevent", "analytics_conversion")
    )


def _move_rows(cursor, table: str) -> int:
    cursor.execute(
        f"""UPDATE {table} SET user_id = (
                SELECT n.id FROM analytics_enduser n JOIN analytics_enduser o ON n.external_id = o.external_id
                WHERE o.id = {table}.user_id AND n.home_partner_id = {table}.partner_id)
            WHERE EXISTS (
                SELECT 1 FROM analytics_enduser o WHERE o.id = {table}.user_id
                AND o.home_partner_id <> {table}.partner_id AND NOT o.data_sharing_consent AND o.erased_at IS NULL)"""
    )
    return cursor.rowcount


def forward(apps, schema_editor):
    connection = schema_editor.connection
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO analytics_userlink (user_id, partner_id, external_id, via, created_at)
                SELECT p.user_id, p.partner_id, u.external_id, 'migration', %s
                FROM ({_pairs("u.data_sharing_consent")}) p JOIN analytics_enduser u ON u.id = p.user_id""",
            [now],
        )
        links = cursor.rowcount
        cursor.execute(
            f"""INSERT INTO analytics_enduser (external_id, home_partner_id, education, occupation, gender,
                    acquisition_channel, marketing_consent, data_sharing_consent, created_at)
                SELECT DISTINCT u.external_id, p.partner_id, '', '', '', '', FALSE, FALSE, %s
                FROM ({_pairs("NOT u.data_sharing_consent")}) p JOIN analytics_enduser u ON u.id = p.user_id""",
            [now],
        )
        users = cursor.rowcount
        events = _move_rows(cursor, "analytics_behaviorevent")
        conversions = _move_rows(cursor, "analytics_conversion")
        if events or conversions:
            cursor.execute("DELETE FROM analytics_userfeatures")
    if links or users:
        print(
            f"\n  identity per partner: {links} consented cross-partner uses became links; {users} users created "
            f"for partners that sent events without consent, {events} events and {conversions} conversions moved "
            "to them" + ("; stored features deleted (the next build_features is full)" if events else "")
        )


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0013_identity_per_partner"),
        ("campaigns", "0010_erased_ids_out_of_webhook_payloads"),
    ]

    operations = [migrations.RunPython(forward, elidable=False)]
