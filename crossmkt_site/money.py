"""Money in crossmkt: CNY as Decimal with two places (fen), never float."""

from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

FEN = Decimal("0.01")
ZERO = Decimal("0.00")


def to_cny(value: Decimal | int | str) -> Decimal:
    """Return value as CNY rounded half-up to the fen; floats are refused, they lose money."""
    if isinstance(value, float):
        raise TypeError("money must not be a float; pass a Decimal, int or string")
    return Decimal(value).quantize(FEN, rounding=ROUND_HALF_UP)


def MoneyField(verbose_name: "StrOrPromise | None" = None, **kwargs: Any) -> models.DecimalField:  # noqa: N802 - reads as a field class
    """Return a DecimalField for CNY: 14 digits, two decimal places."""
    kwargs.setdefault("max_digits", 14)
    kwargs.setdefault("decimal_places", 2)
    return models.DecimalField(verbose_name, **kwargs)
