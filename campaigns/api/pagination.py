"""Page-number pagination for the lists that grow, strict about its parameters, and its shape in the schema."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


def _positive_int_parameter(request, name: str, *, default: int, maximum: int | None = None) -> int:
    """Return a query parameter as a whole number from 1 (to maximum), or raise a 400 naming it."""
    values = request.query_params.getlist(name)
    if not values:
        return default
    limit = f" and at most {maximum}" if maximum else ""
    if (
        len(values) > 1
        or not values[0].isascii()
        or not values[0].isdigit()
        or int(values[0]) < 1
        or (maximum and int(values[0]) > maximum)
    ):
        raise ValidationError({name: [f"give {name} once, as a whole number from 1{limit}"]})
    return int(values[0])


class PartnerPagination(PageNumberPagination):
    """Pages of 100 by default; a page past the last is a 404, a malformed page number a 400."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request):
        return _positive_int_parameter(
            request, self.page_size_query_param, default=self.page_size, maximum=self.max_page_size
        )

    def get_page_number(self, request, paginator):
        return _positive_int_parameter(request, self.page_query_param, default=1)


def paginated_response(*, queryset, serializer_class, request, view):
    """Return the page of queryset the request asks for, serialised, with count and links."""
    paginator = PartnerPagination()
    page: list[Any] | None = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def paginated_schema(serializer_class, name: str):
    """Return a schema-only serializer for a page of serializer_class items."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(help_text="Items on all pages."),
            "next": serializers.URLField(allow_null=True, help_text="The next page, or null on the last."),
            "previous": serializers.URLField(allow_null=True, help_text="The previous page, or null on the first."),
            "results": serializer_class(many=True),
        },
    )


PAGE_PARAMETERS = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="Page number, from 1."),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": PartnerPagination.max_page_size},
        description=f"Items per page (default {PartnerPagination.page_size}).",
    ),
]
