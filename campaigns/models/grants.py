from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from crossmkt_site.money import MoneyField

from .deals import Deal
from .webhooks import WebhookDelivery


class DealGrant(models.Model):
    """A deal's benefit granted to one user, as a saga: reserved, then confirmed or compensated.

    A grant is reserved under the deal's caps, then confirmed when the target partner has
    been told (its webhook delivered, or at once for a partner that pulls grants through
    the API), or compensated, giving its place and amount back to the caps, when telling
    the partner failed for good. The database allows one grant per deal and user, so a
    compensated grant is final for that user.
    """

    class Status(models.TextChoices):
        RESERVED = "reserved", _("Reserved")
        CONFIRMED = "confirmed", _("Confirmed")
        COMPENSATED = "compensated", _("Compensated")

    deal = models.ForeignKey(Deal, on_delete=models.PROTECT, related_name="grants", verbose_name=_("deal"))
    user = models.ForeignKey(
        "analytics.EndUser", on_delete=models.PROTECT, related_name="deal_grants", verbose_name=_("user")
    )
    trigger_event = models.ForeignKey(
        "analytics.BehaviorEvent",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deal_grants",
        verbose_name=_("triggering event"),
        help_text=_("Cleared if the user's events are erased; the time stays."),
    )
    triggered_at = models.DateTimeField(_("triggered at"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.RESERVED)
    amount = MoneyField(_("settlement amount (CNY)"))
    delivery = models.ForeignKey(
        WebhookDelivery,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="deal_grants",
        verbose_name=_("confirming webhook"),
    )
    reserved_at = models.DateTimeField(_("reserved at"))
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)
    compensated_at = models.DateTimeField(_("compensated at"), null=True, blank=True)
    compensation_reason = models.TextField(_("why compensated"), blank=True)

    class Meta:
        ordering = ["-reserved_at"]
        verbose_name = _("deal grant")
        verbose_name_plural = _("deal grants")
        constraints = [
            models.UniqueConstraint(fields=["deal", "user"], name="one_grant_per_deal_user"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="deal_grant_amount_not_negative"),
            models.CheckConstraint(
                condition=~Q(status="confirmed") | Q(confirmed_at__isnull=False),
                name="deal_grant_confirmed_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status="compensated") | Q(compensated_at__isnull=False),
                name="deal_grant_compensated_has_time",
            ),
        ]
        indexes = [models.Index(fields=["deal", "status"])]

    def __str__(self) -> str:
        return f"{self.deal_id}/{self.user_id}: {self.status}"
