"""Discount arithmetic: what an offer takes off an order, never more than the order, always in fen."""

from decimal import ROUND_HALF_UP, Decimal

from crossmkt_site.money import FEN, ZERO, to_cny


def coupon_discount(
    *,
    order_amount: Decimal,
    amount_off: Decimal | None = None,
    percent_off: Decimal | None = None,
    min_spend: Decimal = ZERO,
) -> Decimal:
    """Return the discount one coupon gives on an order: zero below the minimum spend, never above the order."""
    order_amount = to_cny(order_amount)
    if order_amount < 0:
        raise ValueError("an order amount cannot be negative")
    if order_amount < min_spend:
        return ZERO
    discount = ZERO
    if percent_off is not None:
        discount += (order_amount * Decimal(percent_off) / 100).quantize(FEN, rounding=ROUND_HALF_UP)
    if amount_off is not None:
        discount += to_cny(amount_off)
    return min(discount, order_amount)


def stacked_price(*, order_amount: Decimal, coupons: list[dict]) -> tuple[Decimal, list[Decimal]]:
    """Apply coupons in a fixed order and return the final price with each coupon's discount.

    The order is explicit: percent-off coupons first (on the full price), then amount-off
    coupons on what remains, each against the running price, so no combination can take
    the price below zero and the result does not depend on the order the caller listed them.
    """
    ordered = sorted(
        coupons,
        key=lambda c: (
            c.get("percent_off") is None,
            -(c.get("percent_off") or 0),
            -(c.get("amount_off") or 0),
            c.get("min_spend") or 0,
        ),
    )
    price = to_cny(order_amount)
    discounts = []
    for coupon in ordered:
        discount = coupon_discount(
            order_amount=price,
            amount_off=coupon.get("amount_off"),
            percent_off=coupon.get("percent_off"),
            min_spend=coupon.get("min_spend") or ZERO,
        )
        discounts.append(discount)
        price -= discount
    return price, discounts
