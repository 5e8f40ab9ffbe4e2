from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField

from crossmkt_site.money import MoneyField

from .catalog import Course
from .partners import Partner


class Deal(models.Model):
    """A membership-reciprocity or co-marketing contract between two partners.

    A trigger on the source partner's side (buying a course of a set, or spending at
    least a threshold) grants a benefit on the target partner's side; every grant
    accrues the per-grant settlement price, and revenue is split by ``revenue_share``.
    """

    class Trigger(models.TextChoices):
        COURSE_PURCHASE = "course_purchase", _("Purchase of a course in the set")
        SPEND_AT_LEAST = "spend_at_least", _("Spend at least an amount")
        MEMBERSHIP_START = "membership_start", _("Start of a membership")

    class Benefit(models.TextChoices):
        VIDEO_MEMBERSHIP = "video_membership", _("Video membership")
        FREE_VIEWING = "free_viewing", _("Free-viewing trial")
        MOVIE_TICKET = "movie_ticket", _("Movie ticket")
        COURSE_COUPON = "course_coupon", _("Course coupon")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ACTIVE = "active", _("Active")
        PAUSED = "paused", _("Paused")
        ENDED = "ended", _("Ended")

    slug = models.SlugField(_("slug"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200)
    source_partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="deals_as_source",
        verbose_name=_("source partner"),
        help_text=_("Where the trigger happens."),
    )
    target_partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="deals_as_target",
        verbose_name=_("target partner"),
        help_text=_("Who provides the benefit."),
    )
    trigger = models.CharField(_("trigger"), max_length=32, choices=Trigger.choices)
    trigger_courses = models.ManyToManyField(
        Course, blank=True, related_name="triggering_deals", verbose_name=_("trigger courses")
    )
    trigger_min_spend = MoneyField(_("minimum spend (CNY)"), null=True, blank=True)
    benefit = models.CharField(_("benefit"), max_length=32, choices=Benefit.choices)
    benefit_days = models.PositiveIntegerField(_("benefit days"), null=True, blank=True)
    benefit_value = MoneyField(_("benefit face value (CNY)"), default=0)
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    timezone = TimeZoneField(
        _("time zone"), default="Asia/Shanghai", help_text=_("Settlement months are counted in this zone.")
    )
    max_grants = models.PositiveIntegerField(_("grant cap"), null=True, blank=True)
    max_amount = MoneyField(_("money cap (CNY)"), null=True, blank=True)
    settlement_price = MoneyField(_("settlement price per grant (CNY)"), default=0)
    revenue_share = models.DecimalField(
        _("revenue share back to source"),
        max_digits=5,
        decimal_places=4,
        default=0,
        help_text=_(
            "Fraction, 0 to 1, of what granted users spend at the target partner from their grant on that the "
            "target partner pays back to the source partner in each month's settlement."
        ),
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    granted_count = models.PositiveIntegerField(_("grants so far"), default=0, editable=False)
    granted_amount = MoneyField(_("granted amount so far (CNY)"), default=0, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    history = HistoricalRecords(m2m_fields=[trigger_courses])

    class Meta:
        ordering = ["-starts_at"]
        verbose_name = _("deal")
        verbose_name_plural = _("deals")
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="deal_ends_after_start"),
            models.CheckConstraint(condition=~Q(source_partner=F("target_partner")), name="deal_between_two_partners"),
            models.CheckConstraint(
                condition=Q(settlement_price__gte=0)
                & Q(benefit_value__gte=0)
                & Q(granted_amount__gte=0)
                & (Q(trigger_min_spend__isnull=True) | Q(trigger_min_spend__gte=0))
                & (Q(max_amount__isnull=True) | Q(max_amount__gte=0)),
                name="deal_money_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(revenue_share__gte=0) & Q(revenue_share__lte=1), name="deal_revenue_share_is_fraction"
            ),
            models.CheckConstraint(
                condition=Q(max_grants__isnull=True) | Q(granted_count__lte=F("max_grants")),
                name="deal_grants_within_cap",
            ),
            models.CheckConstraint(
                condition=Q(max_amount__isnull=True) | Q(granted_amount__lte=F("max_amount")),
                name="deal_amount_within_cap",
            ),
            models.CheckConstraint(
                condition=~Q(trigger="spend_at_least") | Q(trigger_min_spend__isnull=False),
                name="deal_spend_trigger_has_threshold",
            ),
        ]

    def __str__(self) -> str:
        return self.name
