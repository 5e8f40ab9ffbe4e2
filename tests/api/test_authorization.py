"""Who may do what: every endpoint × (no key, revoked key, own object, another partner's object).

No key and a revoked key are 401 with ``WWW-Authenticate: Api-Key``; the caller's own object
answers 2xx; another partner's object is a 404, exactly as if it did not exist.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.factories import UserLinkFactory

from .conftest import Side, client_with_key

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict | None = None
    headers: dict | None = None

    def send(self, client):
        send = getattr(client, self.method)
        return (
            send(self.path, self.body, format="json", **(self.headers or {}))
            if self.body is not None
            else send(self.path, **(self.headers or {}))
        )


def conversion_for(side: Side) -> Call:
    return Call(
        "post",
        "/api/v1/conversions/",
        {
            "conversion_id": "order-1",
            "user_id": side.user.external_id,
            "amount": "99.00",
            "occurred_at": "2026-03-02T10:00:00+08:00",
        },
    )


def _sharing(side: Side) -> str:
    """Let the side's user consent to data sharing (what linking needs); return the side's peer partner."""
    side.user.data_sharing_consent = True
    side.user.save()
    return side.deal.target_partner.slug


def link_for(side: Side) -> Call:
    peer = _sharing(side)
    return Call("post", f"/api/v1/users/{side.user.external_id}/links/", {"partner": peer, "partner_user_id": "p-1"})


def unlink_for(side: Side) -> Call:
    peer = _sharing(side)
    UserLinkFactory.create(user=side.user, partner=side.deal.target_partner)
    return Call("delete", f"/api/v1/users/{side.user.external_id}/links/{peer}/")


def alliance_id_for(side: Side) -> Call:
    _sharing(side)
    return Call("put", f"/api/v1/users/{side.user.external_id}/alliance-id/", {"alliance_id": f"a-{side.user.pk}"})


# Each endpoint, addressed at one side's object (the world's "ours" or "theirs").
ENDPOINTS: dict[str, Callable[[Side], Call]] = {
    "user offers": lambda side: Call("get", f"/api/v1/users/{side.user.external_id}/offers/"),
    "user recommendations": lambda side: Call("get", f"/api/v1/users/{side.user.external_id}/recommendations/"),
    "user erasure": lambda side: Call("delete", f"/api/v1/users/{side.user.external_id}/"),
    "user link": link_for,
    "user link removal": unlink_for,
    "user alliance id": alliance_id_for,
    "offer redeem": lambda side: Call(
        "post",
        f"/api/v1/offers/{side.offer.code}/redeem/",
        {"order_amount": "199.00"},
        {"HTTP_IDEMPOTENCY_KEY": "redeem-1"},
    ),
    "conversion": conversion_for,
    "deal": lambda side: Call("get", f"/api/v1/deals/{side.deal.slug}/"),
    "deal settlement": lambda side: Call("get", f"/api/v1/deals/{side.deal.slug}/settlement/?period=2026-11"),
    "campaign": lambda side: Call("get", f"/api/v1/campaigns/{side.campaign.slug}/"),
    "campaign report": lambda side: Call("get", f"/api/v1/campaigns/{side.campaign.slug}/report/"),
}

# Endpoints with no object of a partner in the request: lists and the event batch.
UNADDRESSED: dict[str, Call] = {
    "deal list": Call("get", "/api/v1/deals/"),
    "campaign list": Call("get", "/api/v1/campaigns/"),
    "events": Call(
        "post",
        "/api/v1/events/",
        {
            "events": [
                {
                    "event_id": "e-1",
                    "user_id": "u-new",
                    "kind": "film_watch",
                    "occurred_at": "2026-03-01T20:00:00+08:00",
                }
            ]
        },
    ),
}

EVERY_CALL = [*ENDPOINTS, *UNADDRESSED]


def call_for(name: str, side: Side) -> Call:
    return ENDPOINTS[name](side) if name in ENDPOINTS else UNADDRESSED[name]


def assert_unauthorized(response):
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Api-Key")
    assert response.json()["errors"][0]["code"] in {"not_authenticated", "authentication_failed"}


@pytest.mark.parametrize("name", EVERY_CALL)
def test_no_key_is_401(name, ours):
    assert_unauthorized(call_for(name, ours).send(client_with_key(None)))


@pytest.mark.parametrize("name", EVERY_CALL)
def test_revoked_key_is_401(name, ours, revoked_client):
    assert_unauthorized(call_for(name, ours).send(revoked_client))


@pytest.mark.parametrize("name", EVERY_CALL)
def test_own_object_is_2xx(name, ours, theirs):
    response = call_for(name, ours).send(ours.client)
    assert 200 <= response.status_code < 300, response.content


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_another_partners_object_is_404(name, ours, theirs):
    response = ENDPOINTS[name](theirs).send(ours.client)
    assert response.status_code == 404, response.content
    assert response.json()["errors"][0]["code"] == "not_found"


@pytest.mark.parametrize(
    "name, own_slug, other_slug",
    [
        ("deal list", "zhixue-deal", "yingshi-deal"),
        ("campaign list", "zhixue-campaign", "yingshi-campaign"),
    ],
)
def test_lists_hold_only_the_callers_objects(name, own_slug, other_slug, ours, theirs):
    slugs = [item["slug"] for item in UNADDRESSED[name].send(ours.client).json()["results"]]
    assert slugs == [own_slug]


def test_another_partners_event_ids_are_its_own(ours, theirs):
    # given the other partner already sent event e-1
    UNADDRESSED["events"].send(theirs.client)
    # when we send an event with the same id
    response = UNADDRESSED["events"].send(ours.client)
    # then it is our new event, not a duplicate of theirs: ids are scoped per partner
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}


def test_a_user_who_shares_data_is_visible_to_another_partner_only_through_a_link(ours, theirs):
    # given their user consented to data sharing
    theirs.user.data_sharing_consent = True
    theirs.user.save()
    # then consent alone shows them to no other partner: the id is not ours
    assert ours.client.get(f"/api/v1/users/{theirs.user.external_id}/offers/").status_code == 404
    assert ours.client.delete(f"/api/v1/users/{theirs.user.external_id}/").status_code == 404
    # when their home partner links them to our id for them
    UserLinkFactory.create(user=theirs.user, partner=ours.partner, external_id="our-id")
    # then we may read the user's offers (of our campaigns: none) under our id, not under theirs
    offers = ours.client.get("/api/v1/users/our-id/offers/")
    assert offers.status_code == 200 and offers.json() == {"user_id": "our-id", "offers": []}
    assert ours.client.get(f"/api/v1/users/{theirs.user.external_id}/offers/").status_code == 404


def test_a_key_that_is_not_ours_at_all_is_401(ours):
    for header in ("Api-Key cmk_deadbeef_not-a-real-key", "Api-Key", "Api-Key bad key with spaces", "Bearer abc"):
        client = client_with_key(None)
        client.credentials(HTTP_AUTHORIZATION=header)
        assert_unauthorized(client.get("/api/v1/deals/"))


def test_a_used_key_records_when_it_was_last_used(ours):
    key = ours.partner.api_keys.get()
    assert key.last_used_at is None
    ours.client.get("/api/v1/deals/")
    key.refresh_from_db()
    assert key.last_used_at is not None
