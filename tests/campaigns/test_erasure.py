"""Erasure sticks: no copy of an erased id survives in outcomes or stored payloads, and the id cannot come back."""

import io
import json
from datetime import timedelta
from decimal import Decimal
from importlib import import_module

import pandas as pd
import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser, ErasedIdentity, ErasureLogEntry, ExperimentOutcome
from analytics.services.ingest import Rejection
from analytics.services.suppression import ERASED_REASON, staged_without_erased
from campaigns.models import Campaign, Deal, Partner, Rule, WebhookDelivery
from campaigns.services.deals import deal_evaluate
from campaigns.services.erasure import user_erase
from campaigns.services.webhooks import webhook_offers_issued
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    CourseFactory,
    DealFactory,
    EndUserFactory,
    OfferFactory,
    PartnerFactory,
    RuleFactory,
    UserLinkFactory,
    end_users_of,
)

pytestmark = pytest.mark.django_db

ERASED = "this person was erased"
LISTENER_URL = "https://hooks.partner.example/in"


@pytest.fixture
def zhixue():
    return PartnerFactory.create(slug="zhixue", kind=Partner.Kind.KNOWLEDGE)


@pytest.fixture
def yingshi():
    partner = PartnerFactory.create(slug="yingshi", kind=Partner.Kind.VIDEO)
    # Set without the save-time check (no DNS in tests); nothing is sent, the deliveries stay pending.
    Partner.objects.filter(pk=partner.pk).update(webhook_url=LISTENER_URL)
    partner.refresh_from_db()
    return partner


def run(command, *args) -> str:
    out = io.StringIO()
    call_command(command, *args, "--no-progress", stdout=out)
    return out.getvalue()


def write(tmp_path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def stored_text() -> str:
    """Every stored webhook payload, as text."""
    return json.dumps(list(WebhookDelivery.objects.values_list("payload", flat=True)), ensure_ascii=False)


def test_outcomes_of_an_erased_person_keep_arm_and_revenue_under_a_pseudonym_and_cannot_be_imported_again(
    tmp_path, zhixue
):
    # given an outside experiment that includes a person zhixue later erases
    EndUserFactory.create(external_id="u-gone", home_partner=zhixue)
    end_users_of(zhixue, ["u-stays", "u-other"])
    outcomes = write(
        tmp_path,
        "outcomes.csv",
        [
            "user_id,arm,converted,revenue",
            "u-gone,coupon,1,120.00",
            "u-stays,coupon,0,0",
            "u-other,holdout,1,80.00",
        ],
    )
    run("import_outcomes", outcomes, "--campaign", "partner-test-q3", "--partner", "zhixue")
    totals = dict(ExperimentOutcome.objects.values_list("arm").annotate(Sum("revenue")))

    # when the home partner erases the person
    user_erase(partner=zhixue, external_id="u-gone")

    # then no outcome row carries the id, while the arm, conversion and revenue stay as an anonymous row
    assert not ExperimentOutcome.objects.filter(user_ref="u-gone").exists()
    assert ExperimentOutcome.objects.count() == 3
    assert dict(ExperimentOutcome.objects.values_list("arm").annotate(Sum("revenue"))) == totals
    anonymous = ExperimentOutcome.objects.exclude(user_ref__in=["u-stays", "u-other"]).get()
    assert (anonymous.arm, anonymous.converted, anonymous.revenue) == ("coupon", True, Decimal("120.00"))

    # and importing the same file again rejects the erased person's line with the reason, and only that line
    out = run("import_outcomes", outcomes, "--campaign", "partner-test-q3", "--partner", "zhixue")
    assert "0 outcomes imported, 2 duplicates skipped, 1 rejected" in out
    assert f"line 2: user_id: {ERASED}" in out
    assert not ExperimentOutcome.objects.filter(user_ref="u-gone").exists()


def test_stored_webhook_payloads_no_longer_carry_an_erased_persons_id(zhixue, yingshi):
    # given a person who shares data, told to yingshi in an issuance event and a deal grant, beside another person
    gone = EndUserFactory.create(external_id="u-gone", home_partner=zhixue, data_sharing_consent=True)
    other = EndUserFactory.create(external_id="u-other", home_partner=zhixue, data_sharing_consent=True)
    # linked to yingshi under the same ids (as sending their alliance ids would link them)
    for user in (gone, other):
        UserLinkFactory.create(user=user, partner=yingshi)
    campaign = CampaignFactory.create(owner=yingshi)
    rule = RuleFactory.create(campaign=campaign, offer_kind=Rule.OfferKind.COUPON)
    now = timezone.now()
    codes = ["GONECODE0001", "OTHERCODE001"]
    for user, code in zip((gone, other), codes, strict=True):
        OfferFactory.create(campaign=campaign, user=user, rule=rule, code=code, issued_at=now)
    webhook_offers_issued(
        campaign=campaign,
        rules=[rule],
        user_ids=[gone.pk, other.pk],
        rule_indexes=[0, 0],
        codes=codes,
        stock=[None, None],
        issued_at=now,
        expires_at=now + timedelta(days=14),
    )
    course = CourseFactory.create(partner=zhixue, sku="ECON101")
    deal = DealFactory.create(
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        starts_at=now - timedelta(days=10),
        ends_at=now + timedelta(days=20),
    )
    deal.trigger_courses.add(course)
    for user in (gone, other):
        BehaviorEventFactory.create(
            user=user,
            partner=zhixue,
            kind=BehaviorEvent.Kind.COURSE_PURCHASE,
            item_id="ECON101",
            amount=Decimal("199.00"),
            occurred_at=now - timedelta(days=1),
        )
    deal_evaluate(deal_id=deal.pk)
    assert "u-gone" in stored_text()
    issued = WebhookDelivery.objects.get(event_type=WebhookDelivery.Event.OFFERS_ISSUED)
    granted = WebhookDelivery.objects.get(event_type=WebhookDelivery.Event.DEAL_GRANTED)

    # when zhixue erases the person
    user_erase(partner=zhixue, external_id="u-gone")

    # then no stored payload holds the id; the person's items keep their place under the row's pseudonym
    assert "u-gone" not in stored_text()
    pseudonym = EndUser.objects.get(pk=gone.pk).external_id
    issued.refresh_from_db()
    granted.refresh_from_db()
    assert [(item["code"], item["user_id"]) for item in issued.payload["offers"]] == [
        ("GONECODE0001", pseudonym),
        ("OTHERCODE001", "u-other"),
    ]
    assert sorted(grant["user_id"] for grant in granted.payload["grants"]) == sorted([pseudonym, "u-other"])
    # and the deliveries are otherwise as they were (counts and money still add up)
    assert issued.payload["campaign"] == campaign.slug and len(granted.payload["grants"]) == 2


def test_a_behaviour_row_of_an_erased_person_is_rejected_by_line_and_does_not_bring_them_back(tmp_path, zhixue):
    # given a person imported from the per-user table with both consents, then erased by their home partner
    header = "user_id,watching_count,purchasing_count,age,education,occupation,purchased_course,marketing_consent,"
    header += "data_sharing_consent"
    table = write(
        tmp_path, "behaviour.csv", [header, "u-gone,15,7,25,本科,工程师,1,1,1", "u-stays,3,0,41,硕士,教师,0,1,1"]
    )
    run("import_behavior", table)
    user_erase(partner=zhixue, external_id="u-gone")

    # when the same table is imported again
    out = run("import_behavior", table)

    # then the erased person's line is rejected with the reason and nobody is created under their id
    assert "0 users imported, 1 duplicates skipped, 1 rejected" in out
    assert f"line 2: user_id: {ERASED}" in out
    assert not EndUser.objects.filter(external_id="u-gone").exists()
    assert not EndUser.objects.filter(marketing_consent=True).exclude(external_id="u-stays").exists()


def test_events_of_an_erased_person_are_rejected_by_line_in_an_events_file(tmp_path, zhixue):
    EndUserFactory.create(external_id="u-gone", home_partner=zhixue)
    user_erase(partner=zhixue, external_id="u-gone")
    events = write(
        tmp_path,
        "events.csv",
        [
            "event_id,user_id,partner,kind,item_id,amount,occurred_at",
            "e1,u-gone,zhixue,course_view,C1,0,2026-03-02T10:00:00Z",
            "e2,u-new,zhixue,course_view,C1,0,2026-03-02T10:00:00Z",
        ],
    )

    out = run("import_events", events)

    assert "1 events imported, 0 duplicates skipped, 1 rejected" in out
    assert f"line 2: user_id: {ERASED}" in out
    assert not EndUser.objects.filter(external_id="u-gone").exists()
    assert list(BehaviorEvent.objects.values_list("event_id", flat=True)) == ["e2"]


def test_the_suppression_list_keeps_a_keyed_hash_of_partner_and_id_not_the_id(zhixue, admin_user):
    gone = EndUserFactory.create(external_id="u-gone", home_partner=zhixue)
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(EndUser),
        object_id=str(gone.pk),
        object_repr=str(gone),
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Age"]}}]',
    )

    user_erase(partner=zhixue, external_id="u-gone")

    entry = ErasedIdentity.objects.get()
    assert entry.partner == zhixue and len(entry.digest) == 64
    assert "u-gone" not in entry.digest and "u-gone" not in str(entry)
    # and the admin's history of the row no longer names the person
    assert LogEntry.objects.get().object_repr == EndUser.objects.get(pk=gone.pk).external_id != "u-gone"


def test_people_erased_before_the_list_existed_are_suppressed_and_pseudonymised_by_the_migrations(zhixue, yingshi):
    # given a person erased by the earlier code: random id on the row, log entry, but the old id left behind
    gone = EndUserFactory.create(external_id="erased-0a1b2c", home_partner=zhixue, data_sharing_consent=False)
    ErasureLogEntry.objects.create(user=gone, pseudonymous_id="u-gone", partner=zhixue, erased_at=timezone.now())
    campaign = CampaignFactory.create(owner=yingshi, kind=Campaign.Kind.EXTERNAL)
    ExperimentOutcome.objects.create(campaign=campaign, user_ref="u-gone", arm="coupon", converted=True, revenue=9)
    OfferFactory.create(campaign=campaign, user=gone, code="GONECODE0001")
    items = [{"code": "GONECODE0001", "user_id": "u-gone"}, {"code": "OTHERCODE001", "user_id": "u-gone"}]
    WebhookDelivery.objects.create(
        partner=yingshi,
        event_type=WebhookDelivery.Event.OFFERS_ISSUED,
        payload={"campaign": campaign.slug, "offers": items},
    )

    # when the migrations' data steps run
    import_module("analytics.migrations.0010_erased_identity").suppress_erased_before(apps, None)
    import_module("campaigns.migrations.0010_erased_ids_out_of_webhook_payloads").pseudonymise_payloads_of_erased_users(
        apps, None
    )

    # then the person is on the list, and their outcome and their own payload item carry the row's random id
    assert ErasedIdentity.objects.get().partner == zhixue
    assert ExperimentOutcome.objects.get().user_ref == "erased-0a1b2c"
    offers = WebhookDelivery.objects.get().payload["offers"]
    # (the other code is not theirs: a newer person under the same string is left alone)
    assert [item["user_id"] for item in offers] == ["erased-0a1b2c", "u-gone"]
    assert staged_without_erased(
        pd.DataFrame({"position": [2], "partner_id": [zhixue.pk], "user_ext": ["u-gone"]}), partner_column="partner_id"
    )[1] == [Rejection(2, "user_id", ERASED_REASON)]
