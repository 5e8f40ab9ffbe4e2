"""Operators' views of the pipeline's health: the admin page and the ``/metrics`` endpoint for Prometheus.

Both read ``campaigns.selectors.pipeline_health.pipeline_health`` (as ``manage.py pipeline_status``
does), so the three never disagree.
"""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ..presenters.pipeline_metrics import CONTENT_TYPE, pipeline_metrics_text
from ..presenters.pipeline_status import pipeline_status_tables
from ..selectors.pipeline_health import pipeline_health


def pipeline_health_view(request: HttpRequest) -> TemplateResponse:
    """Show the pipeline's figures to staff: events, issuance, webhooks, models and the live path."""
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    health = pipeline_health()
    context = {
        **admin.site.each_context(request),
        "title": _("Pipeline health"),
        "tables": pipeline_status_tables(health),
        "as_of": timezone.localtime(health.measured_at),
    }
    return TemplateResponse(request, "admin/campaigns/pipeline_health.html", context)


def _bearer_token_matches(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _space, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and constant_time_compare(given.strip(), token)


def metrics_allowed(request: HttpRequest) -> bool:
    """Return whether a request may read the metrics: the METRICS_TOKEN bearer token, a staff session,
    or anyone where METRICS_ALLOW_ANONYMOUS is on (local settings only; production forces it off)."""
    if _bearer_token_matches(request):
        return True
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return True
    return settings.METRICS_ALLOW_ANONYMOUS


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Answer a Prometheus scrape with the pipeline's figures in the text exposition format."""
    if not metrics_allowed(request):
        response = HttpResponse(
            "metrics need Authorization: Bearer <METRICS_TOKEN> or a staff session\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(pipeline_metrics_text(), content_type=CONTENT_TYPE)
