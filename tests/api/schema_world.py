"""The objects the API schema's examples name, built once for both fuzz tests (in process and live)."""

from decimal import Decimal

from campaigns.models import Partner
from campaigns.services.partners import partner_api_key_create
from tests.factories import CampaignFactory, DealFactory, EndUserFactory, OfferFactory, PartnerFactory


def schema_example_world() -> str:
    """Create the partner, user, campaign, offer and deal the examples use; return the partner's raw API key."""
    partner = PartnerFactory.create(slug="zhixue", kind=Partner.Kind.KNOWLEDGE)
    user = EndUserFactory.create(external_id="u0001", home_partner=partner)
    campaign = CampaignFactory.create(slug="economics-in-movies", owner=partner)
    OfferFactory.create(code="7K3M9QX2HV4TBN8C", campaign=campaign, user=user, amount_off=Decimal("20.00"))
    DealFactory.create(slug="course-buy-video-month", source_partner=partner)
    return partner_api_key_create(partner=partner)[1]
