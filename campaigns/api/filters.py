"""Query filters for the lists that grow (django-filter), and their errors in the API's format."""

from datetime import UTC, datetime

import django_filters
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

from ..models import Campaign, Deal


def _in_utc(name: str, value: datetime) -> datetime:
    # An offset beyond what PostgreSQL takes (+22:55 is valid ISO 8601) must not reach the database.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError({name: ["this time is out of range"]}) from None


class DealFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Deal.Status.choices)
    role = django_filters.ChoiceFilter(
        choices=[("source", "source"), ("target", "target")],
        method="filter_role",
    )
    active_at = django_filters.IsoDateTimeFilter(method="filter_active_at")

    class Meta:
        model = Deal
        fields = ["status"]

    def filter_role(self, queryset, name, value):
        partner = self.request.user
        return queryset.filter(source_partner=partner) if value == "source" else queryset.filter(target_partner=partner)

    def filter_active_at(self, queryset, name, value):
        moment = _in_utc(name, value)
        return queryset.filter(starts_at__lte=moment, ends_at__gt=moment)


class CampaignFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Campaign.Status.choices)
    running_at = django_filters.IsoDateTimeFilter(method="filter_running_at")

    class Meta:
        model = Campaign
        fields = ["status"]

    def filter_running_at(self, queryset, name, value):
        return queryset.running_at(_in_utc(name, value))


def filter_queryset(filterset_class, *, request, queryset):
    """Apply a FilterSet to queryset from the query string; invalid values are a 400 naming the parameter."""
    for name in filterset_class.base_filters:
        # django-filter ignores an empty value; a partner who sent one meant something, so say it is wrong.
        if "" in request.query_params.getlist(name):
            raise ValidationError({name: [f"{name} is empty; give a value or leave the parameter out"]})
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise translate_validation(filterset.errors)
    return filterset.qs


def _status_parameter(choices, what: str) -> OpenApiParameter:
    return OpenApiParameter(
        "status",
        OpenApiTypes.STR,
        enum=[value for value, _label in choices],
        many=True,
        explode=True,
        description=f"Only {what} in these statuses (repeat the parameter for several).",
    )


DEAL_FILTER_PARAMETERS = [
    _status_parameter(Deal.Status.choices, "deals"),
    OpenApiParameter(
        "role",
        OpenApiTypes.STR,
        enum=["source", "target"],
        description="Only deals where this partner is the source (trigger side) or the target (benefit side).",
    ),
    OpenApiParameter("active_at", OpenApiTypes.DATETIME, description="Only deals whose term contains this time."),
]

CAMPAIGN_FILTER_PARAMETERS = [
    _status_parameter(Campaign.Status.choices, "campaigns"),
    OpenApiParameter(
        "running_at",
        OpenApiTypes.DATETIME,
        description="Only campaigns running at this time (status running, window containing it).",
    ),
]
