"""Partners and their API keys: the one place that creates, issues, revokes and checks keys."""

import hashlib
import hmac
import secrets

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone, translation

from crossmkt_site.bulk import instance_from_row
from crossmkt_site.errors import ApplicationError

from ..models import Partner, PartnerApiKey

KEY_SCHEME = "cmk"


def _hash_secret(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe here, unlike for passwords,
    # and keeps the per-request check cheap.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _columns(model, alias: str) -> str:
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def _active_key_with_partner(*, prefix: str) -> PartnerApiKey | None:
    """Return the active key with this prefix and its (active) partner, loaded in one statement.

    Every API request passes here, so the statement is written out rather than built by
    the ORM each time (that costs more than running it); the instances are the ORM's own.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_columns(PartnerApiKey, 'k')}, {_columns(Partner, 'p')} FROM {PartnerApiKey._meta.db_table} k "
            f"JOIN {Partner._meta.db_table} p ON p.id = k.partner_id "
            "WHERE k.prefix = %s AND k.revoked_at IS NULL AND p.is_active ORDER BY k.created_at DESC LIMIT 1",
            [prefix],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(PartnerApiKey._meta.concrete_fields)
    key = instance_from_row(PartnerApiKey, row[:split])
    key.partner = instance_from_row(Partner, row[split:])
    return key


def partner_create(*, slug: str, kind: str, name: str, webhook_url: str = "") -> Partner:
    """Register a partner; refuse a slug that is taken, a kind we do not know or a webhook URL we would not send to."""
    if kind not in Partner.Kind.values:
        raise ApplicationError(f"unknown kind {kind!r}; use one of {', '.join(Partner.Kind.values)}", field="kind")
    if Partner.objects.filter(slug=slug).exists():
        raise ApplicationError(f"partner {slug!r} already exists", code="exists", field="slug")
    partner = Partner(slug=slug, kind=kind, name=name, webhook_url=webhook_url)
    # Commands and the API speak English; the admin shows the same messages in the manager's language.
    with translation.override("en"):
        try:
            partner.full_clean()
        except ValidationError as error:
            field, messages = next(iter(error.message_dict.items()))
            raise ApplicationError(f"{field}: {' '.join(messages)}", field=field) from None
    partner.save()
    return partner


@transaction.atomic
def partner_api_key_create(*, partner: Partner, name: str = "") -> tuple[PartnerApiKey, str]:
    """Issue a new API key; return it with the raw key, which is never stored and shown only now."""
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    key = PartnerApiKey.objects.create(partner=partner, name=name, prefix=prefix, hashed_key=_hash_secret(raw_key))
    return key, raw_key


@transaction.atomic
def partner_api_key_revoke(*, partner: Partner, prefix: str) -> PartnerApiKey:
    """Revoke one of a partner's keys by its prefix; revoking twice keeps the first time."""
    key = PartnerApiKey.objects.select_for_update().filter(partner=partner, prefix=prefix).first()
    if key is None:
        raise ApplicationError(
            f"partner {partner.slug!r} has no key with prefix {prefix!r}",
            code="not_found",
            field="prefix",
            status=404,
        )
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def partner_api_key_authenticate(*, raw_key: str) -> PartnerApiKey | None:
    """Return the active key matching a raw key (recording its use), or None."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    key = _active_key_with_partner(prefix=parts[1])
    if key is None or not hmac.compare_digest(key.hashed_key, _hash_secret(raw_key)):
        return None
    now = timezone.now()
    # Recording every request would make each call a write; a minute's precision is plenty.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        PartnerApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
