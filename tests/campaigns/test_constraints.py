"""The database itself refuses rows that break the invariants money and fairness depend on."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.utils import InternalError
from django.utils import timezone

from campaigns.models import Campaign, Course, Deal, RedemptionEntry
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    CourseFactory,
    DealFactory,
    EndUserFactory,
    FilmFactory,
    OfferFactory,
    PartnerFactory,
)

pytestmark = pytest.mark.django_db


def rejected(callable_):
    """Run a write in its own savepoint and tell whether the database refused it."""
    try:
        with transaction.atomic():
            callable_()
    except IntegrityError:
        return True
    return False


def test_second_offer_for_same_campaign_and_user_is_rejected():
    # given a user who already holds the campaign's offer
    offer = OfferFactory.create()
    # when the same offer slot is issued again (a retried task, a second worker)
    # then the database refuses it
    assert rejected(lambda: OfferFactory.create(campaign=offer.campaign, user=offer.user, sequence=0))


def test_offer_beyond_the_per_user_allowance_is_rejected():
    offer = OfferFactory.create()
    assert rejected(lambda: OfferFactory.create(campaign=offer.campaign, user=offer.user, sequence=1, allowance=1))
    assert not rejected(lambda: OfferFactory.create(campaign=offer.campaign, user=offer.user, sequence=1, allowance=2))


def test_duplicate_offer_code_is_rejected():
    offer = OfferFactory.create()
    assert rejected(lambda: OfferFactory.create(code=offer.code))


def test_negative_course_price_is_rejected():
    assert rejected(lambda: CourseFactory.create(price=Decimal("-0.01")))
    assert Course.objects.count() == 0


def test_negative_event_amount_is_rejected():
    assert rejected(lambda: BehaviorEventFactory.create(amount=Decimal("-5.00")))


def test_campaign_window_ending_before_it_starts_is_rejected():
    now = timezone.now()
    assert rejected(lambda: CampaignFactory.create(starts_at=now, ends_at=now - timedelta(minutes=1)))
    assert rejected(lambda: CampaignFactory.create(starts_at=now, ends_at=now))


def test_film_licence_and_deal_term_must_end_after_start():
    now = timezone.now()
    assert rejected(lambda: FilmFactory.create(licence_start=now, licence_end=now - timedelta(days=1)))
    assert rejected(lambda: DealFactory.create(starts_at=now, ends_at=now - timedelta(days=1)))


def test_campaign_cannot_reserve_past_its_budget():
    # given a campaign with 100 CNY of budget
    campaign = CampaignFactory.create(budget=Decimal("100.00"))
    # when a write tries to reserve more than the budget
    # then the database refuses, whatever the Python code believed
    assert rejected(lambda: Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("100.01")))
    assert not rejected(lambda: Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("100.00")))


def test_deal_cannot_grant_past_its_cap():
    deal = DealFactory.create(max_grants=2)
    assert rejected(lambda: Deal.objects.filter(pk=deal.pk).update(granted_count=3))


def test_deal_between_a_partner_and_itself_is_rejected():
    partner = PartnerFactory.create()
    assert rejected(lambda: DealFactory.create(source_partner=partner, target_partner=partner))


def test_event_id_is_unique_per_partner_but_not_across_partners():
    event = BehaviorEventFactory.create()
    assert rejected(lambda: BehaviorEventFactory.create(partner=event.partner, event_id=event.event_id))
    assert not rejected(lambda: BehaviorEventFactory.create(event_id=event.event_id))


def test_holdout_share_must_be_a_fraction():
    assert rejected(lambda: CampaignFactory.create(holdout_share=Decimal("1.000")))


def test_user_age_must_be_plausible():
    assert rejected(lambda: EndUserFactory.create(age=200))


@pytest.mark.postgres
def test_redemption_ledger_is_append_only_in_the_database():
    # given a recorded redemption
    offer = OfferFactory.create()
    assert offer.campaign.owner is not None
    entry = RedemptionEntry.objects.create(
        offer=offer,
        kind=RedemptionEntry.Kind.REDEEM,
        partner=offer.campaign.owner,
        order_amount=Decimal("199.00"),
        discount=Decimal("20.00"),
    )
    # when someone edits or deletes it with SQL, around the model's own guard
    # then PostgreSQL refuses both
    for change in (
        lambda: RedemptionEntry.objects.filter(pk=entry.pk).update(discount=Decimal("0.00")),
        lambda: RedemptionEntry.objects.filter(pk=entry.pk)._raw_delete(RedemptionEntry.objects.db),
    ):
        with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
            change()
    assert RedemptionEntry.objects.get(pk=entry.pk).discount == Decimal("20.00")


def test_redemption_ledger_refuses_edits_through_the_model():
    offer = OfferFactory.create()
    assert offer.campaign.owner is not None
    entry = RedemptionEntry.objects.create(offer=offer, kind=RedemptionEntry.Kind.REDEEM, partner=offer.campaign.owner)
    entry.discount = Decimal("1.00")
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()
