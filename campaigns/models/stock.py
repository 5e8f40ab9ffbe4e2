from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from crossmkt_site.money import MoneyField

from .campaigns import Rule
from .offers import Offer
from .partners import Partner


class StockItem(models.Model):
    """One code from a partner's pool: a movie ticket of a cinema or a free-viewing trial of a video platform.

    An offer of the same kind honoured by that partner takes one item when it is issued;
    the item comes back to the pool (``returned``, usable again) if the offer expires or
    is revoked unused, unless the item itself is past its date by then.
    """

    class Kind(models.TextChoices):
        MOVIE_TICKET = Rule.OfferKind.MOVIE_TICKET.value, _("Movie ticket")
        FREE_VIEWING = Rule.OfferKind.FREE_VIEWING.value, _("Free-viewing trial")

    class Status(models.TextChoices):
        AVAILABLE = "available", _("Available")
        ASSIGNED = "assigned", _("Assigned")
        RETURNED = "returned", _("Returned to the pool")
        EXPIRED = "expired", _("Expired")

    IN_POOL = (Status.AVAILABLE, Status.RETURNED)
    CODE_MAX_LENGTH = 128

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="stock", verbose_name=_("partner"))
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    code = models.CharField(_("partner's code"), max_length=CODE_MAX_LENGTH)
    face_value = MoneyField(_("face value (CNY)"), default=0)
    paid_on_use = models.BooleanField(
        _("paid on use"),
        default=False,
        db_default=False,  # rows written by raw COPY / INSERT without the column are bought in advance
        help_text=_(
            "The partner bills this code only when it is used; otherwise it was bought in advance and costs its "
            "value from the moment an offer takes it."
        ),
    )
    expires_at = models.DateTimeField(_("expires at"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.AVAILABLE)
    offer = models.OneToOneField(
        Offer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="stock_item",
        verbose_name=_("offer"),
    )
    loaded_at = models.DateTimeField(_("loaded at"), auto_now_add=True)
    assigned_at = models.DateTimeField(_("assigned at"), null=True, blank=True)
    returned_at = models.DateTimeField(_("returned at"), null=True, blank=True)

    class Meta:
        ordering = ["partner", "kind", "expires_at"]
        verbose_name = _("stock item")
        verbose_name_plural = _("stock items")
        constraints = [
            models.UniqueConstraint(fields=["partner", "code"], name="stock_code_unique_per_partner"),
            models.CheckConstraint(condition=Q(face_value__gte=0), name="stock_face_value_not_negative"),
            models.CheckConstraint(
                condition=~Q(status="assigned") | Q(offer__isnull=False),
                name="stock_assigned_has_offer",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["available", "returned"]) | Q(offer__isnull=True),
                name="stock_in_pool_has_no_offer",
            ),
        ]
        indexes = [models.Index(fields=["partner", "kind", "status", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.code}"
