"""Rules may name every user field analytics describes and a count per catalog category, counted from the events."""

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.selectors import user_frame
from campaigns.selectors.rule_fields import condition_registry, item_category_sources
from tests.factories import BehaviorEventFactory, CourseFactory, EndUserFactory, FilmFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def test_the_registry_holds_the_user_fields_but_raw_times_and_a_count_per_catalog_category():
    # given
    FilmFactory.create(category="history")
    CourseFactory.create(category="finance")

    # when
    registry = condition_registry()

    # then
    assert registry["propensity"].type == "number"
    assert registry["churn_risk"].allowed_values == ("low", "medium", "high")
    assert registry["marketing_consent"].type == "bool"
    assert "last_event_at" not in registry
    assert registry["watching_count_history"].description == "films watched in category history"
    assert registry["purchasing_count_finance"].description == "courses bought in category finance"


def test_per_category_counts_follow_the_catalog_the_campaigns_side_passes_in():
    # given: a user who watched two history films and bought one finance course (and one item not in the catalog)
    cinema, school = PartnerFactory.create(kind="video"), PartnerFactory.create()
    films = [FilmFactory.create(partner=cinema, category="history") for _ in range(2)]
    course = CourseFactory.create(partner=school, category="finance")
    user = EndUserFactory.create(home_partner=school)
    earlier = timezone.now() - timedelta(days=1)
    for film in films:
        BehaviorEventFactory.create(
            user=user, partner=cinema, kind="film_watch", item_id=film.external_id, occurred_at=earlier
        )
    BehaviorEventFactory.create(
        user=user, partner=school, kind="course_purchase", item_id=course.sku, occurred_at=earlier
    )
    BehaviorEventFactory.create(user=user, partner=cinema, kind="film_watch", item_id="unknown", occurred_at=earlier)
    fields = ["watching_count_history", "purchasing_count_finance", "watching_count_drama"]

    # when
    frame = user_frame(fields, as_of=timezone.now(), item_categories=item_category_sources())

    # then
    assert frame.loc[user.pk].to_dict() == {
        "watching_count_history": 2.0,
        "purchasing_count_finance": 1.0,
        "watching_count_drama": 0.0,
    }


def test_per_category_counts_without_a_catalog_are_refused():
    with pytest.raises(ValueError, match="item_categories"):
        user_frame(["watching_count_history"], as_of=timezone.now())
