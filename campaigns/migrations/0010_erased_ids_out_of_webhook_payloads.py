from django.db import migrations


def pseudonymise_payloads_of_erased_users(apps, schema_editor):
    """Put each erased user's random id for the id partners knew in stored issuance and grant payloads.

    Users erased before erasure rewrote payloads itself; the same rule as
    ``campaigns.services.erasure.webhook_payloads_pseudonymise``: only items of the user's own
    offers (by code) and grants (by grant id) change.
    """
    ErasureLogEntry = apps.get_model("analytics", "ErasureLogEntry")
    Offer = apps.get_model("campaigns", "Offer")
    DealGrant = apps.get_model("campaigns", "DealGrant")
    WebhookDelivery = apps.get_model("campaigns", "WebhookDelivery")
    erased = {
        user_id: (old_id, pseudonym)
        for user_id, old_id, pseudonym in ErasureLogEntry.objects.values_list(
            "user_id", "pseudonymous_id", "user__external_id"
        )
    }
    if not erased:
        return
    by_code = {
        code: erased[user_id]
        for code, user_id in Offer.objects.filter(user_id__in=erased).values_list("code", "user_id")
    }
    by_grant = {
        pk: erased[user_id] for pk, user_id in DealGrant.objects.filter(user_id__in=erased).values_list("pk", "user_id")
    }
    changed = []
    deliveries = WebhookDelivery.objects.filter(event_type__in=["offers.issued", "deal.granted"]).order_by("pk")
    for delivery in deliveries.iterator(chunk_size=200):
        payload = delivery.payload if isinstance(delivery.payload, dict) else {}
        items, key, ids = (
            (payload.get("offers"), "code", by_code)
            if delivery.event_type == "offers.issued"
            else (payload.get("grants"), "grant", by_grant)
        )
        dirty = False
        for item in items or []:
            if not isinstance(item, dict) or item.get(key) not in ids:
                continue
            old_id, pseudonym = ids[item[key]]
            if item.get("user_id") == old_id:
                item["user_id"] = pseudonym
                dirty = True
        if dirty:
            changed.append(delivery)
    WebhookDelivery.objects.bulk_update(changed, ["payload"], batch_size=200)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0009_redemption_request_fingerprint"),
        ("analytics", "0010_erased_identity"),
    ]

    operations = [
        migrations.RunPython(pseudonymise_payloads_of_erased_users, migrations.RunPython.noop),
    ]
