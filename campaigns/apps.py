from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def cache_table_create(*, using: str, **kwargs) -> None:
    """Create the database cache's table after migrate (when CACHES uses one), so `migrate` is all a deploy needs."""
    call_command("createcachetable", database=using, verbosity=0)


class CampaignsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns"
    verbose_name = _("Partnerships and campaigns")

    def ready(self) -> None:
        """Register the tasks, the webhook outcome handlers and the cache table's creation, once models are loaded."""
        # Services queue tasks by name, so every process registers them: an eager call then runs in process.
        from . import tasks  # noqa: F401
        from .models import WebhookDelivery
        from .services.deals import deal_grants_settle
        from .services.webhook_outbox import webhook_outcome_handler_register

        webhook_outcome_handler_register(event_type=WebhookDelivery.Event.DEAL_GRANTED, handler=deal_grants_settle)
        # The API's throttle counts live in the default cache; by default that is a database table.
        post_migrate.connect(cache_table_create, sender=self, dispatch_uid="crossmkt-cache-table")
