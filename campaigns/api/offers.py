"""POST offers/{code}/redeem/: redeem an offer once; a retry with the same Idempotency-Key gets the same answer."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crossmkt_site.errors import ApplicationError

from ..models import Rule
from ..services.redemption import offer_redeem
from .fields import MoneyInputField, StrictCharField
from .schema import BODY_ERRORS, error_responses

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,128}$"
# Codes are short runs of letters and digits; anything else cannot be an offer and is answered without a query.
OFFER_CODE_PATTERN = r"^[0-9A-Za-z]{1,32}$"


def idempotency_key_from(request) -> str:
    """Return the request's Idempotency-Key header, or raise a 400 saying what to send."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not key:
        raise ApplicationError(
            f"send an {IDEMPOTENCY_HEADER} header (a unique value per redemption, e.g. a UUID) so a retry is not "
            "a second redemption",
            code="required",
            field=IDEMPOTENCY_HEADER,
        )
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise ApplicationError(
            f"{IDEMPOTENCY_HEADER} must be 1 to 128 visible ASCII characters",
            code="invalid",
            field=IDEMPOTENCY_HEADER,
        )
    return key


class OfferRedeemApi(APIView):
    """Redeem an offer for an order at the calling partner."""

    class InputSerializer(serializers.Serializer):
        order_amount = MoneyInputField(help_text="The order's amount in CNY, before the discount.")
        item_id = StrictCharField(
            required=False,
            allow_blank=True,
            max_length=64,
            help_text=(
                "The course SKU or bundle slug bought; needed for coupons valid only for some courses or bundles."
            ),
        )

    class OutputSerializer(serializers.Serializer):
        code = serializers.CharField(source="offer.code")
        kind = serializers.ChoiceField(source="offer.kind", choices=Rule.OfferKind.choices)
        order_amount = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="CNY.")
        discount = serializers.DecimalField(
            max_digits=14, decimal_places=2, help_text="CNY taken off the order (0 for a trial, ticket or membership)."
        )
        idempotency_key = serializers.CharField()
        redeemed_at = serializers.DateTimeField(source="created_at")

    @extend_schema(
        operation_id="offer_redeem",
        summary="Redeem an offer",
        description=(
            "Redeems the offer once. A request repeated with the same `Idempotency-Key` and the same body returns "
            "the first redemption instead of failing; the same key for another offer or with a different body is "
            "a 422 `idempotency_key_reused`. Already redeemed, revoked or expired offers are a 409; an order below "
            "a coupon's minimum spend is a 400."
        ),
        tags=["offers"],
        parameters=[
            OpenApiParameter(
                "code",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=OFFER_CODE_PATTERN,
                description="The offer's code, as the user shows it.",
            ),
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="A unique value per redemption, e.g. a UUID.",
            ),
        ],
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*BODY_ERRORS, 404, 409, 422)},
        examples=[
            OpenApiExample("An order", request_only=True, value={"order_amount": "199.00"}),
            OpenApiExample(
                "Redeemed",
                response_only=True,
                value={
                    "code": "7K3M9QX2HV4TBN8C",
                    "kind": "coupon",
                    "order_amount": "199.00",
                    "discount": "20.00",
                    "idempotency_key": "2f1c7d5e-8a4b-4c1e-9f0a-3b6d2e7c9a10",
                    "redeemed_at": "2026-03-02T10:15:00+08:00",
                },
            ),
        ],
    )
    def post(self, request, code: str):
        if not re.fullmatch(OFFER_CODE_PATTERN, code):
            raise ApplicationError("no such offer", code="not_found", field="code", status=404)
        idempotency_key = idempotency_key_from(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = offer_redeem(
            code=code,
            partner=request.user,
            order_amount=serializer.validated_data["order_amount"],
            idempotency_key=idempotency_key,
            item_id=serializer.validated_data.get("item_id", ""),
        )
        return Response(self.OutputSerializer(entry).data)
