"""Identity per partner: a partner writes only into its own users; a person is shared only through a consented link.

"ours" and "theirs" are two partners with an API key each (see conftest). The probe of issue
#14 is here as tests: one partner's events and erasures never reach another partner's users.
"""

from decimal import Decimal

import pytest

from analytics.models import BehaviorEvent, EndUser, UserFeatures, UserLink
from analytics.services.features import features_build
from tests.factories import EndUserFactory, OfferFactory

from .conftest import error_fields

pytestmark = pytest.mark.django_db

FEATURES = ["watching_count", "purchasing_count", "total_spend", "purchase_days", "last_event_at"]


def events(client, user_id: str, *, prefix: str, n: int = 2, amount: str = "999.00"):
    body = {
        "events": [
            {
                "event_id": f"{prefix}-{index}",
                "user_id": user_id,
                "kind": "course_purchase",
                "item_id": "ECO-101",
                "amount": amount,
                "occurred_at": f"2026-03-0{index + 1}T10:00:00+08:00",
            }
            for index in range(n)
        ]
    }
    return client.post("/api/v1/events/", body, format="json")


def features_of(user: EndUser) -> dict:
    features_build(full=True)
    return UserFeatures.objects.filter(user=user).values(*FEATURES).first() or {}


def link(side, user_id: str, partner: str, partner_user_id: str):
    return side.client.post(
        f"/api/v1/users/{user_id}/links/", {"partner": partner, "partner_user_id": partner_user_id}, format="json"
    )


def set_alliance_id(side, user_id: str, alliance_id):
    return side.client.put(f"/api/v1/users/{user_id}/alliance-id/", {"alliance_id": alliance_id}, format="json")


@pytest.fixture
def their_customer(theirs) -> EndUser:
    """Their user u0000038 with a purchase of their own, who has not consented to data sharing."""
    assert events(theirs.client, "u0000038", prefix="theirs", n=1, amount="59.00").json()["accepted"] == 1
    return EndUser.objects.get(home_partner=theirs.partner, external_id="u0000038")


def test_our_events_with_their_users_id_never_change_their_users_features(ours, theirs, their_customer):
    # given their user's features
    before = features_of(their_customer)
    assert before["purchasing_count"] == 1 and before["total_spend"] == Decimal("59.00")

    # when we post events with the same id string
    response = events(ours.client, "u0000038", prefix="ours")

    # then they are stored on a user of ours, and their user's features did not change
    assert response.json()["accepted"] == 2
    assert features_of(their_customer) == before
    ours_now = EndUser.objects.get(home_partner=ours.partner, external_id="u0000038")
    assert features_of(ours_now)["total_spend"] == Decimal("1998.00")
    assert set(their_customer.events.values_list("partner__slug", flat=True)) == {"yingshi"}


def test_our_delete_never_removes_their_data(ours, theirs, their_customer):
    # given we sent events under the same id string
    events(ours.client, "u0000038", prefix="ours")

    # when we erase "our" u0000038
    response = ours.client.delete("/api/v1/users/u0000038/")

    # then only our user is erased; theirs keeps its events and its id
    assert response.status_code == 200, response.content
    their_customer.refresh_from_db()
    assert their_customer.erased_at is None and their_customer.external_id == "u0000038"
    assert their_customer.events.count() == 1
    assert theirs.client.get("/api/v1/users/u0000038/offers/").status_code == 200


def test_an_id_sent_first_by_another_partner_is_not_squatted(ours, theirs):
    # given we send an id first
    events(ours.client, "u-late", prefix="ours")

    # when its owner sends it later
    response = events(theirs.client, "u-late", prefix="theirs", n=1)

    # then the owner gets a user of its own, which it sees and we do not
    assert response.json()["accepted"] == 1
    theirs_user = EndUser.objects.get(home_partner=theirs.partner, external_id="u-late")
    assert list(theirs_user.events.values_list("partner__slug", flat=True)) == ["yingshi"]
    assert theirs.client.get("/api/v1/users/u-late/offers/").status_code == 200
    # and our DELETE of the id erases only what we sent
    assert ours.client.delete("/api/v1/users/u-late/").status_code == 200
    assert list(theirs_user.events.values_list("event_id", flat=True)) == ["theirs-0"]
    assert theirs.client.get("/api/v1/users/u-late/offers/").status_code == 200


def test_a_link_by_the_home_partner_shares_the_person_under_the_other_partners_id(ours, theirs, their_customer):
    # given their user consents to data sharing and has an offer of our campaign
    their_customer.data_sharing_consent = True
    their_customer.save()
    offer = OfferFactory.create(campaign=ours.campaign, user=their_customer)
    assert ours.client.get("/api/v1/users/ours-77/offers/").status_code == 404

    # when their home partner links them to our id for them
    response = link(theirs, "u0000038", "zhixue", "ours-77")

    # then our id reaches their user: our offers for them, and our events add to their features
    assert response.status_code == 201, response.content
    assert response.json() | {"linked_at": None} == {
        "user_id": "u0000038",
        "partner": "zhixue",
        "partner_user_id": "ours-77",
        "via": "home_partner",
        "linked_at": None,
    }
    listed = ours.client.get("/api/v1/users/ours-77/offers/").json()
    assert listed["user_id"] == "ours-77" and [item["code"] for item in listed["offers"]] == [offer.code]
    events(ours.client, "ours-77", prefix="ours")
    assert features_of(their_customer)["purchasing_count"] == 3
    assert not EndUser.objects.filter(home_partner=ours.partner, external_id="ours-77").exists()


def test_a_registered_alliance_id_links_the_partner_that_sends_it(ours, theirs, their_customer):
    # given their user consents and their home partner registered an alliance id
    their_customer.data_sharing_consent = True
    their_customer.save()
    response = set_alliance_id(theirs, "u0000038", "alliance-5f2c")
    assert response.status_code == 200, response.content
    assert response.json() == {"user_id": "u0000038", "alliance_id": "alliance-5f2c"}

    # when we send events for that alliance id
    events(ours.client, "alliance-5f2c", prefix="ours")

    # then we are linked to their user, and our events are the person's
    made = UserLink.objects.get(partner=ours.partner)
    assert (made.user_id, made.external_id, made.via) == (their_customer.pk, "alliance-5f2c", "alliance_id")
    assert their_customer.events.count() == 3
    assert ours.client.get("/api/v1/users/alliance-5f2c/offers/").status_code == 200


def test_an_alliance_id_without_consent_is_refused_and_never_matches(ours, theirs, their_customer):
    response = set_alliance_id(theirs, "u0000038", "alliance-x")
    assert response.status_code == 409
    assert error_fields(response) == [("user_id", "no_data_sharing_consent")]
    # stored without consent (as an import may), it still does not share them
    EndUser.objects.filter(pk=their_customer.pk).update(alliance_id="alliance-x")
    events(ours.client, "alliance-x", prefix="ours")
    assert their_customer.events.count() == 1
    assert not UserLink.objects.exists()


def test_own_user_wins_over_an_alliance_match(ours, theirs, their_customer):
    their_customer.data_sharing_consent = True
    their_customer.save()
    set_alliance_id(theirs, "u0000038", "shared-id")
    mine = EndUserFactory.create(home_partner=ours.partner, external_id="shared-id")
    events(ours.client, "shared-id", prefix="ours")
    assert mine.events.count() == 2 and their_customer.events.count() == 1


def test_after_consent_is_withdrawn_a_link_stops_applying(ours, theirs, their_customer):
    # given a consented link and our events on the person
    their_customer.data_sharing_consent = True
    their_customer.save()
    link(theirs, "u0000038", "zhixue", "ours-77")
    events(ours.client, "ours-77", prefix="ours-before")
    shared = features_of(their_customer)

    # when the person withdraws consent
    their_customer.data_sharing_consent = False
    their_customer.save()

    # then we no longer see them, and our later events go to a user of our own
    assert ours.client.get("/api/v1/users/ours-77/offers/").status_code == 404
    events(ours.client, "ours-77", prefix="ours-after")
    assert features_of(their_customer) == shared
    assert EndUser.objects.get(home_partner=ours.partner, external_id="ours-77").events.count() == 2


def test_removing_a_link_stops_it_and_keeps_the_events_already_shared(ours, theirs, their_customer):
    their_customer.data_sharing_consent = True
    their_customer.save()
    link(theirs, "u0000038", "zhixue", "ours-77")
    events(ours.client, "ours-77", prefix="ours")

    response = theirs.client.delete("/api/v1/users/u0000038/links/zhixue/")

    assert response.status_code == 204
    assert not UserLink.objects.exists()
    assert their_customer.events.count() == 3
    assert ours.client.get("/api/v1/users/ours-77/offers/").status_code == 404
    assert theirs.client.delete("/api/v1/users/u0000038/links/zhixue/").status_code == 404


def test_a_linked_partners_delete_removes_only_what_it_sent(ours, theirs, their_customer):
    # given the person is linked to us and we sent events for them
    their_customer.data_sharing_consent = True
    their_customer.save()
    link(theirs, "u0000038", "zhixue", "ours-77")
    events(ours.client, "ours-77", prefix="ours")
    assert features_of(their_customer)["purchasing_count"] == 3

    # when we erase our id for them
    response = ours.client.delete("/api/v1/users/ours-77/")

    # then our link and our events are gone, and the person, their data and their features stay as theirs
    assert response.status_code == 200, response.content
    assert response.json()["events_deleted"] == 2
    their_customer.refresh_from_db()
    assert their_customer.erased_at is None and their_customer.data_sharing_consent
    assert list(their_customer.events.values_list("partner__slug", flat=True)) == ["yingshi"]
    assert UserFeatures.objects.get(user=their_customer).purchasing_count == 1
    assert not UserLink.objects.exists()
    # and our id for them is suppressed: sending it again is refused
    again = events(ours.client, "ours-77", prefix="ours-again", n=1)
    assert again.json()["accepted"] == 0 and again.json()["rejected"][0]["field"] == "user_id"


def test_the_home_partners_delete_erases_the_person_everywhere(ours, theirs, their_customer):
    # given the person is linked to us and we sent events for them
    their_customer.data_sharing_consent = True
    their_customer.save()
    link(theirs, "u0000038", "zhixue", "ours-77")
    events(ours.client, "ours-77", prefix="ours")

    # when their home partner erases them
    response = theirs.client.delete("/api/v1/users/u0000038/")

    # then every partner's events are gone, the link too, and neither id can bring them back
    assert response.status_code == 200, response.content
    assert response.json()["events_deleted"] == 3
    assert not BehaviorEvent.objects.exists() and not UserLink.objects.exists()
    for side, user_id in ((theirs, "u0000038"), (ours, "ours-77")):
        again = events(side.client, user_id, prefix=f"{user_id}-again", n=1)
        assert again.json()["accepted"] == 0, user_id
    assert EndUser.objects.filter(erased_at__isnull=True).count() == 2  # the two sides' fixture users


@pytest.mark.parametrize(
    "body, status, expected",
    [
        ({"partner": "netflix", "partner_user_id": "x"}, 404, ("partner", "unknown_partner")),
        ({"partner": "yingshi", "partner_user_id": "x"}, 422, ("partner", "self_link")),
        ({"partner": "zhixue", "partner_user_id": "x" * 65}, 400, ("partner_user_id", "max_length")),
        ({"partner": "zhixue"}, 400, ("partner_user_id", "required")),
    ],
)
def test_hostile_links_are_refused_with_a_clear_code(theirs, ours, their_customer, body, status, expected):
    their_customer.data_sharing_consent = True
    their_customer.save()
    response = theirs.client.post("/api/v1/users/u0000038/links/", body, format="json")
    assert response.status_code == status, response.content
    assert error_fields(response) == [expected]
    assert not UserLink.objects.exists()


def test_links_that_would_take_an_id_or_share_without_consent_are_409(ours, theirs, their_customer):
    # no consent
    response = link(theirs, "u0000038", "zhixue", "ours-77")
    assert response.status_code == 409 and error_fields(response) == [("user_id", "no_data_sharing_consent")]
    their_customer.data_sharing_consent = True
    their_customer.save()
    other = EndUserFactory.create(home_partner=theirs.partner, external_id="u-other", data_sharing_consent=True)
    assert link(theirs, "u0000038", "zhixue", "ours-77").status_code == 201
    # linking to an id already linked (to another person, or the same person again)
    response = link(theirs, "u-other", "zhixue", "ours-77")
    assert response.status_code == 409 and error_fields(response) == [("partner_user_id", "already_linked")]
    response = link(theirs, "u0000038", "zhixue", "ours-78")
    assert response.status_code == 409 and error_fields(response) == [("partner", "already_linked")]
    # an id that is already one of that partner's own users
    response = link(theirs, "u-other", "zhixue", "zhixue-user")
    assert response.status_code == 409 and error_fields(response) == [("partner_user_id", "partner_user_exists")]
    # another partner's user, or ours linking their user: as if it did not exist
    assert link(ours, "u0000038", "yingshi", "y-1").status_code == 404
    assert UserLink.objects.get().user == their_customer and other.links.count() == 0


def test_an_alliance_id_is_one_persons(ours, theirs, their_customer):
    their_customer.data_sharing_consent = True
    their_customer.save()
    assert set_alliance_id(theirs, "u0000038", "alliance-1").status_code == 200
    ours.user.data_sharing_consent = True
    ours.user.save()
    response = set_alliance_id(ours, ours.user.external_id, "alliance-1")
    assert response.status_code == 409 and error_fields(response) == [("alliance_id", "alliance_id_taken")]
    # only the home partner may register it, and null clears it
    assert set_alliance_id(ours, "u0000038", "alliance-2").status_code == 404
    assert set_alliance_id(theirs, "u0000038", None).json() == {"user_id": "u0000038", "alliance_id": None}
