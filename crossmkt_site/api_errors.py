"""One JSON error format for every 4xx of the API: ``{"errors": [{"field", "code", "message"}]}``.

``ApplicationError`` from the services, DRF's own validation, parse, authentication,
permission, throttling and not-found errors, and Django's 404 for a URL under ``/api/``
all come out in this shape, so a partner's client needs one error parser. Anything
else is a bug of ours: it is left to Django, logged, and answered with a 500.
"""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ApplicationError

API_PREFIX = "/api/"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "too_large"


def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the error envelope for a list of ``{"field", "code", "message"}`` items."""
    return {"errors": errors}


def error_item(message: object, *, code: str, field: str | None = None) -> dict[str, Any]:
    return {"field": field, "code": code, "message": str(message)}


def _join(field: str | None, key: object) -> str | None:
    if key in (api_settings.NON_FIELD_ERRORS_KEY, "detail"):
        return field
    return str(key) if field is None else f"{field}.{key}"


def flatten_detail(detail: Any, field: str | None = None, *, default_code: str = "invalid") -> list[dict[str, Any]]:
    """Turn DRF's nested error detail into flat items whose field is a dotted path (``events.3.amount``)."""
    if isinstance(detail, dict):
        return [
            item
            for key, value in detail.items()
            for item in flatten_detail(value, _join(field, key), default_code=default_code)
        ]
    if isinstance(detail, list):
        items = []
        for index, value in enumerate(detail):
            # A list of messages belongs to the field itself; a list of objects is numbered.
            child = _join(field, index) if isinstance(value, (dict, list)) else field
            items.extend(flatten_detail(value, child, default_code=default_code))
        return items
    return [error_item(detail, code=getattr(detail, "code", None) or default_code, field=field)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer a user-caused error in the one error format; return None for our own bugs (a 500)."""
    if isinstance(exc, ApplicationError):
        return Response(error_body([error_item(exc.message, code=exc.code, field=exc.field)]), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    # DRF's handler sets WWW-Authenticate on a 401 and Retry-After on a 429; keep its headers.
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):  # DRF answers APIExceptions only
        return response
    response.data = error_body(flatten_detail(exc.detail, default_code=exc.default_code))
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Answer an unknown URL under /api/ in the API's error format; elsewhere with Django's page."""
    if request.path.startswith(API_PREFIX):
        body = error_body([error_item(f"no such endpoint: {request.path}", code="not_found")])
        return JsonResponse(body, status=404)
    return page_not_found(request, exception)
