"""Shared pieces of the OpenAPI description: the error format and the responses that use it."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers


class PartnerApiSchema(AutoSchema):
    """Name the components of serializers nested in a view after the view (``EventsIngestInput``)."""

    def get_serializer_name(self, serializer, direction):
        owner, _, name = type(serializer).__qualname__.rpartition(".")
        if not owner:
            return super().get_serializer_name(serializer, direction)
        # Every view has its own InputSerializer and OutputSerializer; the view's name tells them apart.
        return owner.removesuffix("Api") + name.removesuffix("Serializer")


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(
        allow_null=True,
        help_text="The field at fault as a dotted path (`events.3.amount`), a header name, or null.",
    )
    code = serializers.CharField(help_text="Machine-readable reason, e.g. `required`, `invalid`, `not_found`.")
    message = serializers.CharField(help_text="What is wrong, for a person.")


class ErrorSerializer(serializers.Serializer):
    # The metaclass moves declared fields into _declared_fields, so Serializer.errors stays the
    # property; the stubs cannot know that.
    errors = ErrorItemSerializer(many=True)  # type: ignore[assignment]


_DESCRIPTIONS = {
    400: "The request is malformed: a missing or invalid field, a wrong type, a bad date, or a body that is not JSON.",
    401: "No API key, or a malformed, unknown or revoked one. The response carries `WWW-Authenticate: Api-Key`.",
    404: "No such object among those this partner may see.",
    409: "The request conflicts with the object's state.",
    413: "The body or the batch is larger than this endpoint takes.",
    415: "The body is not `application/json`.",
    422: "The request is well-formed but cannot be carried out as asked.",
    429: "Too many requests for this API key; retry after the `Retry-After` seconds.",
}

_EXAMPLES = {
    400: (
        "Invalid field",
        {"errors": [{"field": "amount", "code": "invalid", "message": "A valid number is required."}]},
    ),
    401: (
        "No key",
        {
            "errors": [
                {"field": None, "code": "not_authenticated", "message": "Authentication credentials were not provided."}
            ]
        },
    ),
    404: ("Not found", {"errors": [{"field": None, "code": "not_found", "message": "Not found."}]}),
    409: ("Conflict", {"errors": [{"field": None, "code": "conflict", "message": "already used with different data"}]}),
    413: (
        "Too large",
        {
            "errors": [
                {
                    "field": None,
                    "code": "too_large",
                    "message": "the body is 70000 bytes; this endpoint takes at most 65536",
                }
            ]
        },
    ),
    415: (
        "Not JSON",
        {
            "errors": [
                {
                    "field": None,
                    "code": "unsupported_media_type",
                    "message": 'Unsupported media type "text/plain" in request.',
                }
            ]
        },
    ),
    422: (
        "Key reused",
        {
            "errors": [
                {
                    "field": "Idempotency-Key",
                    "code": "idempotency_key_reused",
                    "message": "this Idempotency-Key was already used for another offer",
                }
            ]
        },
    ),
    429: (
        "Throttled",
        {
            "errors": [
                {
                    "field": None,
                    "code": "throttled",
                    "message": "Request was throttled. Expected available in 12 seconds.",
                }
            ]
        },
    ),
}

# Every endpoint can answer these: authentication and throttling come before anything else.
COMMON_ERRORS = (401, 429)
# Every endpoint that takes a body can also answer these.
BODY_ERRORS = (400, 413, 415)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """Return schema responses in the one error format for the given statuses (and the common ones)."""
    responses = {}
    for status in sorted(set(statuses) | set(COMMON_ERRORS)):
        summary, value = _EXAMPLES[status]
        responses[status] = OpenApiResponse(
            response=ErrorSerializer,
            description=_DESCRIPTIONS[status],
            examples=[OpenApiExample(summary, value=value, status_codes=[str(status)], response_only=True)],
        )
    return responses
