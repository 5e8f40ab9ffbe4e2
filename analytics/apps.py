from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AnalyticsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"
    verbose_name = _("Users, behaviour and analytics")

    def ready(self) -> None:
        """Register the tasks: services queue them by name, so an eager call then runs in process."""
        from . import tasks  # noqa: F401
