from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from crossmkt_site.money import MoneyField


class EndUserQuerySet(models.QuerySet):
    def reachable(self):
        """Return users who may receive offers: marketing consent given and not erased."""
        return self.filter(marketing_consent=True, erased_at__isnull=True)

    def visible_to(self, partner):
        """Return users a partner may see: its own, and those linked to it who consented to data sharing."""
        linked = Q(links__partner=partner, data_sharing_consent=True)
        return self.filter(Q(home_partner=partner) | linked).filter(erased_at__isnull=True).distinct()


class EndUser(models.Model):
    """An end user of one partner (the home partner), known by that partner's pseudonymous id.

    ``external_id`` is what the home partner sends and sees, unique per home partner: the same
    string sent by two partners is two people. Another partner knows the person only through a
    ``UserLink`` (under that partner's own id for them), which applies while the person consents
    to data sharing; ``alliance_id`` is a pseudonymous id the home partner registered so that
    another partner sending it is linked to this person. The demographics are personal data, kept
    for the models and never sent to partners, and removed on erasure.
    """

    EXTERNAL_ID_MAX_LENGTH = 64

    external_id = models.CharField(_("pseudonymous id"), max_length=EXTERNAL_ID_MAX_LENGTH, db_index=True)
    home_partner = models.ForeignKey(
        "campaigns.Partner",
        on_delete=models.PROTECT,
        related_name="home_users",
        verbose_name=_("home partner"),
        help_text=_("The partner that first brought this user to us."),
    )
    age = models.PositiveSmallIntegerField(_("age"), null=True, blank=True)
    education = models.CharField(_("education"), max_length=32, blank=True)
    occupation = models.CharField(_("occupation"), max_length=64, blank=True)
    # NULL, not "", for "none": the alliance id is unique among the users that have one.
    alliance_id = models.CharField(  # noqa: DJ001
        _("alliance id"),
        max_length=EXTERNAL_ID_MAX_LENGTH,
        null=True,
        blank=True,
        help_text=_(
            "A pseudonymous id the home partner registered for this person; another partner sending it is "
            "linked to them while they consent to data sharing."
        ),
    )
    gender = models.CharField(_("gender"), max_length=16, blank=True)
    acquisition_channel = models.CharField(_("acquisition channel"), max_length=32, blank=True, db_index=True)
    marketing_consent = models.BooleanField(_("marketing consent"), default=False)
    data_sharing_consent = models.BooleanField(_("data-sharing consent"), default=False)
    signed_up_at = models.DateTimeField(_("signed up at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True)

    objects = EndUserQuerySet.as_manager()

    class Meta:
        verbose_name = _("end user")
        verbose_name_plural = _("end users")
        constraints = [
            models.CheckConstraint(condition=Q(age__isnull=True) | Q(age__lte=130), name="enduser_age_plausible"),
            models.UniqueConstraint(fields=["home_partner", "external_id"], name="enduser_id_unique_per_partner"),
            models.UniqueConstraint(
                fields=["alliance_id"], condition=Q(alliance_id__isnull=False), name="enduser_alliance_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class UserLink(models.Model):
    """Another partner's id for one person: that partner's events and requests for the id reach this user.

    A link applies only while the user consents to data sharing (and is not erased); it is made
    by the home partner (``POST users/{id}/links/``) or when the partner sends the user's alliance
    id. One link per partner and id, and per partner and user.
    """

    class Via(models.TextChoices):
        HOME_PARTNER = "home_partner", _("made by the home partner")
        ALLIANCE_ID = "alliance_id", _("matched by alliance id")
        MIGRATION = "migration", _("consented use before links existed")

    user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="links", verbose_name=_("user"))
    partner = models.ForeignKey(
        "campaigns.Partner", on_delete=models.PROTECT, related_name="user_links", verbose_name=_("partner")
    )
    external_id = models.CharField(_("partner's id for the user"), max_length=EndUser.EXTERNAL_ID_MAX_LENGTH)
    via = models.CharField(_("made"), max_length=16, choices=Via.choices)
    created_at = models.DateTimeField(_("linked at"), auto_now_add=True)

    class Meta:
        verbose_name = _("user link")
        verbose_name_plural = _("user links")
        constraints = [
            models.UniqueConstraint(fields=["partner", "external_id"], name="user_link_id_unique_per_partner"),
            models.UniqueConstraint(fields=["partner", "user"], name="one_link_per_partner_and_user"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.external_id} → {self.user_id}"


class BehaviorEvent(models.Model):
    """One thing a user did at a partner: watched a film, bought a course, joined an activity."""

    class Kind(models.TextChoices):
        FILM_WATCH = "film_watch", _("Film watched")
        COURSE_VIEW = "course_view", _("Course viewed")
        COURSE_PURCHASE = "course_purchase", _("Course purchased")
        MEMBERSHIP_START = "membership_start", _("Membership started")
        MEMBERSHIP_CANCEL = "membership_cancel", _("Membership cancelled")
        ACTIVITY_JOIN = "activity_join", _("Activity joined")
        OFFER_REDEEM = "offer_redeem", _("Offer redeemed")

    # No index of their own: (partner, event_id) and (user, occurred_at) below lead with them,
    # and every index is maintained on each of the millions of inserts.
    partner = models.ForeignKey(
        "campaigns.Partner", on_delete=models.PROTECT, related_name="events", verbose_name=_("partner"), db_index=False
    )
    event_id = models.CharField(_("event id"), max_length=64)
    user = models.ForeignKey(
        EndUser, on_delete=models.CASCADE, related_name="events", verbose_name=_("user"), db_index=False
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    item_id = models.CharField(_("item id"), max_length=64, blank=True)
    amount = MoneyField(_("amount (CNY)"), default=0)
    occurred_at = models.DateTimeField(_("occurred at"))
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("behaviour event")
        verbose_name_plural = _("behaviour events")
        constraints = [
            models.UniqueConstraint(fields=["partner", "event_id"], name="event_id_unique_per_partner"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="event_amount_not_negative"),
        ]
        indexes = [
            models.Index(fields=["user", "occurred_at"]),
            models.Index(fields=["kind", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.event_id}"


class ModelRun(models.Model):
    """One trained, versioned model: its parameters, metrics, data window and fitted artifact."""

    class Model(models.TextChoices):
        PROPENSITY = "propensity", _("Purchase propensity")
        CHURN = "churn", _("Churn risk")
        CLV = "clv", _("Lifetime value")
        SEGMENTS = "segments", _("Segments")
        RECOMMENDATIONS = "recommendations", _("Recommendations")
        UPLIFT = "uplift", _("Offer uplift")

    model = models.CharField(_("model"), max_length=32, choices=Model.choices)
    version = models.PositiveIntegerField(_("version"))
    is_active = models.BooleanField(_("active"), default=False)
    n_train = models.PositiveIntegerField(_("training rows"), default=0)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    data_start = models.DateTimeField(_("data from"), null=True, blank=True)
    data_end = models.DateTimeField(_("observation end"), null=True, blank=True)
    artifact = models.BinaryField(_("fitted artifact"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("trained at"), auto_now_add=True)
    # What the retraining quality gate decided when the run was stored, and on which figures
    # (analytics.services.quality_gate); empty for runs stored before the gate existed.
    quality_gate = models.JSONField(_("quality gate"), default=dict, blank=True)
    # The latest scoring time written with this run (analytics.services.scoring.scores_write), so that
    # operators see when each model last scored without reading the millions of score rows.
    last_scored_at = models.DateTimeField(_("last scored at"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["model", "-version"]
        verbose_name = _("model run")
        verbose_name_plural = _("model runs")
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="model_run_version_unique"),
            models.UniqueConstraint(fields=["model"], condition=Q(is_active=True), name="one_active_run_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model} v{self.version}"


class UserScore(models.Model):
    """The current score of one user under one model (one row per user and model)."""

    user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="scores", verbose_name=_("user"))
    model = models.CharField(_("model"), max_length=32, choices=ModelRun.Model.choices)
    run = models.ForeignKey(ModelRun, on_delete=models.PROTECT, related_name="scores", verbose_name=_("model run"))
    score = models.FloatField(_("score"), null=True, blank=True, help_text=_("A probability or risk, not money."))
    value = MoneyField(_("value (CNY)"), null=True, blank=True, help_text=_("Money estimates such as lifetime value."))
    label = models.CharField(_("label"), max_length=64, blank=True, help_text=_("Segment name or risk band."))
    scored_at = models.DateTimeField(_("scored at"))

    class Meta:
        verbose_name = _("user score")
        verbose_name_plural = _("user scores")
        constraints = [
            models.UniqueConstraint(fields=["user", "model"], name="one_current_score_per_user_model"),
        ]
        indexes = [models.Index(fields=["model", "score"])]

    def __str__(self) -> str:
        return f"{self.user_id}/{self.model}"


class ImportedBehavior(models.Model):
    """A row of the article's per-user table (``import_behavior``), kept as it was given.

    For users without events these counts stand in for the event-built ones, and
    ``purchased_course`` is the label the propensity model learns from.
    """

    user = models.OneToOneField(EndUser, on_delete=models.CASCADE, primary_key=True, related_name="imported_behavior")
    watching_count = models.PositiveIntegerField(_("films watched"))
    purchasing_count = models.PositiveIntegerField(_("courses purchased"))
    purchased_course = models.BooleanField(_("purchased the course"), null=True, blank=True)
    extra = models.JSONField(_("other columns"), default=dict, blank=True)
    imported_at = models.DateTimeField(_("imported at"), auto_now=True)

    class Meta:
        verbose_name = _("imported behaviour")
        verbose_name_plural = _("imported behaviour")

    def __str__(self) -> str:
        return f"{self.user_id} (imported)"


class UserFeatures(models.Model):
    """Per-user features built from behaviour events, one row per user, rebuilt incrementally.

    Times are stored rather than ages ("days since …") so a row stays true until the
    user's next event; the day counts are derived when features are read.
    """

    user = models.OneToOneField(EndUser, on_delete=models.CASCADE, primary_key=True, related_name="features")
    watching_count = models.PositiveIntegerField(_("films watched"), default=0)
    course_view_count = models.PositiveIntegerField(_("courses viewed"), default=0)
    purchasing_count = models.PositiveIntegerField(_("courses purchased"), default=0)
    purchase_days = models.PositiveIntegerField(_("distinct purchase days"), default=0)
    total_spend = MoneyField(_("total spend (CNY)"), default=0)
    activity_count = models.PositiveIntegerField(_("activities joined"), default=0)
    discounts_received = models.PositiveIntegerField(_("offers redeemed"), default=0)
    first_event_at = models.DateTimeField(_("first event"), null=True, blank=True)
    last_event_at = models.DateTimeField(_("last event"), null=True, blank=True)
    first_purchase_at = models.DateTimeField(_("first purchase"), null=True, blank=True)
    last_purchase_at = models.DateTimeField(_("last purchase"), null=True, blank=True)
    membership_started_at = models.DateTimeField(_("membership started"), null=True, blank=True)
    membership_cancelled_at = models.DateTimeField(_("membership cancelled"), null=True, blank=True)
    membership_paid = MoneyField(_("membership price paid (CNY)"), null=True, blank=True)
    built_at = models.DateTimeField(_("built at"))

    class Meta:
        verbose_name = _("user features")
        verbose_name_plural = _("user features")
        constraints = [models.CheckConstraint(condition=Q(total_spend__gte=0), name="features_spend_not_negative")]

    def __str__(self) -> str:
        return f"{self.user_id} (features)"


class PendingUser(models.Model):
    """A user with new events (or data) the live path has not evaluated yet: one row per user, however many batches.

    Written in the same transaction as the events that touched the user, so nothing accepted
    is lost with a message; deleted only by the transaction that refreshed the user's features
    and scores and evaluated the continuous campaigns for them. ``first_touched_at`` is when
    the oldest of those batches was accepted (what event-to-offer latency is measured from).
    """

    user = models.OneToOneField(EndUser, on_delete=models.CASCADE, primary_key=True, related_name="+")
    first_touched_at = models.DateTimeField(_("first touched at"), db_index=True)
    last_touched_at = models.DateTimeField(_("last touched at"))
    touches = models.PositiveIntegerField(_("batches"), default=1)

    class Meta:
        verbose_name = _("pending user")
        verbose_name_plural = _("pending users")

    def __str__(self) -> str:
        return f"{self.user_id} (pending since {self.first_touched_at:%Y-%m-%d %H:%M:%S})"


class Conversion(models.Model):
    """A sale a partner reports for a user, optionally attributed to an offer or a campaign.

    ``conversion_id`` is the partner's own id for the sale, unique per partner, so a
    retried report finds the first one instead of counting the sale twice.
    """

    partner = models.ForeignKey(
        "campaigns.Partner",
        on_delete=models.PROTECT,
        related_name="conversions",
        verbose_name=_("partner"),
    )
    conversion_id = models.CharField(_("conversion id"), max_length=64)
    user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="conversions", verbose_name=_("user"))
    amount = MoneyField(_("amount (CNY)"))
    occurred_at = models.DateTimeField(_("occurred at"))
    offer = models.ForeignKey(
        "campaigns.Offer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="conversions",
        verbose_name=_("offer"),
    )
    campaign = models.ForeignKey(
        "campaigns.Campaign",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="conversions",
        verbose_name=_("campaign"),
    )
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]
        verbose_name = _("conversion")
        verbose_name_plural = _("conversions")
        constraints = [
            models.UniqueConstraint(fields=["partner", "conversion_id"], name="conversion_id_unique_per_partner"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="conversion_amount_not_negative"),
        ]
        indexes = [
            models.Index(fields=["campaign", "occurred_at"]),
            models.Index(fields=["user", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.conversion_id}"


class ErasureLogEntry(models.Model):
    """The audit record of one erasure: who asked, whose data, when, and what was removed.

    ``pseudonymous_id`` is the id the partner knew the user by; the user row itself
    gets a random id on erasure, so this record is the one place that still says whom.
    The home partner's erasure removes the person everywhere (``scope`` "person"); a linked
    partner's removes only that partner's link and the events it sent ("partner").
    """

    class Scope(models.TextChoices):
        PERSON = "person", _("the person, at every partner")
        PARTNER = "partner", _("what one linked partner sent")

    user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="erasures", verbose_name=_("user"))
    pseudonymous_id = models.CharField(_("pseudonymous id"), max_length=64)
    partner = models.ForeignKey(
        "campaigns.Partner",
        on_delete=models.PROTECT,
        related_name="erasures_requested",
        verbose_name=_("requested by"),
    )
    api_key_prefix = models.CharField(_("API key prefix"), max_length=16, blank=True)
    scope = models.CharField(_("scope"), max_length=16, choices=Scope.choices, default=Scope.PERSON)
    erased_at = models.DateTimeField(_("erased at"))
    events_deleted = models.PositiveIntegerField(_("events deleted"), default=0)
    offers_revoked = models.PositiveIntegerField(_("open offers revoked"), default=0)

    class Meta:
        ordering = ["-erased_at"]
        verbose_name = _("erasure log entry")
        verbose_name_plural = _("erasure log")
        # One per id a partner erased: the home partner's for the person, each linked partner's for its link.
        constraints = [
            models.UniqueConstraint(fields=["user", "partner", "pseudonymous_id"], name="one_erasure_per_partner_id")
        ]

    def __str__(self) -> str:
        return f"{self.pseudonymous_id} @ {self.erased_at:%Y-%m-%d %H:%M}"


class ErasedIdentity(models.Model):
    """One erased person on the suppression list: a keyed hash of (home partner, pseudonymous id), never the id.

    Imports and the API look incoming ids up here and refuse the rows of an erased person, so
    an erasure cannot be undone by sending the same person again. The hash is HMAC-SHA256 under
    ``ERASURE_HASH_KEY`` (by default derived from ``SECRET_KEY``): without the key the list
    cannot be checked against guessed ids.
    """

    digest = models.CharField(_("hash of partner and id"), max_length=64, unique=True)
    partner = models.ForeignKey(
        "campaigns.Partner",
        on_delete=models.PROTECT,
        related_name="erased_identities",
        verbose_name=_("home partner"),
    )
    erased_at = models.DateTimeField(_("erased at"))

    class Meta:
        ordering = ["-erased_at"]
        verbose_name = _("erased identity")
        verbose_name_plural = _("erased identities (suppression list)")

    def __str__(self) -> str:
        return f"{self.digest[:12]}… @ {self.erased_at:%Y-%m-%d %H:%M}"


class ExperimentOutcome(models.Model):
    """One user's outcome in an experiment run elsewhere (``import_outcomes``), reported like our own campaigns."""

    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="imported_outcomes", verbose_name=_("campaign")
    )
    user_ref = models.CharField(_("user id"), max_length=64)
    # The person the campaign's partner means by user_ref (its own user or a consented link), set on import.
    user = models.ForeignKey(
        EndUser,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="experiment_outcomes",
        verbose_name=_("user"),
    )
    arm = models.CharField(
        _("arm"), max_length=64, help_text=_("'holdout' is the control; any other name is a treated arm.")
    )
    converted = models.BooleanField(_("converted"))
    revenue = MoneyField(_("revenue (CNY)"), default=0)
    # Optional pre-period covariates for CUPED; blank means the user has no pre-period history.
    pre_revenue = MoneyField(
        _("pre-period revenue (CNY)"),
        null=True,
        blank=True,
        help_text=_("The user's spend before the experiment; empty when the user has no history."),
    )
    pre_converted = models.BooleanField(
        _("converted before"),
        null=True,
        blank=True,
        help_text=_("Whether the user bought before the experiment; empty when the user has no history."),
    )
    imported_at = models.DateTimeField(_("imported at"), auto_now=True)

    class Meta:
        verbose_name = _("imported experiment outcome")
        verbose_name_plural = _("imported experiment outcomes")
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user_ref"], name="one_outcome_per_campaign_user"),
            models.CheckConstraint(condition=Q(revenue__gte=0), name="outcome_revenue_not_negative"),
            models.CheckConstraint(
                condition=Q(pre_revenue__isnull=True) | Q(pre_revenue__gte=0), name="outcome_pre_revenue_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.user_ref}: {self.arm}"
