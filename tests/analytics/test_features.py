"""Features built from events are what an analyst would count by hand, and stay right incrementally."""

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from analytics.models import UserFeatures
from analytics.services.features import features_build, features_frame_as_of
from tests.factories import BehaviorEventFactory, EndUserFactory, PartnerFactory

pytestmark = pytest.mark.django_db
SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(day, hour=12):
    return datetime(2026, 3, day, hour, tzinfo=SHANGHAI)


@pytest.fixture
def user_with_history():
    partner = PartnerFactory.create()
    user = EndUserFactory.create(home_partner=partner)
    for day in (1, 2, 3):
        BehaviorEventFactory.create(user=user, partner=partner, kind="film_watch", occurred_at=at(day))
    # two purchases on one Shanghai day (23:30 and 00:10 UTC of different UTC days) count as one purchase day
    BehaviorEventFactory.create(
        user=user, partner=partner, kind="course_purchase", amount=Decimal("99.00"), occurred_at=at(4, 8)
    )
    BehaviorEventFactory.create(
        user=user, partner=partner, kind="course_purchase", amount=Decimal("0.50"), occurred_at=at(4, 23)
    )
    BehaviorEventFactory.create(
        user=user, partner=partner, kind="course_purchase", amount=Decimal("199.00"), occurred_at=at(9)
    )
    BehaviorEventFactory.create(user=user, partner=partner, kind="activity_join", occurred_at=at(5))
    BehaviorEventFactory.create(user=user, partner=partner, kind="offer_redeem", occurred_at=at(9))
    return user, partner


def test_features_count_what_happened(user_with_history):
    user, _ = user_with_history
    assert features_build(full=True) == 1
    f = UserFeatures.objects.get(user=user)
    assert (f.watching_count, f.purchasing_count, f.purchase_days) == (3, 3, 2)
    assert f.total_spend == Decimal("298.50")
    assert (f.activity_count, f.discounts_received) == (1, 1)
    assert f.first_purchase_at == at(4, 8) and f.last_purchase_at == at(9)
    assert f.first_event_at == at(1) and f.last_event_at == at(9)


def test_incremental_build_touches_only_users_with_new_events(user_with_history):
    user, partner = user_with_history
    other = EndUserFactory.create(home_partner=partner)
    BehaviorEventFactory.create(user=other, partner=partner, kind="film_watch", occurred_at=at(1))
    assert features_build() == 2
    # nothing new: nothing rebuilt
    assert features_build() == 0
    BehaviorEventFactory.create(user=user, partner=partner, kind="film_watch", occurred_at=at(10))
    assert features_build() == 1
    assert UserFeatures.objects.get(user=user).watching_count == 4
    assert UserFeatures.objects.get(user=other).watching_count == 1


def test_features_as_of_an_earlier_date_ignore_later_events(user_with_history):
    frame = features_frame_as_of(as_of=at(6)).set_index("user_id")
    row = frame.loc[user_with_history[0].pk]
    assert (row.watching_count, row.purchasing_count, row.purchase_days) == (3, 2, 1)


def test_a_total_spend_beyond_the_money_column_is_capped_not_an_overflow_for_everyone(user_with_history):
    # given a user whose stored purchases sum past what the money column holds (rows stored before the
    # amount ceiling existed, or a million purchases at the ceiling), and another user
    user, partner = user_with_history
    big = EndUserFactory.create(home_partner=partner)
    for day in (1, 2):
        BehaviorEventFactory.create(
            user=big, partner=partner, kind="course_purchase", amount=Decimal("999999999999.99"), occurred_at=at(day)
        )

    # when features are built for everyone
    features_build(full=True)

    # then the build completes: the big spender's total stops at the column's largest value, the other's is exact
    assert UserFeatures.objects.get(user=big).total_spend == Decimal("999999999999.99")
    assert UserFeatures.objects.get(user=user).total_spend == Decimal("298.50")
