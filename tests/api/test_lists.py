"""GET deals/ and campaigns/: the caller's own, filtered and paged, with bad parameters named."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Deal
from tests.factories import CampaignFactory, DealFactory, PartnerFactory

from .conftest import error_fields

pytestmark = pytest.mark.django_db


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["slug"] for item in response.json()["results"]]


def test_deals_can_be_filtered_by_role_status_and_term(ours, theirs):
    # given deals where we are the source, the target, or not a side at all
    target_side = DealFactory.create(
        slug="we-give", source_partner=PartnerFactory.create(), target_partner=ours.partner, status=Deal.Status.ACTIVE
    )
    DealFactory.create(
        slug="past",
        source_partner=ours.partner,
        starts_at=timezone.now() - timedelta(days=400),
        ends_at=timezone.now() - timedelta(days=300),
    )

    assert sorted(slugs(ours.client.get("/api/v1/deals/"))) == ["past", "we-give", "zhixue-deal"]
    assert slugs(ours.client.get("/api/v1/deals/?role=target")) == [target_side.slug]
    assert slugs(ours.client.get("/api/v1/deals/?status=active")) == [target_side.slug]
    assert sorted(slugs(ours.client.get("/api/v1/deals/?status=active&status=draft"))) == [
        "past",
        "we-give",
        "zhixue-deal",
    ]
    now = timezone.now().isoformat()
    assert "past" not in slugs(ours.client.get("/api/v1/deals/", {"active_at": now}))


def test_a_deal_shows_its_terms_and_no_other_partners_data(ours):
    body = ours.client.get(f"/api/v1/deals/{ours.deal.slug}/").json()
    assert body["source_partner"] == "zhixue" and body["settlement_price"] == "8.00"
    assert body["trigger"] == "course_purchase" and body["trigger_courses"] == []


def test_campaigns_can_be_filtered_by_running_time(ours):
    joined = CampaignFactory.create(slug="joined", owner=PartnerFactory.create(), status=Campaign.Status.DRAFT)
    joined.partners.add(ours.partner)
    assert sorted(slugs(ours.client.get("/api/v1/campaigns/"))) == ["joined", "zhixue-campaign"]
    assert slugs(ours.client.get("/api/v1/campaigns/", {"running_at": timezone.now().isoformat()})) == [
        "zhixue-campaign"
    ]
    detail = ours.client.get("/api/v1/campaigns/joined/").json()
    assert detail["partners"] == ["zhixue"] and detail["status"] == "draft"


def test_lists_are_paged(ours):
    for n in range(5):
        CampaignFactory.create(slug=f"c{n}", owner=ours.partner)
    page = ours.client.get("/api/v1/campaigns/?page_size=2&page=2").json()
    assert page["count"] == 6 and len(page["results"]) == 2
    assert "page=3" in page["next"] and page["previous"]
    beyond = ours.client.get("/api/v1/campaigns/?page_size=2&page=9")
    assert beyond.status_code == 404 and error_fields(beyond) == [(None, "not_found")]


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=finished", "status"),
        ("role=both", "role"),
        ("active_at=tomorrow", "active_at"),
        ("active_at=", "active_at"),
        ("active_at=0001-01-01T00:00:00%2B10:00", "active_at"),
        ("page=0", "page"),
        ("page=two", "page"),
        ("page_size=100000", "page_size"),
        ("page_size=1&page_size=2", "page_size"),
    ],
)
def test_a_bad_list_parameter_is_a_400_naming_it(ours, query, field):
    response = ours.client.get(f"/api/v1/deals/?{query}")
    assert response.status_code == 400, response.content
    assert [name for name, _code in error_fields(response)] == [field]
