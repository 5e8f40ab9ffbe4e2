"""Routes of the partner API, mounted at /api/v1/."""

from django.urls import path

from .campaigns import CampaignDetailApi, CampaignListApi, CampaignReportApi
from .conversions import ConversionCreateApi
from .deals import DealDetailApi, DealListApi
from .events import EventsIngestApi
from .identity import UserAllianceIdApi, UserLinkCreateApi, UserLinkDeleteApi
from .offers import OfferRedeemApi
from .settlement import SettlementApi
from .users import UserEraseApi, UserOffersApi, UserRecommendationsApi

app_name = "api"

urlpatterns = [
    path("events/", EventsIngestApi.as_view(), name="events-ingest"),
    path("users/<str:user_id>/", UserEraseApi.as_view(), name="user-erase"),
    path("users/<str:user_id>/offers/", UserOffersApi.as_view(), name="user-offers"),
    path("users/<str:user_id>/links/", UserLinkCreateApi.as_view(), name="user-link-create"),
    path("users/<str:user_id>/links/<slug:partner>/", UserLinkDeleteApi.as_view(), name="user-link-delete"),
    path("users/<str:user_id>/alliance-id/", UserAllianceIdApi.as_view(), name="user-alliance-id"),
    path("users/<str:user_id>/recommendations/", UserRecommendationsApi.as_view(), name="user-recommendations"),
    path("offers/<str:code>/redeem/", OfferRedeemApi.as_view(), name="offer-redeem"),
    path("conversions/", ConversionCreateApi.as_view(), name="conversion-create"),
    path("deals/", DealListApi.as_view(), name="deal-list"),
    path("deals/<slug:slug>/", DealDetailApi.as_view(), name="deal-detail"),
    path("deals/<slug:slug>/settlement/", SettlementApi.as_view(), name="deal-settlement"),
    path("campaigns/", CampaignListApi.as_view(), name="campaign-list"),
    path("campaigns/<slug:slug>/", CampaignDetailApi.as_view(), name="campaign-detail"),
    path("campaigns/<slug:slug>/report/", CampaignReportApi.as_view(), name="campaign-report"),
]
