"""Discount arithmetic: no combination of coupons makes a price negative, and every amount is in fen."""

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.services.pricing import coupon_discount, stacked_price

money = st.decimals(min_value=Decimal("0"), max_value=Decimal("100000"), places=2)
percent = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100"), places=2)
coupon = st.fixed_dictionaries(
    {},
    optional={"amount_off": money, "percent_off": percent, "min_spend": money},
)


@settings(max_examples=500, deadline=None)
@given(order=money, coupons=st.lists(coupon, max_size=6))
def test_no_coupon_combination_makes_a_price_negative(order, coupons):
    price, discounts = stacked_price(order_amount=order, coupons=coupons)
    assert Decimal("0") <= price <= order
    assert price + sum(discounts) == order
    assert all(discount == discount.quantize(Decimal("0.01")) and discount >= 0 for discount in discounts)


@settings(max_examples=300, deadline=None)
@given(order=money, coupons=st.lists(coupon, max_size=6))
def test_stacking_does_not_depend_on_the_order_coupons_are_listed(order, coupons):
    assert (
        stacked_price(order_amount=order, coupons=coupons)[0]
        == stacked_price(order_amount=order, coupons=coupons[::-1])[0]
    )


def test_article_coupon_takes_20_off_and_never_more_than_the_order():
    assert coupon_discount(order_amount=Decimal("199.00"), amount_off=Decimal("20.00")) == Decimal("20.00")
    assert coupon_discount(order_amount=Decimal("9.90"), amount_off=Decimal("20.00")) == Decimal("9.90")


def test_percent_off_rounds_half_up_to_the_fen():
    assert coupon_discount(order_amount=Decimal("0.05"), percent_off=Decimal("50")) == Decimal("0.03")


def test_below_minimum_spend_gives_nothing():
    assert coupon_discount(
        order_amount=Decimal("99.99"), amount_off=Decimal("20"), min_spend=Decimal("100")
    ) == Decimal("0.00")
