"""A small world of two partners for the API tests, and clients that call as one of them."""

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from analytics.models import EndUser
from campaigns.models import Campaign, Deal, Offer, Partner
from campaigns.services.partners import partner_api_key_create, partner_api_key_revoke
from tests.factories import CampaignFactory, DealFactory, EndUserFactory, OfferFactory, PartnerFactory


def client_with_key(raw_key: str | None) -> APIClient:
    client = APIClient()
    if raw_key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # Throttle counts live in the cache; one test's requests must not count against the next.
    cache.clear()
    yield
    cache.clear()


@dataclass
class Side:
    """One partner's part of the world: its key and the objects it owns."""

    partner: Partner
    raw_key: str
    user: EndUser
    campaign: Campaign
    offer: Offer
    deal: Deal

    @property
    def client(self) -> APIClient:
        return client_with_key(self.raw_key)


def build_side(slug: str, kind: str) -> Side:
    partner = PartnerFactory.create(slug=slug, kind=kind)
    _key, raw_key = partner_api_key_create(partner=partner, name="tests")
    # Not shared: only its home partner may see this user.
    user = EndUserFactory.create(external_id=f"{slug}-user", home_partner=partner, data_sharing_consent=False)
    campaign = CampaignFactory.create(slug=f"{slug}-campaign", owner=partner)
    offer = OfferFactory.create(campaign=campaign, user=user)
    deal = DealFactory.create(
        slug=f"{slug}-deal", source_partner=partner, target_partner=PartnerFactory.create(slug=f"{slug}-peer")
    )
    return Side(partner, raw_key, user, campaign, offer, deal)


@pytest.fixture
def ours(db) -> Side:
    return build_side("zhixue", Partner.Kind.KNOWLEDGE)


@pytest.fixture
def theirs(db) -> Side:
    return build_side("yingshi", Partner.Kind.VIDEO)


@pytest.fixture
def revoked_client(ours) -> APIClient:
    key, raw_key = partner_api_key_create(partner=ours.partner, name="old")
    partner_api_key_revoke(partner=ours.partner, prefix=key.prefix)
    return client_with_key(raw_key)


def error_fields(response) -> list[tuple]:
    """Return (field, code) of every error in a response in the API's error format."""
    return [(error["field"], error["code"]) for error in response.json()["errors"]]
