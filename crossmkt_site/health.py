"""Liveness for a load balancer's probe, and the benchmark's bare Django JSON view."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer that this process serves requests; it reads neither the database nor the cache."""
    return JsonResponse({"status": "ok"})
