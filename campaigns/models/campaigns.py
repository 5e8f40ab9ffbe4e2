from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField

from crossmkt_site.money import MoneyField

from .catalog import Bundle, Course, Film
from .deals import Deal
from .partners import Partner


class CampaignQuerySet(models.QuerySet):
    def running_at(self, moment):
        """Return campaigns that are running and whose window contains the moment."""
        return self.filter(status=Campaign.Status.RUNNING, starts_at__lte=moment, ends_at__gt=moment)

    def visible_to(self, partner: Partner):
        """Return campaigns a partner owns or takes part in."""
        return self.filter(Q(owner=partner) | Q(partners=partner)).distinct()


class Campaign(models.Model):
    """A cross-marketing campaign: rules that pick users and the offers they get.

    ``spent`` is what the campaign's offers hold of its budget (an open offer its face value,
    a used one what it cost, at most that; see ``campaigns.services.offer_costs``) and
    ``issued_count`` the offers issued; the database refuses any write that would take either
    past its cap.
    """

    class Kind(models.TextChoices):
        RULES = "rules", _("Rule-based")
        EXTERNAL = "external", _("External experiment")

    class Mode(models.TextChoices):
        RULES = "rules", _("Rules decide")
        OPTIMISE = "optimise", _("Optimise incremental margin")

    class Reach(models.TextChoices):
        ONCE = "once", _("Once: one pass when run")
        CONTINUOUS = "continuous", _("Continuous: every user the moment a rule becomes true")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        RUNNING = "running", _("Running")
        PAUSED = "paused", _("Paused")
        ENDED = "ended", _("Ended")

    slug = models.SlugField(_("slug"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.RULES)
    mode = models.CharField(
        _("targeting mode"),
        max_length=16,
        choices=Mode.choices,
        default=Mode.RULES,
        help_text=_(
            "Rules: every matching user gets the offers of the first rules they match. Optimise: the rules' "
            "conditions say who may get which offer, and the uplift model chooses at most one offer package per "
            "user to earn the most incremental margin within the budget."
        ),
    )
    reach = models.CharField(
        _("reach"),
        max_length=16,
        choices=Reach.choices,
        default=Reach.ONCE,
        help_text=_(
            "Once: a run reaches the users who qualify at that moment. Continuous: while the campaign runs and "
            "inside its window, the workers reach every user the moment one of its rules becomes true for them "
            "(after each batch of their events, and on a schedule for time-based conditions), until the window, "
            "budget or offer cap ends it. Continuous needs the rules targeting mode."
        ),
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    owner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="owned_campaigns",
        null=True,
        blank=True,
        verbose_name=_("owner"),
    )
    partners = models.ManyToManyField(
        Partner,
        blank=True,
        related_name="campaigns",
        verbose_name=_("participating partners"),
    )
    deal = models.ForeignKey(
        Deal, on_delete=models.PROTECT, null=True, blank=True, related_name="campaigns", verbose_name=_("deal")
    )
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    timezone = TimeZoneField(_("time zone"), default="Asia/Shanghai", help_text=_("The window is read in this zone."))
    budget = MoneyField(_("budget (CNY)"), null=True, blank=True, help_text=_("Empty means no money cap."))
    spent = MoneyField(_("budget held (CNY)"), default=0, editable=False)
    per_user_limit = models.PositiveSmallIntegerField(_("offers per user"), default=1)
    global_limit = models.PositiveIntegerField(_("offer cap"), null=True, blank=True)
    issued_count = models.PositiveIntegerField(_("offers issued"), default=0, editable=False)
    holdout_share = models.DecimalField(
        _("holdout share"),
        max_digits=4,
        decimal_places=3,
        default="0.100",
        help_text=_("Fraction of eligible users kept out at random so the effect can be measured."),
    )
    offer_valid_days = models.PositiveSmallIntegerField(_("offer valid for (days)"), default=14)
    conversion_window_days = models.PositiveSmallIntegerField(
        _("conversion window (days)"),
        default=14,
        help_text=_("A purchase of a promoted course within this many days of assignment counts as a conversion."),
    )
    promoted_films = models.ManyToManyField(
        Film, blank=True, related_name="campaigns", verbose_name=_("promoted films")
    )
    promoted_courses = models.ManyToManyField(
        Course, blank=True, related_name="campaigns", verbose_name=_("promoted courses")
    )
    promoted_bundles = models.ManyToManyField(
        Bundle, blank=True, related_name="campaigns", verbose_name=_("promoted bundles")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = CampaignQuerySet.as_manager()
    history = HistoricalRecords(m2m_fields=[partners, promoted_films, promoted_courses, promoted_bundles])

    class Meta:
        ordering = ["-starts_at"]
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="campaign_ends_after_start"),
            models.CheckConstraint(
                condition=Q(spent__gte=0) & (Q(budget__isnull=True) | Q(budget__gte=0)),
                name="campaign_money_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(budget__isnull=True) | Q(spent__lte=F("budget")), name="campaign_within_budget"
            ),
            models.CheckConstraint(
                condition=Q(global_limit__isnull=True) | Q(issued_count__lte=F("global_limit")),
                name="campaign_within_offer_cap",
            ),
            models.CheckConstraint(condition=Q(per_user_limit__gte=1), name="campaign_per_user_limit_positive"),
            models.CheckConstraint(
                condition=~Q(reach="continuous") | Q(mode="rules"),
                name="campaign_continuous_reach_decides_by_rules",
                violation_error_message=_("Continuous reach needs the rules targeting mode."),
            ),
            models.CheckConstraint(
                condition=Q(holdout_share__gte=0) & Q(holdout_share__lt=1),
                name="campaign_holdout_share_is_fraction",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Rule(models.Model):
    """One targeting rule of a campaign: a condition on features and scores, and the offer it earns.

    Rules run by descending priority; an exclusive rule that matches a user stops the
    lower rules for that user.
    """

    class OfferKind(models.TextChoices):
        COUPON = "coupon", _("Course coupon")
        FREE_VIEWING = "free_viewing", _("Free-viewing trial")
        MOVIE_TICKET = "movie_ticket", _("Movie ticket")
        MEMBERSHIP_GRANT = "membership_grant", _("Membership grant")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rules", verbose_name=_("campaign"))
    name = models.CharField(_("name"), max_length=200)
    priority = models.IntegerField(_("priority"), default=100, help_text=_("Higher runs first."))
    exclusive = models.BooleanField(
        _("exclusive"), default=True, help_text=_("A user matched here gets no offer from lower rules.")
    )
    condition = models.JSONField(
        _("condition"), default=dict, help_text=_("Which users qualify, on features, scores and segments.")
    )
    offer_kind = models.CharField(_("offer kind"), max_length=32, choices=OfferKind.choices)
    benefit_partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="benefit_rules",
        verbose_name=_("benefit partner"),
        help_text=_("The partner that honours the offer (the video platform for a trial, the cinema for a ticket)."),
    )
    deal = models.ForeignKey(
        Deal, on_delete=models.PROTECT, null=True, blank=True, related_name="rules", verbose_name=_("deal")
    )
    amount_off = MoneyField(_("amount off (CNY)"), null=True, blank=True)
    percent_off = models.DecimalField(_("percent off"), max_digits=5, decimal_places=2, null=True, blank=True)
    min_spend = MoneyField(_("minimum spend (CNY)"), default=0)
    days = models.PositiveSmallIntegerField(
        _("days"), null=True, blank=True, help_text=_("Length of a trial or membership.")
    )
    cost = MoneyField(_("cost per offer (CNY)"), default=0, help_text=_("Charged to the campaign budget when issued."))
    applicable_courses = models.ManyToManyField(
        Course, blank=True, related_name="coupon_rules", verbose_name=_("applicable courses")
    )
    applicable_bundles = models.ManyToManyField(
        Bundle, blank=True, related_name="coupon_rules", verbose_name=_("applicable bundles")
    )

    history = HistoricalRecords(m2m_fields=[applicable_courses, applicable_bundles])

    class Meta:
        ordering = ["campaign", "-priority", "pk"]
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        constraints = [
            models.CheckConstraint(
                condition=(Q(amount_off__isnull=True) | Q(amount_off__gte=0)) & Q(min_spend__gte=0) & Q(cost__gte=0),
                name="rule_money_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(percent_off__isnull=True) | (Q(percent_off__gt=0) & Q(percent_off__lte=100)),
                name="rule_percent_off_in_range",
            ),
            models.CheckConstraint(
                condition=~Q(offer_kind="coupon") | Q(amount_off__isnull=False) | Q(percent_off__isnull=False),
                name="rule_coupon_has_discount",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign.slug}: {self.name}"


class CampaignAssignment(models.Model):
    """The arm a user was put in when a campaign was evaluated, kept for the effect report."""

    HOLDOUT = "holdout"
    TREATMENT = "treatment"

    # The campaign's assignments are found through the unique (campaign, user) index; no index of its own.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="assignments", verbose_name=_("campaign"), db_index=False
    )
    user = models.ForeignKey(
        "analytics.EndUser", on_delete=models.CASCADE, related_name="assignments", verbose_name=_("user")
    )
    arm = models.CharField(
        _("arm"), max_length=64, help_text=_("'holdout' is the control; other names are treated arms.")
    )
    rule = models.ForeignKey(
        Rule, on_delete=models.SET_NULL, null=True, blank=True, related_name="assignments", verbose_name=_("rule")
    )
    assigned_at = models.DateTimeField(_("assigned at"), auto_now_add=True)

    class Meta:
        verbose_name = _("campaign assignment")
        verbose_name_plural = _("campaign assignments")
        constraints = [models.UniqueConstraint(fields=["campaign", "user"], name="one_assignment_per_campaign_user")]
        indexes = [models.Index(fields=["campaign", "arm"])]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.user_id}: {self.arm}"
