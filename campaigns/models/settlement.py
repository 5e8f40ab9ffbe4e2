from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Round
from django.db.models.lookups import Exact
from django.utils.translation import gettext_lazy as _

from crossmkt_site.money import MoneyField

from .deals import Deal
from .partners import Partner


def _same_fen(left, right) -> Q:
    # Compared in whole fen: SQLite keeps decimals as binary floating point, where a
    # difference of two amounts need not equal the stored amount to the last bit.
    return Q(Exact(Round(left * 100), Round(right * 100)))


class Direction(models.TextChoices):
    """Who pays whom on a settlement line or balance."""

    SOURCE_TO_TARGET = "source_to_target", _("Source partner pays target partner")
    TARGET_TO_SOURCE = "target_to_source", _("Target partner pays source partner")


class SettlementStatement(models.Model):
    """What the two partners of a deal owe each other for one calendar month, frozen once issued.

    The month is read in the deal's time zone, and its bounds, the partners and the
    revenue share are copied here when the statement is issued, so later edits of the
    deal cannot change an issued statement. The totals are the figures as issued; a
    correction found later is a new ``SettlementLine`` pointing at the line it corrects,
    never an edit. ``net_amount`` is what remains after netting the two directions, and
    ``net_direction`` says who pays it; the database checks that it is the difference.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft (computed, not issued)")
        ISSUED = "issued", _("Issued")

    deal = models.ForeignKey(
        Deal, on_delete=models.PROTECT, related_name="settlement_statements", verbose_name=_("deal")
    )
    period = models.DateField(_("period"), help_text=_("The first day of the settled month."))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT)
    timezone = models.CharField(_("time zone"), max_length=64, help_text=_("The zone the month was counted in."))
    period_start = models.DateTimeField(_("period starts at"))
    period_end = models.DateTimeField(_("period ends before"))
    source_partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="settlements_as_source",
        verbose_name=_("source partner"),
    )
    target_partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="settlements_as_target",
        verbose_name=_("target partner"),
    )
    grants_count = models.PositiveIntegerField(_("confirmed grants"), default=0)
    grants_amount = MoneyField(
        _("owed for grants (CNY)"), default=0, help_text=_("Paid by the source partner to the target.")
    )
    revenue_base = MoneyField(
        _("revenue of granted users (CNY)"),
        default=0,
        help_text=_("What granted users spent at the target partner in the month, from their grant on."),
    )
    revenue_share = models.DecimalField(_("revenue share"), max_digits=5, decimal_places=4, default=0)
    revenue_share_amount = MoneyField(
        _("owed as revenue share (CNY)"),
        default=0,
        help_text=_("Paid by the target partner back to the source."),
    )
    redemptions = models.IntegerField(
        _("net redemptions"),
        default=0,
        help_text=_("Redemptions less rollbacks of the deal's offers in the month; shown for reference, not charged."),
    )
    net_amount = MoneyField(_("balance (CNY)"), default=0)
    net_direction = models.CharField(
        _("balance paid"), max_length=32, choices=Direction.choices, default=Direction.SOURCE_TO_TARGET
    )
    issued_at = models.DateTimeField(_("issued at"), null=True, blank=True)
    issued_by = models.CharField(_("issued by"), max_length=150, blank=True)

    class Meta:
        ordering = ["-period", "deal"]
        verbose_name = _("settlement statement")
        verbose_name_plural = _("settlement statements")
        constraints = [
            models.UniqueConstraint(fields=["deal", "period"], name="one_settlement_per_deal_period"),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="settlement_period_ends_after_start"
            ),
            models.CheckConstraint(
                condition=~Q(status="issued") | Q(issued_at__isnull=False), name="settlement_issued_has_time"
            ),
            models.CheckConstraint(
                condition=Q(grants_amount__gte=0)
                & Q(revenue_base__gte=0)
                & Q(revenue_share_amount__gte=0)
                & Q(net_amount__gte=0),
                name="settlement_money_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(revenue_share__gte=0) & Q(revenue_share__lte=1),
                name="settlement_revenue_share_is_fraction",
            ),
            models.CheckConstraint(
                condition=(
                    Q(net_direction="source_to_target")
                    & _same_fen(F("net_amount"), F("grants_amount") - F("revenue_share_amount"))
                )
                | (
                    Q(net_direction="target_to_source")
                    & _same_fen(F("net_amount"), F("revenue_share_amount") - F("grants_amount"))
                ),
                name="settlement_net_is_the_difference",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.deal_id} {self.period:%Y-%m} ({self.status})"

    def save(self, *args, **kwargs):
        if not self._state.adding and type(self).objects.filter(pk=self.pk, status=self.Status.ISSUED).exists():
            raise ValueError("an issued settlement statement is frozen; book a correction line instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.status == self.Status.ISSUED:
            raise ValueError("an issued settlement statement is frozen; book a correction line instead")
        return super().delete(*args, **kwargs)

    @property
    def period_label(self) -> str:
        return f"{self.period:%Y-%m}"


class SettlementLine(models.Model):
    """One line of a settlement statement: grants at a price, a revenue share, or a correction.

    For a grants line ``quantity`` is the number of grants and ``unit_amount`` the price
    per grant; for a revenue-share line ``quantity`` is the revenue base in CNY and
    ``unit_amount`` the share. ``amount`` is always in CNY, paid in ``direction``. A
    correction carries the change (negative when it takes money back) in the direction
    of the line it ``corrects``. Lines are append-only, like the redemption ledger.
    """

    class Kind(models.TextChoices):
        GRANTS = "grants", _("Grants at the settlement price")
        REVENUE_SHARE = "revenue_share", _("Revenue share")
        CORRECTION = "correction", _("Correction")

    statement = models.ForeignKey(
        SettlementStatement,
        on_delete=models.PROTECT,
        related_name="lines",
        verbose_name=_("statement"),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    description = models.CharField(_("description"), max_length=300)
    quantity = models.DecimalField(_("quantity"), max_digits=16, decimal_places=2)
    unit_amount = models.DecimalField(_("unit amount"), max_digits=14, decimal_places=4)
    amount = MoneyField(_("amount (CNY)"))
    direction = models.CharField(_("paid"), max_length=32, choices=Direction.choices)
    corrects = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="corrections",
        verbose_name=_("corrects"),
    )
    recorded_at = models.DateTimeField(_("recorded at"))

    class Meta:
        ordering = ["statement", "pk"]
        verbose_name = _("settlement line")
        verbose_name_plural = _("settlement lines")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="correction") | (Q(amount__gte=0) & Q(quantity__gte=0)),
                name="settlement_line_not_negative_unless_correction",
            ),
            models.CheckConstraint(
                condition=Q(kind="correction", corrects__isnull=False)
                | (~Q(kind="correction") & Q(corrects__isnull=True)),
                name="settlement_correction_points_at_a_line",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.amount}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("settlement lines are append-only; book a correction line instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("settlement lines are append-only; book a correction line instead")
