import secrets

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from crossmkt_site.money import MoneyField

from .campaigns import Campaign, Rule
from .deals import Deal
from .partners import Partner

# Crockford's base32 alphabet: no I, L, O or U, so codes survive being read aloud or retyped.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16  # 80 bits of randomness: unguessable, still short enough to type.


def new_offer_code() -> str:
    """Return a fresh unguessable offer code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class Offer(models.Model):
    """A benefit issued to one user: a coupon, a free-viewing trial, a movie ticket or a membership grant.

    ``sequence`` numbers a user's offers within a campaign from 0; the database allows
    one offer per (campaign, user, sequence) and no sequence at or past ``allowance``
    (the per-user limit in force when it was issued), so a retried issuance cannot
    give a user more than the campaign allows.
    """

    class Status(models.TextChoices):
        ISSUED = "issued", _("Issued")
        DELIVERED = "delivered", _("Delivered")
        REDEEMED = "redeemed", _("Redeemed")
        EXPIRED = "expired", _("Expired")
        REVOKED = "revoked", _("Revoked")

    OPEN_STATUSES = (Status.ISSUED, Status.DELIVERED)

    # Indexes are what issuance pays for per row, so each one here earns its place: a code is
    # looked up by equality (the unique constraint below, without the LIKE index unique=True
    # adds), a campaign's offers by the unique slot's leading column, a user's by (user, status).
    code = models.CharField(_("code"), max_length=32, default=new_offer_code, editable=False)
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="offers", verbose_name=_("campaign"), db_index=False
    )
    rule = models.ForeignKey(
        Rule, on_delete=models.PROTECT, null=True, blank=True, related_name="offers", verbose_name=_("rule")
    )
    user = models.ForeignKey(
        "analytics.EndUser", on_delete=models.PROTECT, related_name="offers", verbose_name=_("user"), db_index=False
    )
    sequence = models.PositiveSmallIntegerField(_("sequence"), default=0)
    allowance = models.PositiveSmallIntegerField(_("allowance"), default=1)
    kind = models.CharField(_("kind"), max_length=32, choices=Rule.OfferKind.choices)
    partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="honoured_offers",
        verbose_name=_("benefit partner"),
    )
    deal = models.ForeignKey(
        Deal, on_delete=models.PROTECT, null=True, blank=True, related_name="offers", verbose_name=_("deal")
    )
    amount_off = MoneyField(_("amount off (CNY)"), null=True, blank=True)
    percent_off = models.DecimalField(_("percent off"), max_digits=5, decimal_places=2, null=True, blank=True)
    min_spend = MoneyField(_("minimum spend (CNY)"), default=0)
    days = models.PositiveSmallIntegerField(_("days"), null=True, blank=True)
    # What the offer holds of the campaign's budget: its face value, reserved at issue.
    cost = MoneyField(_("reserved (CNY)"), default=0)
    # What the offer has cost so far under the report's cost model (a redeemed coupon's discount, a
    # prepaid ticket's code value, an activated trial's settlement price); 0 for an offer never used.
    spent = MoneyField(_("spent (CNY)"), default=0, db_default=0)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.ISSUED)
    issued_at = models.DateTimeField(_("issued at"))
    expires_at = models.DateTimeField(_("expires at"), db_index=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    redeemed_at = models.DateTimeField(_("redeemed at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    # Set by the live path only: when the oldest batch of the user's events it decided on was accepted, so
    # issued_at - touched_at is the event-to-offer latency. Empty for offers of a run or a sweep.
    touched_at = models.DateTimeField(
        _("events accepted at"),
        null=True,
        blank=True,
        help_text=_("Issued by the live path: when the user's events that led to it were accepted."),
    )

    class Meta:
        ordering = ["-issued_at"]
        verbose_name = _("offer")
        verbose_name_plural = _("offers")
        constraints = [
            models.UniqueConstraint(fields=["code"], name="offer_code_unique"),
            models.UniqueConstraint(fields=["campaign", "user", "sequence"], name="one_offer_per_campaign_user_slot"),
            models.CheckConstraint(condition=Q(sequence__lt=F("allowance")), name="offer_within_user_allowance"),
            models.CheckConstraint(
                condition=Q(cost__gte=0)
                & Q(spent__gte=0)
                & Q(min_spend__gte=0)
                & (Q(amount_off__isnull=True) | Q(amount_off__gte=0)),
                name="offer_money_not_negative",
            ),
            models.CheckConstraint(condition=Q(expires_at__gt=F("issued_at")), name="offer_expires_after_issue"),
        ]
        indexes = [
            models.Index(fields=["user", "status"]),
            # Pipeline health's latency histogram reads live offers only: an index-only scan of them.
            models.Index(
                fields=["touched_at", "issued_at"], condition=Q(touched_at__isnull=False), name="offer_live_latency"
            ),
        ]

    def __str__(self) -> str:
        return self.code


class RedemptionEntry(models.Model):
    """One line of the append-only redemption ledger: a redemption or its rollback.

    Entries are never edited or deleted (the database refuses it on PostgreSQL); a
    mistaken redemption is undone by a rollback line that points at it.
    """

    class Kind(models.TextChoices):
        REDEEM = "redeem", _("Redemption")
        ROLLBACK = "rollback", _("Rollback")

    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="ledger", verbose_name=_("offer"))
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="redemptions", verbose_name=_("partner")
    )
    reverses = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reversed_by",
        verbose_name=_("reverses"),
    )
    order_amount = MoneyField(_("order amount (CNY)"), default=0)
    discount = MoneyField(_("discount (CNY)"), default=0)
    idempotency_key = models.CharField(_("idempotency key"), max_length=128, blank=True)
    # A retry with the key must repeat the request; another request under the same key is refused.
    request_fingerprint = models.CharField(
        _("request fingerprint"),
        max_length=64,
        blank=True,
        help_text=_("SHA-256 of the request that used the idempotency key (empty for entries made before it existed)."),
    )
    created_at = models.DateTimeField(_("recorded at"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("redemption ledger entry")
        verbose_name_plural = _("redemption ledger")
        constraints = [
            models.CheckConstraint(
                condition=Q(order_amount__gte=0) & Q(discount__gte=0), name="ledger_money_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(kind="redeem", reverses__isnull=True) | Q(kind="rollback", reverses__isnull=False),
                name="ledger_rollback_points_at_redemption",
            ),
            models.UniqueConstraint(
                fields=["partner", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="ledger_idempotency_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.offer_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("redemption ledger entries are append-only; record a rollback instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("redemption ledger entries are append-only; record a rollback instead")
