"""GET deals/ and deals/{slug}/: the deals the calling partner is a side of."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Deal
from ..selectors import deal_get_visible, deal_list_visible
from .fields import RelatedSlugsField
from .filters import DEAL_FILTER_PARAMETERS, DealFilter, filter_queryset
from .pagination import PAGE_PARAMETERS, paginated_response, paginated_schema
from .schema import error_responses


class DealSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    source_partner = serializers.CharField(source="source_partner.slug", help_text="Where the trigger happens.")
    target_partner = serializers.CharField(source="target_partner.slug", help_text="Who provides the benefit.")
    trigger = serializers.ChoiceField(choices=Deal.Trigger.choices)
    trigger_courses = RelatedSlugsField(
        attribute="sku", help_text="SKUs of the courses whose purchase triggers the deal."
    )
    trigger_min_spend = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True, help_text="CNY.")
    benefit = serializers.ChoiceField(choices=Deal.Benefit.choices)
    benefit_days = serializers.IntegerField(allow_null=True)
    benefit_value = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Face value in CNY.")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    timezone = serializers.CharField(help_text="Settlement months are counted in this zone.")
    max_grants = serializers.IntegerField(allow_null=True)
    max_amount = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True, help_text="CNY.")
    settlement_price = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="CNY per grant.")
    revenue_share = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        help_text="Fraction of what granted users spend at the target partner "
        "that the target pays back to the source each month.",
    )
    status = serializers.ChoiceField(choices=Deal.Status.choices)
    granted_count = serializers.IntegerField()
    granted_amount = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="CNY.")


class DealListApi(APIView):
    """List the deals where the calling partner is the source or the target."""

    @extend_schema(
        operation_id="deals_list",
        summary="Deals this partner is a side of",
        tags=["deals"],
        parameters=[*DEAL_FILTER_PARAMETERS, *PAGE_PARAMETERS],
        responses={200: paginated_schema(DealSerializer, "PaginatedDealList"), **error_responses(400, 404)},
    )
    def get(self, request):
        deals = filter_queryset(DealFilter, request=request, queryset=deal_list_visible(partner=request.user))
        return paginated_response(
            queryset=deals.prefetch_related("trigger_courses"),
            serializer_class=DealSerializer,
            request=request,
            view=self,
        )


class DealDetailApi(APIView):
    """Show one of the calling partner's deals."""

    @extend_schema(
        operation_id="deal_retrieve",
        summary="One deal",
        tags=["deals"],
        responses={200: DealSerializer, **error_responses(404)},
    )
    def get(self, request, slug: str):
        return Response(DealSerializer(deal_get_visible(partner=request.user, slug=slug)).data)
