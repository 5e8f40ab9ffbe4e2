"""Serializer fields the API's serializers share."""

import re
from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crossmkt_site.bounds import money_problem


class RelatedSlugsField(serializers.ListField):
    """Show a many-to-many relation as a list of one text attribute of the related rows (prefetch it)."""

    def __init__(self, *, attribute: str, **kwargs):
        self.attribute = attribute
        super().__init__(child=serializers.CharField(), read_only=True, **kwargs)

    def to_representation(self, manager):
        return [getattr(row, self.attribute) for row in manager.all()]


MONEY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,2})?$"


@extend_schema_field(
    {
        "type": "string",
        "pattern": MONEY_PATTERN,
        "example": "199.00",
        "description": (
            "CNY as a decimal string with at most two decimals, not negative, with a decimal point "
            "(no comma) and at most the largest amount accepted (CROSSMKT_MAX_AMOUNT, 1000000.00 by default)."
        ),
    }
)
class MoneyInputField(serializers.Field):
    """Read an amount of CNY sent as a decimal string ("199.00"), within ``crossmkt_site.bounds``' rules.

    Numbers are refused, so no float ever carries money.
    """

    default_error_messages = {
        "invalid": 'send an amount in CNY as a string with at most two decimals and no sign, e.g. "199.00"',
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        problem = money_problem(data)
        if problem is not None:
            # Say what is wrong (a comma, a sign, the ceiling) and how to write it.
            raise serializers.ValidationError(problem, code="invalid")
        if not re.fullmatch(MONEY_PATTERN, data):
            self.fail("invalid")
        return Decimal(data)

    def to_representation(self, value):
        return str(value)


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: a number or a boolean is refused, not turned into text."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
