import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crossmkt_site.outbound_urls import Destination, OutboundURLRefused, outbound_url_check


def new_webhook_secret() -> str:
    """Return a fresh random secret for signing a partner's webhooks."""
    return secrets.token_urlsafe(32)


def webhook_destination(url: str) -> Destination:
    """Check a webhook URL under the current settings and resolve its host once; raise OutboundURLRefused if refused.

    ``WEBHOOK_ALLOW_HTTP`` lets plain http through (local settings, never production);
    ``WEBHOOK_ALLOWED_NETWORKS`` lists networks that may be reached although not public.
    """
    return outbound_url_check(
        url, allow_http=settings.WEBHOOK_ALLOW_HTTP, allowed_networks=settings.WEBHOOK_ALLOWED_NETWORKS
    )


_url_syntax = URLValidator(schemes=["http", "https"])


def validate_webhook_url(value: str) -> None:
    """Refuse a webhook URL we would not send to, saying why in the language the message is shown in."""
    try:
        webhook_destination(value)
    except OutboundURLRefused as refused:
        params = {name: _(text) if name == "kind" else text for name, text in refused.params.items()}
        raise ValidationError(_(refused.template), code=refused.code, params=params) from None
    _url_syntax(value)


class WebhookURLField(models.URLField):
    """A URL a partner's webhooks may go to: https, no credentials, public addresses only (see validate_webhook_url)."""

    default_validators = [validate_webhook_url]


class Partner(models.Model):
    """A platform we run cross-marketing with: ourselves, video platforms, cinemas, studios."""

    class Kind(models.TextChoices):
        KNOWLEDGE = "knowledge", _("Knowledge platform")
        VIDEO = "video", _("Video platform")
        CINEMA = "cinema", _("Cinema chain")
        STUDIO = "studio", _("Film studio")

    slug = models.SlugField(_("slug"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    contact_email = models.EmailField(_("contact e-mail"), blank=True)
    webhook_url = WebhookURLField(
        _("webhook URL"),
        blank=True,
        help_text=_("Where we POST signed event notifications: an https URL on the public internet."),
    )
    webhook_secret = models.CharField(
        _("webhook secret"),
        max_length=128,
        default=new_webhook_secret,
        help_text=_("Shared secret for the HMAC-SHA256 signature of webhooks."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]
        verbose_name = _("partner")
        verbose_name_plural = _("partners")

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class PartnerApiKey(models.Model):
    """One API key of a partner; only a SHA-256 hash of the secret part is stored."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="api_keys", verbose_name=_("partner"))
    name = models.CharField(_("name"), max_length=100, blank=True)
    prefix = models.CharField(
        _("prefix"), max_length=16, unique=True, help_text=_("Public part of the key, shown to tell keys apart.")
    )
    hashed_key = models.CharField(_("hashed key"), max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        ordering = ["partner", "-created_at"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.partner.slug}:{self.prefix}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
