"""Make the redemption ledger append-only in the database itself (PostgreSQL)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION campaigns_ledger_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the redemption ledger is append-only; record a rollback instead'
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER campaigns_ledger_append_only
    BEFORE UPDATE OR DELETE ON campaigns_redemptionentry
    FOR EACH ROW EXECUTE FUNCTION campaigns_ledger_refuse_change();
"""

DROP = """
DROP TRIGGER IF EXISTS campaigns_ledger_append_only ON campaigns_redemptionentry;
DROP FUNCTION IF EXISTS campaigns_ledger_refuse_change();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0001_initial")]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]
