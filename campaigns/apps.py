from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns"
    verbose_name = _("Partnerships and campaigns")

    def ready(self) -> None:
        """Register the tasks and the webhook outcome handlers, once the models are loaded."""
        # Services queue tasks by name, so every process registers them: an eager call then runs in process.
        from . import tasks  # noqa: F401
        from .models import WebhookDelivery
        from .services.deals import deal_grants_settle
        from .services.webhook_outbox import webhook_outcome_handler_register

        webhook_outcome_handler_register(event_type=WebhookDelivery.Event.DEAL_GRANTED, handler=deal_grants_settle)
