"""A user through a partner's eyes: open offers, recommendations, no personal field ever, and erasure."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.sites import site as admin_site
from django.utils import timezone

from analytics.models import (
    BehaviorEvent,
    Conversion,
    EndUser,
    ErasureLogEntry,
    ImportedBehavior,
    ModelRun,
    UserFeatures,
    UserScore,
)
from campaigns.models import Campaign, CampaignAssignment, Offer, RedemptionEntry
from campaigns.services.redemption import offer_redeem
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    CourseFactory,
    EndUserFactory,
    FilmFactory,
    OfferFactory,
    UserLinkFactory,
)

pytestmark = pytest.mark.django_db

PERSONAL_VALUES = ("本科", "工程师", "female", "wechat-ads")


def personal_user(home_partner, **fields):
    return EndUserFactory.create(
        external_id="u-private",
        home_partner=home_partner,
        age=34,
        education="本科",
        occupation="工程师",
        gender="female",
        acquisition_channel="wechat-ads",
        signed_up_at=timezone.now() - timedelta(days=400),
        **fields,
    )


def test_open_offers_are_those_the_partner_honours_or_runs_and_nothing_personal(ours, theirs):
    # given a user of ours with personal data and offers from several campaigns
    user = personal_user(ours.partner)
    mine = OfferFactory.create(campaign=ours.campaign, user=user)
    honoured = OfferFactory.create(
        campaign=CampaignFactory.create(owner=theirs.partner), user=user, partner=ours.partner
    )
    joined_campaign = CampaignFactory.create(owner=theirs.partner)
    joined_campaign.partners.add(ours.partner)
    joined = OfferFactory.create(campaign=joined_campaign, user=user)
    OfferFactory.create(campaign=theirs.campaign, user=user)  # not ours to see
    OfferFactory.create(campaign=ours.campaign, user=user, sequence=1, allowance=3, status=Offer.Status.REDEEMED)
    OfferFactory.create(
        campaign=ours.campaign,
        user=user,
        sequence=2,
        allowance=3,
        issued_at=timezone.now() - timedelta(days=30),
        expires_at=timezone.now() - timedelta(days=1),
    )

    # when we ask for the user's offers
    response = ours.client.get("/api/v1/users/u-private/offers/")

    # then only open offers we may see come back, by pseudonymous id, with no personal field anywhere
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u-private"
    assert {offer["code"] for offer in body["offers"]} == {mine.code, honoured.code, joined.code}
    assert not any(value in response.content.decode() for value in PERSONAL_VALUES)
    assert set(body) == {"user_id", "offers"}


def test_the_offers_answer_shows_each_open_offer_as_the_offer_serializer_would(ours, theirs):
    # given offers of every visibility, one with a deal-free trial and one with a percentage
    user = personal_user(ours.partner)
    joined_campaign = CampaignFactory.create(owner=theirs.partner)
    joined_campaign.partners.add(ours.partner)
    offers = [
        OfferFactory.create(campaign=ours.campaign, user=user, amount_off=Decimal("20")),
        OfferFactory.create(
            campaign=joined_campaign,
            user=user,
            kind="free_viewing",
            amount_off=None,
            days=7,
            partner=theirs.partner,
            expires_at=timezone.now() + timedelta(days=3),
        ),
        OfferFactory.create(
            campaign=CampaignFactory.create(owner=theirs.partner),
            user=user,
            partner=ours.partner,
            amount_off=None,
            percent_off=Decimal("12.5"),
        ),
    ]

    # when we ask for them
    body = ours.client.get("/api/v1/users/u-private/offers/").json()

    # then the hand-written hot path says exactly what the serializer over the ORM's offers says
    from campaigns.api.users import OpenOfferSerializer
    from campaigns.selectors import offer_list_open_for_user

    expected = OpenOfferSerializer(offer_list_open_for_user(partner=ours.partner, user=user), many=True).data
    assert body["offers"] == [dict(offer) for offer in expected]
    assert [offer["code"] for offer in body["offers"]] == [
        offers[1].code,
        offers[0].code,
        offers[2].code,
    ]  # soonest first


def test_recommendations_follow_the_users_interest_and_what_the_partner_can_offer(ours, theirs):
    # given a user who shares data, watched economics films at the video partner and viewed a history course
    user = personal_user(ours.partner, data_sharing_consent=True)
    economics_film = FilmFactory.create(partner=theirs.partner, external_id="F-ECO", category="economics")
    for n in range(3):
        BehaviorEventFactory.create(
            partner=theirs.partner, user=user, kind="film_watch", item_id=economics_film.external_id, event_id=f"w{n}"
        )
    history_course = CourseFactory.create(partner=ours.partner, sku="HIS-101", category="history")
    BehaviorEventFactory.create(partner=ours.partner, user=user, kind="course_view", item_id=history_course.sku)
    bought = CourseFactory.create(partner=ours.partner, sku="ECO-100", category="economics")
    BehaviorEventFactory.create(
        partner=ours.partner, user=user, kind="course_purchase", item_id=bought.sku, amount="99.00"
    )
    economics_course = CourseFactory.create(partner=ours.partner, sku="ECO-101", category="economics", title="Markets")
    CourseFactory.create(partner=ours.partner, sku="PRG-101", category="programming")
    CourseFactory.create(partner=ours.partner, sku="ECO-OFF", category="economics", is_active=False)
    CourseFactory.create(partner=theirs.partner, sku="ECO-THEIRS", category="economics")  # not ours to offer

    # when the knowledge partner asks what to recommend
    response = ours.client.get("/api/v1/users/u-private/recommendations/")

    # then its economics course comes first (3 watches + 1 purchase), then the history course it already
    # has a view of; the bought course, the inactive one and other categories are left out
    assert response.status_code == 200
    items = response.json()["recommendations"]
    assert [(item["kind"], item["item_id"]) for item in items] == [
        ("course", economics_course.sku),
        ("course", history_course.sku),
    ]
    assert items[0]["score"] == pytest.approx(6 / 7, abs=1e-4) and items[0]["partner"] == "zhixue"
    assert not any(value in response.content.decode() for value in PERSONAL_VALUES)


def test_recommendations_use_only_the_partners_own_events_without_data_sharing_consent(ours, theirs):
    # given a user of ours who does not share data, with film interest only at the other partner
    user = personal_user(ours.partner, data_sharing_consent=False)
    FilmFactory.create(partner=theirs.partner, external_id="F-ECO", category="economics")
    BehaviorEventFactory.create(partner=theirs.partner, user=user, kind="film_watch", item_id="F-ECO")
    CourseFactory.create(partner=ours.partner, sku="ECO-101", category="economics")
    # then their behaviour elsewhere does not reach us
    assert ours.client.get("/api/v1/users/u-private/recommendations/").json()["recommendations"] == []


def test_recommended_films_are_within_their_licence_and_promoted_by_the_partners_running_campaigns(ours, theirs):
    user = personal_user(theirs.partner, data_sharing_consent=True)
    UserLinkFactory.create(user=user, partner=ours.partner)
    CourseFactory.create(partner=ours.partner, sku="ECO-101", category="economics")
    BehaviorEventFactory.create(partner=ours.partner, user=user, kind="course_purchase", item_id="ECO-101")
    licensed = FilmFactory.create(partner=theirs.partner, external_id="F-IN", category="economics")
    expired = FilmFactory.create(
        partner=theirs.partner,
        external_id="F-OUT",
        category="economics",
        licence_end=timezone.now() - timedelta(days=1),
        licence_start=timezone.now() - timedelta(days=100),
    )
    FilmFactory.create(partner=theirs.partner, external_id="F-UNPROMOTED", category="economics")
    ours.campaign.promoted_films.add(licensed, expired)
    items = ours.client.get(f"/api/v1/users/{user.external_id}/recommendations/?limit=5").json()["recommendations"]
    assert [(item["kind"], item["item_id"], item["partner"]) for item in items] == [("film", "F-IN", "yingshi")]


def test_recommendation_limit_is_validated(ours):
    response = ours.client.get(f"/api/v1/users/{ours.user.external_id}/recommendations/?limit=0")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "limit"


@pytest.fixture
def erasable(ours):
    """Our user with personal data, behaviour, scores, an open and a redeemed offer, a conversion and an arm."""
    user = personal_user(ours.partner, marketing_consent=True, data_sharing_consent=True)
    for n in range(3):
        BehaviorEventFactory.create(partner=ours.partner, user=user, event_id=f"ev{n}")
    UserFeatures.objects.create(user=user, watching_count=3, built_at=timezone.now())
    ImportedBehavior.objects.create(user=user, watching_count=12, purchasing_count=6, extra={"city": "杭州"})
    run = ModelRun.objects.create(model="propensity", version=1, is_active=True, n_train=100)
    UserScore.objects.create(user=user, model="propensity", run=run, score=0.7, scored_at=timezone.now())
    campaign = CampaignFactory.create(owner=ours.partner, budget=Decimal("100.00"), spent=Decimal("40.00"))
    open_offer = OfferFactory.create(campaign=campaign, user=user, cost=Decimal("20.00"), sequence=0, allowance=2)
    redeemed_offer = OfferFactory.create(campaign=campaign, user=user, cost=Decimal("20.00"), sequence=1, allowance=2)
    entry = offer_redeem(
        code=redeemed_offer.code, partner=ours.partner, order_amount=Decimal("199.00"), idempotency_key="k-1"
    )
    conversion = Conversion.objects.create(
        partner=ours.partner,
        conversion_id="order-1",
        user=user,
        amount=Decimal("179.00"),
        occurred_at=timezone.now(),
        campaign=campaign,
    )
    CampaignAssignment.objects.create(campaign=campaign, user=user, arm="treatment")
    return user, campaign, open_offer, entry, conversion


def test_erasure_removes_personal_data_keeps_money_and_logs_who_did_it(ours, erasable):
    user, campaign, open_offer, entry, conversion = erasable

    # when the home partner erases the user
    response = ours.client.delete("/api/v1/users/u-private/")

    # then the answer says what was done
    assert response.status_code == 200, response.content
    assert response.json()["user_id"] == "u-private"
    assert response.json()["events_deleted"] == 3 and response.json()["offers_revoked"] == 1

    # and personal fields, consents and the pseudonymous id are gone from the database
    user.refresh_from_db()
    assert (user.age, user.education, user.occupation, user.gender, user.acquisition_channel, user.signed_up_at) == (
        None,
        "",
        "",
        "",
        "",
        None,
    )
    assert not user.marketing_consent and not user.data_sharing_consent and user.erased_at is not None
    assert user.external_id != "u-private" and not EndUser.objects.filter(external_id="u-private").exists()

    # and the behaviour profile is deleted, while trained models (aggregates) stay
    for model in (BehaviorEvent, UserFeatures, ImportedBehavior, UserScore):
        assert not model.objects.filter(user=user).exists(), model
    assert ModelRun.objects.filter(model="propensity").exists()

    # and the money records and the campaign arm survive, so settlements and reports still add up
    assert RedemptionEntry.objects.get(pk=entry.pk).order_amount == Decimal("199.00")
    assert Conversion.objects.get(pk=conversion.pk).amount == Decimal("179.00")
    assert CampaignAssignment.objects.filter(campaign=campaign, user=user, arm="treatment").exists()
    open_offer.refresh_from_db()
    assert open_offer.status == Offer.Status.REVOKED
    assert Campaign.objects.get(pk=campaign.pk).spent == Decimal("20.00")  # the open offer's reservation came back

    # and the audit log says who erased whom and when
    log = ErasureLogEntry.objects.get(user=user)
    assert (log.partner, log.pseudonymous_id, log.api_key_prefix) == (
        ours.partner,
        "u-private",
        ours.partner.api_keys.get().prefix,
    )
    assert log.erased_at == user.erased_at

    # and the user is gone for the API
    assert ours.client.get("/api/v1/users/u-private/offers/").status_code == 404
    assert ours.client.delete("/api/v1/users/u-private/").status_code == 404


def test_events_sent_for_an_erased_person_are_rejected_per_item_and_do_not_bring_them_back(ours, theirs, erasable):
    # given the home partner erased the person
    ours.client.delete("/api/v1/users/u-private/")

    def event(event_id, user_id):
        return {
            "event_id": event_id,
            "user_id": user_id,
            "kind": "film_watch",
            "occurred_at": "2026-03-01T20:00:00+08:00",
        }

    # when it sends events for the erased id beside events for someone else
    response = ours.client.post(
        "/api/v1/events/", {"events": [event("before", "u-new"), event("after", "u-private")]}, format="json"
    )

    # then only the erased person's item is rejected, by index, with the reason
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [(item["index"], item["field"]) for item in body["rejected"]] == [(1, "user_id")]
    assert "this person was erased" in body["rejected"][0]["message"]
    # and nobody is created under that id at this partner
    assert not EndUser.objects.filter(external_id="u-private").exists()
    assert not BehaviorEvent.objects.filter(event_id="after").exists()

    # while the same string from another partner is that partner's own (new, consent-less) user
    theirs.client.post("/api/v1/events/", {"events": [event("theirs-1", "u-private")]}, format="json")
    newcomer = EndUser.objects.get(external_id="u-private")
    assert newcomer.home_partner == theirs.partner and newcomer.pk != erasable[0].pk
    assert newcomer.erased_at is None and not newcomer.marketing_consent and newcomer.age is None


def test_erasure_log_is_read_only_in_the_admin(ours, erasable, admin_client):
    ours.client.delete("/api/v1/users/u-private/")
    model_admin = admin_site._registry[ErasureLogEntry]
    request = type("Request", (), {"user": None})()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request) and not model_admin.has_delete_permission(request)
    page = admin_client.get("/admin/analytics/erasurelogentry/")
    assert page.status_code == 200 and "u-private" in page.content.decode()


def test_another_partner_cannot_erase_even_a_shared_user(ours, theirs, erasable):
    response = theirs.client.delete("/api/v1/users/u-private/")
    assert response.status_code == 404
    assert EndUser.objects.get(pk=erasable[0].pk).erased_at is None
    assert not ErasureLogEntry.objects.exists()


def test_reading_offers_costs_the_same_few_queries_however_many_offers_there_are(ours, django_assert_num_queries):
    for sequence in range(1, 6):
        OfferFactory.create(campaign=ours.campaign, user=ours.user, sequence=sequence, allowance=6)
    ours.client.get("/api/v1/deals/")  # the key's last use is now recorded, as it is for a busy partner
    # the key, the user, the offers with their campaign, partner and deal
    with django_assert_num_queries(3):
        response = ours.client.get(f"/api/v1/users/{ours.user.external_id}/offers/")
    assert len(response.json()["offers"]) == 6
