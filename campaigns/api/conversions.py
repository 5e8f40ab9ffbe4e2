"""POST conversions/: a partner reports a sale, once per conversion id, optionally tied to an offer or campaign."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ..services.conversions import conversion_record
from .fields import EventTimeField, MoneyInputField
from .schema import BODY_ERRORS, error_responses


class ConversionCreateApi(APIView):
    """Record a conversion the calling partner reports."""

    class InputSerializer(serializers.Serializer):
        conversion_id = serializers.CharField(
            max_length=64, trim_whitespace=False, help_text="Your id for the sale; unique per partner."
        )
        user_id = serializers.CharField(max_length=64, trim_whitespace=False, help_text="The user's pseudonymous id.")
        amount = MoneyInputField()
        occurred_at = EventTimeField(
            help_text="ISO 8601; from CROSSMKT_EARLIEST_EVENT_TIME (1990-01-01) to now plus CROSSMKT_FUTURE_TOLERANCE."
        )
        # \Z, not $: the field searches, and $ would let a trailing newline through.
        offer_code = serializers.RegexField(
            r"^[0-9A-Za-z]{1,32}\Z", required=False, help_text="The offer the sale used, if any."
        )
        campaign = serializers.SlugField(max_length=64, required=False, help_text="The campaign to credit, if any.")

    class OutputSerializer(serializers.Serializer):
        conversion_id = serializers.CharField()
        user_id = serializers.CharField(help_text="Your id for the user, as you sent it.")
        amount = serializers.DecimalField(max_digits=14, decimal_places=2)
        occurred_at = serializers.DateTimeField()
        offer_code = serializers.CharField(source="offer.code", allow_null=True)
        campaign = serializers.CharField(source="campaign.slug", allow_null=True)
        received_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="conversion_create",
        summary="Report a conversion",
        description=(
            "201 for a new conversion; sending the same `conversion_id` again with the same data returns the first "
            "report with 200, with different data it is a 409. The user, offer and campaign must be ones this "
            "partner may see (404 otherwise). An offer of another user, a campaign that is not the offer's, or a time "
            "outside the window of plausible times (before 1990-01-01 or more than a day in the future, by default) "
            "is a 422. A campaign is taken from the offer when only the offer is given."
        ),
        tags=["conversions"],
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer, **error_responses(*BODY_ERRORS, 404, 409, 422)},
        examples=[
            OpenApiExample(
                "A course sale after a coupon",
                request_only=True,
                value={
                    "conversion_id": "order-88231",
                    "user_id": "u0001",
                    "amount": "179.00",
                    "occurred_at": "2026-03-02T10:15:00+08:00",
                    "offer_code": "7K3M9QX2HV4TBN8C",
                },
            )
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        conversion, created = conversion_record(
            partner=request.user,
            conversion_id=data["conversion_id"],
            user_id=data["user_id"],
            amount=data["amount"],
            occurred_at=data["occurred_at"],
            offer_code=data.get("offer_code", ""),
            campaign_slug=data.get("campaign", ""),
        )
        output = self.OutputSerializer(conversion).data | {"user_id": data["user_id"]}
        return Response(output, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
