"""The identity-per-partner migration's data step: nothing lost, unconsented use split off, consented use linked."""

from decimal import Decimal
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.db import connection
from django.db.models import Sum

from analytics.models import BehaviorEvent, Conversion, EndUser, UserFeatures, UserLink
from analytics.services.features import features_build
from tests.factories import BehaviorEventFactory, EndUserFactory, PartnerFactory

pytestmark = pytest.mark.django_db

migration = import_module("analytics.migrations.0014_split_unconsented_cross_partner_users")


def test_events_sent_without_consent_move_to_a_user_of_the_sender_and_consented_use_becomes_a_link(capsys):
    # given, as before identities were per partner, events a partner sent for another partner's users
    home, sender = PartnerFactory.create(slug="zhixue"), PartnerFactory.create(slug="yingshi")
    private = EndUserFactory.create(external_id="u1", home_partner=home, data_sharing_consent=False)
    sharing = EndUserFactory.create(external_id="u2", home_partner=home, data_sharing_consent=True)
    for user in (private, sharing):
        BehaviorEventFactory.create(partner=home, user=user, kind="course_purchase", amount=Decimal("10.00"))
        BehaviorEventFactory.create_batch(2, partner=sender, user=user, kind="course_purchase", amount=Decimal("5"))
    Conversion.objects.create(
        partner=sender, conversion_id="c1", user=private, amount=Decimal("7.00"), occurred_at=private.created_at
    )
    features_build(full=True)
    total = BehaviorEvent.objects.aggregate(total=Sum("amount"))["total"]

    # when the migration's data step runs
    migration.forward(None, SimpleNamespace(connection=connection))

    # then the unconsented use is a user of the sender's with its events and conversion, the consented one a link
    split = EndUser.objects.get(home_partner=sender, external_id="u1")
    assert (split.marketing_consent, split.data_sharing_consent) == (False, False)
    assert set(split.events.values_list("partner_id", flat=True)) == {sender.pk} and split.events.count() == 2
    assert list(split.conversions.values_list("conversion_id", flat=True)) == ["c1"]
    assert list(private.events.values_list("partner_id", flat=True)) == [home.pk]
    made = UserLink.objects.get()
    assert (made.user, made.partner, made.external_id, made.via) == (sharing, sender, "u2", "migration")
    assert sharing.events.count() == 3
    # nothing is lost, stale features are gone until the next (full) build, and the migration says what it did
    assert BehaviorEvent.objects.count() == 6
    assert BehaviorEvent.objects.aggregate(total=Sum("amount"))["total"] == total
    assert not UserFeatures.objects.exists()
    said = capsys.readouterr().out
    assert "1 consented cross-partner uses became links; 1 users created" in said
    assert "2 events and 1 conversions moved" in said


def test_running_the_data_step_on_per_partner_data_changes_nothing(capsys):
    home = PartnerFactory.create()
    user = EndUserFactory.create(home_partner=home)
    BehaviorEventFactory.create(partner=home, user=user)
    migration.forward(None, SimpleNamespace(connection=connection))
    assert EndUser.objects.count() == 1 and not UserLink.objects.exists()
    assert capsys.readouterr().out == ""
