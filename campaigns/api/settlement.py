"""GET deals/{slug}/settlement/?period=YYYY-MM: what the two partners of a deal owe each other for a month."""

from typing import TypedDict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crossmkt_site.errors import ApplicationError

from ..models import Direction, SettlementLine, SettlementStatement
from ..presenters.settlement import settlement_as_dict
from ..selectors import deal_get_visible
from ..selectors.settlement import PERIOD_HELP, PERIOD_PATTERN, period_parse, settlement_get
from .schema import error_responses


class _DecimalPlaces(TypedDict):
    """The precision of a DecimalField, to pass as keyword arguments."""

    max_digits: int
    decimal_places: int


MONEY: _DecimalPlaces = {"max_digits": 14, "decimal_places": 2}


class SettlementApi(APIView):
    """Show a deal's settlement for a month: the issued statement, or a draft computed now."""

    class OutputSerializer(serializers.Serializer):
        class TotalsSerializer(serializers.Serializer):
            grants = serializers.IntegerField(help_text="Confirmed grants triggered in the month.")
            grants_amount = serializers.DecimalField(**MONEY, help_text="CNY the source partner owes for them.")
            revenue_base = serializers.DecimalField(
                **MONEY, help_text="CNY granted users spent at the target partner in the month, from their grant on."
            )
            revenue_share = serializers.DecimalField(max_digits=5, decimal_places=4)
            revenue_share_amount = serializers.DecimalField(
                **MONEY,
                help_text="CNY the target partner owes back: the share of the base, rounded half-up to the fen.",
            )
            redemptions = serializers.IntegerField(help_text="Net redemptions of the deal's offers; not charged.")
            net_amount = serializers.DecimalField(**MONEY, help_text="The two directions netted, as issued.")
            net_direction = serializers.ChoiceField(choices=Direction.choices)

        class BalanceSerializer(serializers.Serializer):
            amount = serializers.DecimalField(**MONEY, help_text="The netted balance including every correction line.")
            direction = serializers.ChoiceField(choices=Direction.choices)
            payer = serializers.CharField(help_text="Slug of the partner that pays the balance.")
            payee = serializers.CharField()

        class LineSerializer(serializers.Serializer):
            line = serializers.IntegerField(allow_null=True, help_text="Null on a draft: nothing is stored yet.")
            kind = serializers.ChoiceField(choices=SettlementLine.Kind.choices)
            description = serializers.CharField()
            quantity = serializers.DecimalField(
                max_digits=16, decimal_places=2, help_text="Grants counted, or for a revenue share its base in CNY."
            )
            unit_amount = serializers.DecimalField(
                max_digits=14, decimal_places=4, help_text="CNY per grant, or for a revenue share the share."
            )
            amount = serializers.DecimalField(**MONEY, help_text="CNY; a correction that takes money back is negative.")
            direction = serializers.ChoiceField(choices=Direction.choices)
            corrects = serializers.IntegerField(allow_null=True, help_text="The line a correction corrects.")
            recorded_at = serializers.DateTimeField()

        deal = serializers.SlugField()
        period = serializers.CharField(help_text="YYYY-MM.")
        status = serializers.ChoiceField(choices=SettlementStatement.Status.choices)
        draft = serializers.BooleanField(
            help_text="True when no statement was issued for the month and this was computed now."
        )
        note = serializers.CharField()
        timezone = serializers.CharField(help_text="The month is counted in this zone (the deal's).")
        period_start = serializers.DateTimeField()
        period_end = serializers.DateTimeField(help_text="The first instant after the month.")
        issued_at = serializers.DateTimeField(allow_null=True)
        source_partner = serializers.CharField()
        target_partner = serializers.CharField()
        totals = TotalsSerializer()
        balance = BalanceSerializer()
        lines = LineSerializer(many=True)

    @extend_schema(
        operation_id="deal_settlement_retrieve",
        summary="A deal's settlement for a month",
        description=(
            "Either partner of the deal may read it. The month is counted in the deal's time zone. Grants triggered "
            "in the month and confirmed are billed at their settlement price, paid by the source partner; the "
            "revenue share of what granted users spent at the target partner in the month, from their grant on, "
            "is paid back by the target partner (the share applied to the month's total and rounded half-up to "
            "the fen); the two are netted into one balance. An issued statement is frozen and later findings are "
            "correction lines; a month not issued yet is computed now and marked `draft`."
        ),
        tags=["deals"],
        parameters=[
            OpenApiParameter(
                "slug",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="The deal's slug.",
                examples=[OpenApiExample("A deal", value="course-buy-video-month")],
            ),
            OpenApiParameter(
                "period",
                OpenApiTypes.STR,
                required=True,
                pattern=PERIOD_PATTERN,
                description=PERIOD_HELP,
                examples=[OpenApiExample("November", value="2026-11")],
            ),
        ],
        responses={200: OutputSerializer, **error_responses(400, 404)},
    )
    def get(self, request, slug: str):
        deal = deal_get_visible(partner=request.user, slug=slug)
        if "period" not in request.query_params:
            raise ApplicationError(f"period is required: {PERIOD_HELP}", code="required", field="period")
        period = period_parse(request.query_params["period"])
        return Response(self.OutputSerializer(settlement_as_dict(settlement_get(deal=deal, period=period))).data)
