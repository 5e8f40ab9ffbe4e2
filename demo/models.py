"""The demo world's records: which worlds are loaded, with their planted truth, and each demo user's latent truth."""

from django.db import models
from django.utils.translation import gettext_lazy as _

from analytics.models import EndUser


class DemoWorld(models.Model):
    """A loaded demo world: its seed and size, and the planted truth every model is checked against."""

    seed = models.BigIntegerField(_("seed"))
    n_users = models.PositiveIntegerField(_("users"))
    truth = models.JSONField(_("planted truth"))
    catalog = models.JSONField(_("catalog"), default=dict)
    loaded_at = models.DateTimeField(_("loaded at"), auto_now=True)

    class Meta:
        verbose_name = _("demo world")
        verbose_name_plural = _("demo worlds")
        constraints = [models.UniqueConstraint(fields=["seed", "n_users"], name="demo_world_unique")]

    def __str__(self) -> str:
        return f"seed {self.seed}, {self.n_users} users"


class PlantedUser(models.Model):
    """A demo user's planted (latent) truth; never read by a model, only by checks against the truth."""

    user = models.OneToOneField(EndUser, on_delete=models.CASCADE, primary_key=True, related_name="planted")
    segment = models.CharField(_("planted segment"), max_length=32)
    top_category = models.CharField(_("planted favourite category"), max_length=32)
    purchase_probability = models.FloatField(_("true propensity"))

    class Meta:
        verbose_name = _("planted user truth")
        verbose_name_plural = _("planted user truth")

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.segment}"
