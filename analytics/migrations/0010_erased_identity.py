import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac

# As analytics.services.suppression computes it; a copy, so this migration keeps working if that code moves.
KEY_SALT = "crossmkt.analytics.erasure.suppression"


def suppress_erased_before(apps, schema_editor):
    """Put everyone erased before the list existed on it, and take their ids out of imported outcomes."""
    ErasureLogEntry = apps.get_model("analytics", "ErasureLogEntry")
    ErasedIdentity = apps.get_model("analytics", "ErasedIdentity")
    ExperimentOutcome = apps.get_model("analytics", "ExperimentOutcome")
    secret = settings.ERASURE_HASH_KEY or None
    for entry in ErasureLogEntry.objects.select_related("user").iterator():
        partner_id = entry.user.home_partner_id
        digest = salted_hmac(
            KEY_SALT, f"{partner_id}:{entry.pseudonymous_id}", secret=secret, algorithm="sha256"
        ).hexdigest()
        ErasedIdentity.objects.get_or_create(
            digest=digest, defaults={"partner_id": partner_id, "erased_at": entry.erased_at}
        )
        ExperimentOutcome.objects.filter(user_ref=entry.pseudonymous_id).update(user_ref=entry.user.external_id)


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0009_demo_models_move_to_demo"),
        ("campaigns", "0009_redemption_request_fingerprint"),
    ]

    operations = [
        migrations.CreateModel(
            name="ErasedIdentity",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("digest", models.CharField(max_length=64, unique=True, verbose_name="hash of partner and id")),
                ("erased_at", models.DateTimeField(verbose_name="erased at")),
                (
                    "partner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="erased_identities",
                        to="campaigns.partner",
                        verbose_name="home partner",
                    ),
                ),
            ],
            options={
                "verbose_name": "erased identity",
                "verbose_name_plural": "erased identities (suppression list)",
                "ordering": ["-erased_at"],
            },
        ),
        migrations.RunPython(suppress_erased_before, migrations.RunPython.noop),
    ]
