"""Imported outcomes name the person their campaign's partner means, not whoever has the id elsewhere.

Adds ``ExperimentOutcome.user`` and fills it for campaigns with an owner: the owner's consented
link of that id first, else the owner's own user of that id (as ``analytics.services.identity``
resolves). Outcomes of campaigns without an owner, and ids their owner does not know, keep a
null user: they are still reported, and uplift training leaves them out.
"""

import django.db.models.deletion
from django.db import migrations, models


def attach_users(apps, schema_editor):
    ExperimentOutcome = apps.get_model("analytics", "ExperimentOutcome")
    EndUser = apps.get_model("analytics", "EndUser")
    UserLink = apps.get_model("analytics", "UserLink")
    Campaign = apps.get_model("campaigns", "Campaign")
    owned = Campaign.objects.filter(owner__isnull=False, imported_outcomes__isnull=False).distinct()
    for campaign_id, owner_id in owned.values_list("pk", "owner_id"):
        refs = list(ExperimentOutcome.objects.filter(campaign_id=campaign_id).values_list("user_ref", flat=True))
        for start in range(0, len(refs), 5_000):
            chunk = refs[start : start + 5_000]
            known = dict(
                EndUser.objects.filter(
                    home_partner_id=owner_id, external_id__in=chunk, erased_at__isnull=True
                ).values_list("external_id", "pk")
            )
            known.update(
                UserLink.objects.filter(
                    partner_id=owner_id,
                    external_id__in=chunk,
                    user__data_sharing_consent=True,
                    user__erased_at__isnull=True,
                ).values_list("external_id", "user_id")
            )
            for ref, user_id in known.items():
                ExperimentOutcome.objects.filter(campaign_id=campaign_id, user_ref=ref).update(user_id=user_id)


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0015_model_run_quality_gate_and_last_scoring"),
        ("campaigns", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="experimentoutcome",
            name="user",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="experiment_outcomes",
                to="analytics.enduser",
                verbose_name="user",
            ),
        ),
        migrations.RunPython(attach_users, migrations.RunPython.noop),
    ]
