"""POST conversions/: a sale is recorded once per conversion id and only against what the partner may see."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics.models import Conversion
from tests.api.hostile_values import TIMES_OUTSIDE_THE_WINDOW
from tests.factories import CampaignFactory, EndUserFactory, OfferFactory

from .conftest import error_fields

pytestmark = pytest.mark.django_db

URL = "/api/v1/conversions/"


def report(side, **fields):
    body = {
        "conversion_id": "order-1",
        "user_id": side.user.external_id,
        "amount": "179.00",
        "occurred_at": "2026-03-02T10:15:00+08:00",
    }
    body.update(fields)
    return side.client.post(URL, {name: value for name, value in body.items() if value is not None}, format="json")


def test_a_conversion_is_recorded_once_and_credited_to_the_offers_campaign(ours):
    # when the partner reports a sale made with an offer
    first = report(ours, offer_code=ours.offer.code)

    # then it is stored, credited to the offer's campaign
    assert first.status_code == 201, first.content
    assert first.json()["campaign"] == ours.campaign.slug and first.json()["amount"] == "179.00"
    stored = Conversion.objects.get()
    assert (stored.partner, stored.user, stored.offer, stored.amount) == (
        ours.partner,
        ours.user,
        ours.offer,
        Decimal("179.00"),
    )

    # and reporting it again returns the first report without a second row
    again = report(ours, offer_code=ours.offer.code)
    assert again.status_code == 200 and again.json() == first.json()
    assert Conversion.objects.count() == 1


def test_the_same_conversion_id_with_different_data_is_a_conflict(ours):
    report(ours)
    response = report(ours, amount="1.00")
    assert response.status_code == 409 and error_fields(response) == [("conversion_id", "conflict")]
    assert Conversion.objects.get().amount == Decimal("179.00")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"amount": "-1.00"}, "amount"),
        ({"amount": 179}, "amount"),
        ({"amount": None}, "amount"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"conversion_id": "x" * 65}, "conversion_id"),
        ({"user_id": None}, "user_id"),
        ({"offer_code": "not a code!"}, "offer_code"),
        ({"campaign": "no spaces allowed"}, "campaign"),
    ],
)
def test_malformed_fields_are_a_400_naming_the_field(ours, fields, field):
    response = report(ours, **fields)
    assert response.status_code == 400, response.content
    assert [name for name, _code in error_fields(response)] == [field]
    assert not Conversion.objects.exists()


def test_unknown_or_invisible_references_are_a_404_naming_the_field(ours, theirs):
    assert error_fields(report(ours, user_id="nobody")) == [("user_id", "not_found")]
    assert error_fields(report(ours, offer_code=theirs.offer.code)) == [("offer_code", "not_found")]
    assert error_fields(report(ours, campaign=theirs.campaign.slug)) == [("campaign", "not_found")]
    assert not Conversion.objects.exists()


def test_references_that_do_not_fit_together_are_a_422(ours):
    other_users_offer = OfferFactory.create(
        campaign=ours.campaign, user=EndUserFactory.create(home_partner=ours.partner)
    )
    assert error_fields(report(ours, offer_code=other_users_offer.code)) == [("offer_code", "invalid")]
    other_campaign = CampaignFactory.create(owner=ours.partner)
    response = report(ours, offer_code=ours.offer.code, campaign=other_campaign.slug)
    assert response.status_code == 422 and error_fields(response) == [("campaign", "invalid")]
    future = report(ours, occurred_at=(timezone.now() + timedelta(days=3)).isoformat())
    assert future.status_code == 422 and error_fields(future) == [("occurred_at", "invalid")]


def test_the_database_refuses_a_negative_conversion_amount(ours):
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversion.objects.create(
            partner=ours.partner,
            conversion_id="neg",
            user=ours.user,
            amount=Decimal("-0.01"),
            occurred_at=timezone.now(),
        )


def test_the_database_refuses_a_second_conversion_with_the_same_id(ours):
    Conversion.objects.create(
        partner=ours.partner, conversion_id="dup", user=ours.user, amount=1, occurred_at=timezone.now()
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversion.objects.create(
            partner=ours.partner, conversion_id="dup", user=ours.user, amount=1, occurred_at=timezone.now()
        )


@pytest.mark.parametrize(
    "amount, status, words",
    [
        ("1,50", 400, 'decimal commas are not accepted: write "1.50"'),
        ("1,000.00", 400, "commas are not accepted"),
        ("999999999999.99", 422, "above the largest amount accepted, 1000000.00"),
    ],
)
def test_an_amount_with_a_comma_or_above_the_ceiling_says_so(ours, amount, status, words):
    response = report(ours, amount=amount)
    assert response.status_code == status and error_fields(response) == [("amount", "invalid")]
    assert words in response.json()["errors"][0]["message"], response.content
    assert not Conversion.objects.exists()


@pytest.mark.parametrize(
    "occurred_at",
    [*TIMES_OUTSIDE_THE_WINDOW, "9999-12-31T23:59:59-08:00", "0001-01-01T00:00:00+08:00"],
)
def test_a_time_outside_the_plausible_window_is_a_422_naming_the_window(ours, occurred_at):
    response = report(ours, occurred_at=occurred_at)
    assert response.status_code == 422, response.content
    assert error_fields(response) == [("occurred_at", "invalid")]
    assert "outside the accepted window 1990-01-01T00:00:00+08:00 to " in response.json()["errors"][0]["message"]
    assert not Conversion.objects.exists()
