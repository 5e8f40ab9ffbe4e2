import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


def new_webhook_secret() -> str:
    """Return a fresh random secret for signing a partner's webhooks."""
    return secrets.token_urlsafe(32)


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
    webhook_url = models.URLField(
        _("webhook URL"), blank=True, help_text=_("Where we POST signed event notifications.")
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
