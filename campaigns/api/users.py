"""A user as a partner sees them: open offers, recommendations, and erasure. Pseudonymous ids only."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.selectors import enduser_get_visible, enduser_id_visible

from ..models import Offer, Rule
from ..selectors import offer_rows_open_for_user
from ..selectors.recommendations import user_recommendations
from ..services.erasure import user_erase
from .schema import error_responses

MAX_RECOMMENDATIONS = 50


class OpenOfferSerializer(serializers.Serializer):
    code = serializers.CharField()
    kind = serializers.ChoiceField(choices=Rule.OfferKind.choices)
    status = serializers.ChoiceField(choices=[(status.value, status.label) for status in Offer.OPEN_STATUSES])
    campaign = serializers.CharField(source="campaign.slug")
    honoured_by = serializers.CharField(
        source="partner.slug",
        allow_null=True,
        help_text="The partner that honours the offer (a video platform for a trial).",
    )
    deal = serializers.CharField(source="deal.slug", allow_null=True)
    amount_off = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True, help_text="CNY.")
    percent_off = serializers.DecimalField(max_digits=5, decimal_places=2, allow_null=True)
    min_spend = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="CNY.")
    days = serializers.IntegerField(allow_null=True, help_text="Length of a trial or membership.")
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class RecommendationSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[("course", "course"), ("film", "film")])
    partner = serializers.CharField(help_text="Slug of the partner whose catalog the item is in.")
    item_id = serializers.CharField(help_text="Course SKU or film id.")
    title = serializers.CharField()
    category = serializers.CharField()
    score = serializers.FloatField(min_value=0, max_value=1, help_text="How strongly the item is recommended, 0 to 1.")
    reason = serializers.CharField(required=False, help_text="Why, in the user's language (e.g. viewers of a film).")


class UserOffersApi(APIView):
    """List a user's open offers that the calling partner honours or whose campaign it runs or joins."""

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        offers = OpenOfferSerializer(many=True)

    @extend_schema(
        operation_id="user_offers_list",
        summary="A user's open offers",
        description="Offers that can still be redeemed, soonest to expire first. The id is yours: your own user, or "
        "a person linked to you (by their home partner, or by the alliance id you send) who consents to data "
        "sharing. Another partner's unlinked user is a 404, like an unknown one.",
        tags=["users"],
        responses={200: OutputSerializer, **error_responses(404)},
        examples=[
            OpenApiExample(
                "One coupon",
                response_only=True,
                value={
                    "user_id": "u0001",
                    "offers": [
                        {
                            "code": "7K3M9QX2HV4TBN8C",
                            "kind": "coupon",
                            "status": "issued",
                            "campaign": "economics-in-movies",
                            "honoured_by": None,
                            "deal": None,
                            "amount_off": "20.00",
                            "percent_off": None,
                            "min_spend": "0.00",
                            "days": None,
                            "issued_at": "2026-03-01T09:00:00+08:00",
                            "expires_at": "2026-03-15T09:00:00+08:00",
                        }
                    ],
                },
            )
        ],
    )
    def get(self, request, user_id: str):
        # A hot path: written-out statements and plain rows (the serializers above describe them for the schema).
        pk = enduser_id_visible(partner=request.user, external_id=user_id)
        return Response({"user_id": user_id, "offers": offer_rows_open_for_user(partner=request.user, user_id=pk)})


class UserRecommendationsApi(APIView):
    """Recommend courses and films for a user from their interest in categories."""

    class QuerySerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=MAX_RECOMMENDATIONS, default=10)

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        recommendations = RecommendationSerializer(many=True)

    @extend_schema(
        operation_id="user_recommendations_list",
        summary="Courses and films to recommend to a user",
        description=(
            "Cross-domain recommendations from the active recommendations model (item-to-item co-occurrence "
            "over courses and films, with categories and tags for items and users without history): courses "
            "for film lovers, films for course buyers; only courses on sale and films inside their licence, "
            "never what the user already has, only this partner's items and those of its deal and campaign "
            "counterparts. Without data-sharing consent only this partner's own events count. Before a model is "
            "trained, items are ranked by the user's interest in their category (a purchase counts three times "
            "a view or a watch)."
        ),
        tags=["users"],
        parameters=[QuerySerializer],
        responses={200: OutputSerializer, **error_responses(400, 404)},
    )
    def get(self, request, user_id: str):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = enduser_get_visible(partner=request.user, external_id=user_id)
        recommendations = user_recommendations(user=user, partner=request.user, limit=query.validated_data["limit"])
        return Response(self.OutputSerializer({"user_id": user_id, "recommendations": recommendations}).data)


class UserEraseApi(APIView):
    """Erase a user's personal data (home partner), or what the calling partner sent for a linked person."""

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField(source="pseudonymous_id")
        erased_at = serializers.DateTimeField()
        events_deleted = serializers.IntegerField()
        offers_revoked = serializers.IntegerField()

    @extend_schema(
        operation_id="user_erase",
        summary="Erase a user's personal data",
        description=(
            "For a partner linked to the person (by their home partner or an alliance id), this removes only what"
            " that partner sent: its link and its events for the person; its id for them is suppressed. For the "
            "user's home partner it erases the person everywhere, with what every linked partner sent; another "
            "partner's unlinked user is a 404. Personal fields are cleared, consents switched off, the user's "
            "events, features and scores deleted and open offers revoked; offers, redemptions, conversions and "
            "campaign arms stay, no longer linked to this id, so settlements and reports still add up; imported "
            "outcomes and stored webhook payloads keep the user's items under a random id. The erasure is logged "
            "with the key that asked for it, and the ids are suppressed: events sent for them later are rejected "
            "item by item."
        ),
        tags=["users"],
        responses={200: OutputSerializer, **error_responses(404)},
    )
    def delete(self, request, user_id: str):
        entry = user_erase(partner=request.user, external_id=user_id, api_key_prefix=request.auth.prefix)
        return Response(self.OutputSerializer(entry).data)
