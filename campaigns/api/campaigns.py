"""GET campaigns/ and campaigns/{slug}/: the campaigns the calling partner owns or takes part in."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Campaign
from ..reports.campaign_report import campaign_report
from ..selectors import campaign_get_visible, campaign_list_visible
from .fields import RelatedSlugsField
from .filters import CAMPAIGN_FILTER_PARAMETERS, CampaignFilter, filter_queryset
from .pagination import PAGE_PARAMETERS, paginated_response, paginated_schema
from .schema import error_responses


class CampaignSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    kind = serializers.ChoiceField(choices=Campaign.Kind.choices)
    status = serializers.ChoiceField(choices=Campaign.Status.choices)
    owner = serializers.CharField(source="owner.slug", allow_null=True)
    partners = RelatedSlugsField(attribute="slug", help_text="Slugs of the participating partners.")
    deal = serializers.CharField(source="deal.slug", allow_null=True)
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    timezone = serializers.CharField(help_text="The window is read in this zone.")
    per_user_limit = serializers.IntegerField()
    offer_valid_days = serializers.IntegerField()


class CampaignListApi(APIView):
    """List the campaigns the calling partner owns or takes part in."""

    @extend_schema(
        operation_id="campaigns_list",
        summary="Campaigns this partner owns or takes part in",
        tags=["campaigns"],
        parameters=[*CAMPAIGN_FILTER_PARAMETERS, *PAGE_PARAMETERS],
        responses={200: paginated_schema(CampaignSerializer, "PaginatedCampaignList"), **error_responses(400, 404)},
    )
    def get(self, request):
        campaigns = filter_queryset(
            CampaignFilter, request=request, queryset=campaign_list_visible(partner=request.user)
        )
        return paginated_response(queryset=campaigns, serializer_class=CampaignSerializer, request=request, view=self)


class CampaignDetailApi(APIView):
    """Show one of the calling partner's campaigns."""

    @extend_schema(
        operation_id="campaign_retrieve",
        summary="One campaign",
        tags=["campaigns"],
        responses={200: CampaignSerializer, **error_responses(404)},
    )
    def get(self, request, slug: str):
        return Response(CampaignSerializer(campaign_get_visible(partner=request.user, slug=slug)).data)


class CampaignReportApi(APIView):
    """Report what one of the calling partner's campaigns caused: funnel, uplift with intervals, cost and ROI."""

    @extend_schema(
        operation_id="campaign_report",
        summary="A campaign's effect report",
        description=(
            "The same report as `manage.py campaign_report` and the admin: the funnel, each arm's users, conversions "
            "and revenue per user, the uplift of each treated arm over the holdout with 95% intervals; `cost`: "
            "the face value the offers reserved, what they really cost (`spent`), what went back to the budget "
            "(`released`) and what open offers still hold (`outstanding`), in total and per arm; per treated arm "
            "incremental revenue, and under `spend_return` the incremental margin (course price less the partner's "
            "share) and ROI on spent with their intervals; per-rule uplift, and warnings (such as a sample-ratio "
            "mismatch) to read "
            "first; a figure the arms have too few users for is null, with the reason under `not_enough_data` "
            "beside it; with an uplift model trained, `uplift_models` gives each model's AUUC and Qini curve on "
            "held-out users (the campaigns it learned from are listed only where the partner may see them). "
            "`intervals.kind` says whether intervals are always-valid (a running campaign: each comparison's "
            "`always_valid` block may be read every day, and its `spend_return` intervals are always-valid too, "
            "as its `interval_kind` says) or fixed-horizon; each comparison's `cuped` block gives "
            "conversion and revenue per user adjusted for pre-period spend and purchases beside the unadjusted "
            "figures, with `variance_reduction`; `p_value_holm` stands beside each p-value of the campaign's arms "
            "and rules (`multiple_testing`); `guardrails` flag churn or redemption rollbacks when the interval "
            "shows harm. Aggregates only: no user appears in it."
        ),
        tags=["campaigns"],
        responses={200: OpenApiTypes.OBJECT, **error_responses(404)},
    )
    def get(self, request, slug: str):
        campaign = campaign_get_visible(partner=request.user, slug=slug)
        report = campaign_report(campaign=campaign).to_dict()
        if report["uplift_models"]:
            visible = set(Campaign.objects.visible_to(request.user).values_list("slug", flat=True))
            report["uplift_models"]["sources"] = [
                name for name in report["uplift_models"]["sources"] if name in visible
            ]
        return Response(report)
