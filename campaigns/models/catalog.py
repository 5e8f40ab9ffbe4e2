from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crossmkt_site.money import MoneyField

from .partners import Partner


class Course(models.Model):
    """A paid course (or e-book, or Q&A series) sold by a knowledge partner."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="courses", verbose_name=_("partner"))
    sku = models.CharField(_("SKU"), max_length=64)
    title = models.CharField(_("title"), max_length=200)
    category = models.CharField(_("category"), max_length=64, db_index=True)
    tags = models.JSONField(_("tags"), default=list, blank=True)
    price = MoneyField(_("price (CNY)"))
    partner_share = models.DecimalField(
        _("partner's share"),
        max_digits=5,
        decimal_places=4,
        default=0,
        db_default=0,
        help_text=_(
            "Fraction, 0 to 1, of each sale paid to the course's partner (author or producer); the rest is our "
            "margin, on which campaign reports count incremental margin and ROI."
        ),
    )
    is_active = models.BooleanField(_("on sale"), default=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["partner", "sku"]
        verbose_name = _("course")
        verbose_name_plural = _("courses")
        constraints = [
            models.UniqueConstraint(fields=["partner", "sku"], name="course_sku_unique_per_partner"),
            models.CheckConstraint(condition=Q(price__gte=0), name="course_price_not_negative"),
            models.CheckConstraint(
                condition=Q(partner_share__gte=0) & Q(partner_share__lte=1), name="course_partner_share_is_fraction"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Film(models.Model):
    """A film or series of a video, cinema or studio partner; promotable only inside its licence window."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="films", verbose_name=_("partner"))
    external_id = models.CharField(_("external id"), max_length=64)
    title = models.CharField(_("title"), max_length=200)
    category = models.CharField(_("category"), max_length=64, db_index=True)
    tags = models.JSONField(_("tags"), default=list, blank=True)
    licence_start = models.DateTimeField(_("licence start"))
    licence_end = models.DateTimeField(_("licence end"))

    history = HistoricalRecords()

    class Meta:
        ordering = ["partner", "external_id"]
        verbose_name = _("film")
        verbose_name_plural = _("films")
        constraints = [
            models.UniqueConstraint(fields=["partner", "external_id"], name="film_id_unique_per_partner"),
            models.CheckConstraint(
                condition=Q(licence_end__gt=F("licence_start")), name="film_licence_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def licensed_at(self, moment) -> bool:
        """Tell whether the film may be promoted at the given aware datetime."""
        return self.licence_start <= moment < self.licence_end


class Bundle(models.Model):
    """A course joined with the films its lessons analyse, sold or promoted together."""

    slug = models.SlugField(_("slug"), max_length=64, unique=True)
    title = models.CharField(_("title"), max_length=200)
    courses = models.ManyToManyField(Course, related_name="bundles", verbose_name=_("courses"))
    films = models.ManyToManyField(Film, related_name="bundles", blank=True, verbose_name=_("films"))
    price = MoneyField(_("price (CNY)"))
    is_active = models.BooleanField(_("on sale"), default=True)

    history = HistoricalRecords(m2m_fields=[courses, films])

    class Meta:
        ordering = ["slug"]
        verbose_name = _("bundle")
        verbose_name_plural = _("bundles")
        constraints = [models.CheckConstraint(condition=Q(price__gte=0), name="bundle_price_not_negative")]

    def __str__(self) -> str:
        return self.title
