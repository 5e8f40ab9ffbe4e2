"""POST events/: a partner's behaviour events in bulk, checked item by item, stored once per event id."""

from django.core.validators import MaxLengthValidator, MinLengthValidator
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.models import BehaviorEvent
from analytics.services.partner_events import MAX_EVENTS_PER_REQUEST, WHOLE_ITEM, check_batch_size

from ..services.intake import events_accept
from .fields import MoneyInputField
from .schema import BODY_ERRORS, error_responses

# 10,000 events with every field at its longest, even written as \u escapes, fit in this.
EVENTS_MAX_BODY_BYTES = 16 * 1024 * 1024


class EventItemSerializer(serializers.Serializer):
    """One behaviour event; documents the item shape, which is checked as columns, not by this serializer."""

    event_id = serializers.CharField(max_length=64, help_text="Your id for the event; sending it again is a duplicate.")
    user_id = serializers.CharField(
        max_length=64,
        help_text="The user's pseudonymous id. A new id creates the user; an id this partner erased is rejected.",
    )
    kind = serializers.ChoiceField(choices=BehaviorEvent.Kind.choices)
    item_id = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="The course SKU, film id, membership or activity the event is about.",
    )
    amount = MoneyInputField(
        required=False, help_text="CNY as a decimal string, at most two decimals; 0 when left out."
    )
    occurred_at = serializers.DateTimeField(
        help_text="ISO 8601; without an offset it is read in the server's TIME_ZONE (Asia/Shanghai by default).",
    )


class BatchSizeValidator(MaxLengthValidator):
    """Refuse an oversize batch with a 413 (the schema shows the limit as maxItems)."""

    def __call__(self, value):
        check_batch_size(len(value))


@extend_schema_field(EventItemSerializer(many=True))
class EventBatchField(serializers.Field):
    """A non-empty JSON array, passed on untouched: its items are validated together as columns."""

    default_error_messages = {"not_a_list": "expected an array of event objects"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators += [
            MinLengthValidator(1, message="the batch is empty; send at least one event"),
            BatchSizeValidator(MAX_EVENTS_PER_REQUEST),
        ]

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list")
        return data

    def to_representation(self, value):
        return value


class RejectedEventSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in `events`, from 0.")
    field = serializers.CharField(allow_null=True, help_text="The item's field at fault, or null for the whole item.")
    code = serializers.CharField()
    message = serializers.CharField()


class EventsIngestApi(APIView):
    """Take a batch of behaviour events from the calling partner."""

    max_body_bytes = EVENTS_MAX_BODY_BYTES

    class InputSerializer(serializers.Serializer):
        events = EventBatchField(help_text=f"1 to {MAX_EVENTS_PER_REQUEST} events.")

    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField(help_text="Events stored now.")
        duplicates = serializers.IntegerField(
            help_text="Events whose event_id this partner had sent before; not stored again."
        )
        rejected = RejectedEventSerializer(many=True, help_text="Items not stored, by index, with the reason.")

    @extend_schema(
        operation_id="events_ingest",
        summary="Send behaviour events in bulk",
        description=(
            f"Up to {MAX_EVENTS_PER_REQUEST} events per request, idempotent by `event_id` per partner. "
            "Good items are stored even when others are rejected; every rejected item is listed by its index "
            "with the field and the reason. The calling partner is the events' partner."
        ),
        tags=["events"],
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*BODY_ERRORS)},
        examples=[
            OpenApiExample(
                "Two events",
                request_only=True,
                value={
                    "events": [
                        {
                            "event_id": "e-1001",
                            "user_id": "u0001",
                            "kind": "film_watch",
                            "item_id": "F00042",
                            "occurred_at": "2026-03-01T20:00:00+08:00",
                        },
                        {
                            "event_id": "e-1002",
                            "user_id": "u0001",
                            "kind": "course_purchase",
                            "item_id": "ECO-101",
                            "amount": "199.00",
                            "occurred_at": "2026-03-02T10:15:00+08:00",
                        },
                    ]
                },
            ),
            OpenApiExample(
                "One rejected",
                response_only=True,
                value={
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": [
                        {"index": 1, "field": "amount", "code": "invalid", "message": "negative amount: -5.00"}
                    ],
                },
            ),
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = events_accept(partner=request.user, items=serializer.validated_data["events"])
        rejected = [
            {
                "index": rejection.position,
                "field": None if rejection.column == WHOLE_ITEM else rejection.column,
                "code": "invalid",
                "message": rejection.reason,
            }
            for rejection in result.rejected
        ]
        output = {"accepted": result.imported, "duplicates": result.duplicates, "rejected": rejected}
        return Response(self.OutputSerializer(output).data)
