"""POST offers/{code}/redeem/: once only, safe to retry with the same Idempotency-Key."""

from decimal import Decimal

import pytest

from campaigns.models import Offer, RedemptionEntry
from tests.factories import EndUserFactory, OfferFactory

from .conftest import error_fields

pytestmark = pytest.mark.django_db


def redeem(client, code, amount="199.00", key="redeem-1", **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(f"/api/v1/offers/{code}/redeem/", {"order_amount": amount, **extra}, format="json", **headers)


def test_a_coupon_is_redeemed_once_and_a_retry_gets_the_same_answer(ours):
    # when the partner redeems its user's coupon
    first = redeem(ours.client, ours.offer.code)

    # then the discount is taken off the order and the offer is spent
    assert first.status_code == 200, first.content
    assert first.json()["discount"] == "20.00" and first.json()["order_amount"] == "199.00"
    assert Offer.objects.get(pk=ours.offer.pk).status == Offer.Status.REDEEMED

    # when the same request is retried with the same key, it is the same redemption, not a second one
    assert redeem(ours.client, ours.offer.code).json() == first.json()
    assert RedemptionEntry.objects.count() == 1

    # and a new key for the spent offer is a conflict
    again = redeem(ours.client, ours.offer.code, key="redeem-2")
    assert again.status_code == 409 and error_fields(again) == [(None, "already_redeemed")]


def test_redeeming_needs_an_idempotency_key(ours):
    response = redeem(ours.client, ours.offer.code, key=None)
    assert response.status_code == 400
    assert error_fields(response) == [("Idempotency-Key", "required")]
    assert Offer.objects.get(pk=ours.offer.pk).status == Offer.Status.ISSUED


@pytest.mark.parametrize("amount", ["-1.00", "abc", "1.999", 199, "", None])
def test_a_bad_order_amount_is_a_400_naming_it(ours, amount):
    response = redeem(ours.client, ours.offer.code, amount=amount)
    assert response.status_code == 400
    assert [field for field, _code in error_fields(response)] == ["order_amount"]


def test_an_order_below_the_minimum_spend_is_refused(ours):
    offer = OfferFactory.create(
        campaign=ours.campaign, user=EndUserFactory.create(home_partner=ours.partner), min_spend=Decimal("100.00")
    )
    response = redeem(ours.client, offer.code, amount="99.99")
    assert response.status_code == 400 and error_fields(response) == [("order_amount", "below_min_spend")]


@pytest.mark.parametrize("code", ["no-such-code", "ZZZZZZZZZZZZZZZZ"])
def test_an_unknown_code_is_a_404(ours, code):
    response = redeem(ours.client, code)
    assert response.status_code == 404 and error_fields(response) == [("code", "not_found")]


@pytest.mark.parametrize(
    "second_body",
    [{"amount": "299.00"}, {"amount": "199.00", "item_id": "C9"}],
    ids=["another amount", "another item"],
)
def test_the_same_idempotency_key_with_another_body_is_a_422_naming_the_header(ours, second_body):
    # given a redemption made with a key
    first = redeem(ours.client, ours.offer.code, key="order-77")
    assert first.status_code == 200, first.content

    # when the same key comes back with a different order
    response = redeem(ours.client, ours.offer.code, key="order-77", **second_body)

    # then it is refused, saying the key was used for another request, and nothing changed
    assert response.status_code == 422, response.content
    assert error_fields(response) == [("Idempotency-Key", "idempotency_key_reused")]
    assert "different" in response.json()["errors"][0]["message"]
    assert RedemptionEntry.objects.count() == 1


def test_the_same_idempotency_key_with_the_same_order_written_differently_is_the_same_request(ours):
    first = redeem(ours.client, ours.offer.code, amount="199.00", key="order-78")
    again = redeem(ours.client, ours.offer.code, amount="199.0", key="order-78")
    assert again.status_code == 200 and again.json() == first.json()
