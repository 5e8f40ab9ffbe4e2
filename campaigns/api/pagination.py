"""Page-number pagination for the lists that grow, and its shape in the schema."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination


class PartnerPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def paginated_response(*, queryset, serializer_class, request, view):
    """Return the page of queryset the request asks for, serialised, with count and links."""
    paginator = PartnerPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
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
