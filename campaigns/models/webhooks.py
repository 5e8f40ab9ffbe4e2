import uuid

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .partners import Partner

# Attempts before a delivery that keeps failing transiently is given up; with the back-off
# in services/webhooks.py the last one comes two to four hours after the first.
DEFAULT_MAX_ATTEMPTS = 10


class WebhookDelivery(models.Model):
    """One signed event for one partner, kept until it is delivered or given up.

    The row is written in the same transaction as the change it reports (an outbox), so an
    event exists exactly when its change was committed. ``event_id`` is the same on every
    attempt, so a partner that receives an event twice can tell it is the same one.
    """

    class Event(models.TextChoices):
        OFFERS_ISSUED = "offers.issued", _("Offers issued")
        OFFER_REDEEMED = "offer.redeemed", _("Offer redeemed")
        OFFER_REDEMPTION_ROLLED_BACK = "offer.redemption_rolled_back", _("Redemption rolled back")
        OFFER_REVOKED = "offer.revoked", _("Offer revoked")
        DEAL_GRANTED = "deal.granted", _("Deal benefit granted")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="webhook_deliveries", verbose_name=_("partner")
    )
    event_id = models.UUIDField(_("event id"), default=uuid.uuid4, unique=True, editable=False)
    event_type = models.CharField(_("event"), max_length=40, choices=Event.choices, db_index=True)
    payload = models.JSONField(_("payload"), default=dict)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    attempt_limit = models.PositiveSmallIntegerField(
        _("attempt limit"),
        default=DEFAULT_MAX_ATTEMPTS,
        help_text=_("Raised when a manager sends a failed event again."),
    )
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="delivered") | Q(delivered_at__isnull=False),
                name="webhook_delivered_has_time",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt at delivering a webhook: when, what came back, how long it took."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", _("Delivered")
        RETRY = "retry", _("Failed, will retry")
        FAILED = "failed", _("Failed for good")

    delivery = models.ForeignKey(
        WebhookDelivery,
        on_delete=models.CASCADE,
        related_name="attempt_log",
        verbose_name=_("delivery"),
    )
    number = models.PositiveSmallIntegerField(_("attempt"))
    attempted_at = models.DateTimeField(_("attempted at"))
    status_code = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"))
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)

    class Meta:
        ordering = ["-attempted_at"]
        verbose_name = _("webhook attempt")
        verbose_name_plural = _("webhook attempts")
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_webhook_attempt_per_number")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"
