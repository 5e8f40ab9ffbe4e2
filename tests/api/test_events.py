"""POST events/: a partner's batch is stored once, bad items are named by index, bad bodies get a clear 4xx."""

import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser, UserScore
from analytics.services.partner_events import MAX_EVENTS_PER_REQUEST
from campaigns.api.events import EVENTS_MAX_BODY_BYTES
from tests.api.hostile_values import TIMES_OUTSIDE_THE_WINDOW

from .conftest import error_fields

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


def event(n: int, **fields) -> dict:
    item = {
        "event_id": f"e{n:05d}",
        "user_id": f"u{n % 1000:04d}",
        "kind": "film_watch",
        "item_id": "F00042",
        "amount": "0",
        "occurred_at": "2026-03-01T20:00:00+08:00",
    }
    item.update(fields)
    return item


def post(client, body):
    return client.post(URL, body, format="json")


def test_a_full_batch_is_accepted_and_sending_it_again_adds_nothing(ours):
    # given a batch of the largest size the endpoint takes
    batch = {"events": [event(n) for n in range(MAX_EVENTS_PER_REQUEST)]}

    # when it is sent
    first = post(ours.client, batch)

    # then every event is stored, as the calling partner's, with the users first seen in it
    assert first.status_code == 200, first.content
    assert first.json() == {"accepted": MAX_EVENTS_PER_REQUEST, "duplicates": 0, "rejected": []}
    assert BehaviorEvent.objects.filter(partner=ours.partner).count() == MAX_EVENTS_PER_REQUEST
    assert EndUser.objects.filter(home_partner=ours.partner, external_id__startswith="u").count() == 1000

    # when the same batch is sent again (a retry after a timeout)
    again = post(ours.client, batch)

    # then nothing is added and every event is counted as a duplicate
    assert again.json() == {"accepted": 0, "duplicates": MAX_EVENTS_PER_REQUEST, "rejected": []}
    assert BehaviorEvent.objects.filter(partner=ours.partner).count() == MAX_EVENTS_PER_REQUEST


def test_a_batch_partly_sent_before_or_naming_an_event_twice_stores_each_new_event_once(ours):
    # given 30 events already stored
    assert post(ours.client, {"events": [event(n) for n in range(30)]}).json()["accepted"] == 30

    # when a batch repeats 10 of them, brings 20 new ones and names one new event twice
    batch = [event(n) for n in range(20, 50)] + [event(45)]
    response = post(ours.client, {"events": batch})

    # then only the new events are stored, once each, the first time they appear
    assert response.json() == {"accepted": 20, "duplicates": 11, "rejected": []}
    assert BehaviorEvent.objects.filter(partner=ours.partner).count() == 50
    assert BehaviorEvent.objects.get(partner=ours.partner, event_id="e00045").item_id == "F00042"


def test_a_batch_with_bad_items_reports_exactly_those_indexes_and_stores_the_rest(ours):
    # given a batch of 20 where some items are wrong in different ways
    bad = {
        2: event(2, event_id=""),
        5: event(5, amount="-5.00"),
        7: event(7, kind="teleport"),
        9: event(9, occurred_at="yesterday"),
        11: event(11, amount=19.9),
        13: "not an event",
        15: event(15, user_id=12345),
        17: event(17, occurred_at=(timezone.now() + timedelta(days=30)).isoformat()),
        19: event(19, item_id="x" * 65),
    }
    items = [bad.get(n, event(n)) for n in range(20)]

    # when it is sent
    response = post(ours.client, {"events": items})

    # then exactly the bad indexes are reported, each with its field, and the good items are stored
    assert response.status_code == 200
    body = response.json()
    assert [(item["index"], item["field"]) for item in body["rejected"]] == [
        (2, "event_id"),
        (5, "amount"),
        (7, "kind"),
        (9, "occurred_at"),
        (11, "amount"),
        (13, None),
        (15, "user_id"),
        (17, "occurred_at"),
        (19, "item_id"),
    ]
    assert all(item["message"] for item in body["rejected"])
    assert body["accepted"] == 20 - len(bad) and body["duplicates"] == 0
    stored = set(BehaviorEvent.objects.values_list("event_id", flat=True))
    assert stored == {f"e{n:05d}" for n in range(20) if n not in bad}


def test_amounts_are_stored_exactly_and_naive_times_read_in_shanghai(ours):
    post(
        ours.client, {"events": [event(1, kind="course_purchase", amount="199.90", occurred_at="2026-03-02 10:00:00")]}
    )
    stored = BehaviorEvent.objects.get(event_id="e00001")
    assert stored.amount == Decimal("199.90")
    assert stored.occurred_at.isoformat() == "2026-03-02T02:00:00+00:00"


def test_text_the_database_cannot_store_is_rejected_per_item_not_a_500(ours):
    # a NUL character and a lone surrogate, both valid JSON escapes
    body = json.dumps({"events": [event(0, user_id="a\x00b"), event(1, kind="\ud800")]})
    response = ours.client.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 200
    assert [(item["index"], item["field"]) for item in response.json()["rejected"]] == [(0, "user_id"), (1, "kind")]


def test_a_batch_larger_than_the_limit_is_413_and_stores_nothing(ours):
    response = post(ours.client, {"events": [event(n) for n in range(MAX_EVENTS_PER_REQUEST + 1)]})
    assert response.status_code == 413
    assert error_fields(response) == [("events", "too_many_events")]
    assert str(MAX_EVENTS_PER_REQUEST) in response.json()["errors"][0]["message"]
    assert not BehaviorEvent.objects.exists()


def test_a_body_larger_than_the_limit_is_413_before_it_is_parsed(ours):
    body = json.dumps({"events": [event(0, item_id="x" * (EVENTS_MAX_BODY_BYTES + 1))]})
    response = ours.client.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 413
    assert error_fields(response) == [(None, "too_large")]


@pytest.mark.parametrize(
    "body, content_type, status, fields",
    [
        ("{not json", "application/json", 400, [(None, "parse_error")]),
        ("", "application/json", 400, [("events", "required")]),
        ('{"events": NaN}', "application/json", 400, [(None, "parse_error")]),
        ("[" * 100_000, "application/json", 400, [(None, "parse_error")]),
        ('[{"event_id": "e1"}]', "application/json", 400, [(None, "invalid")]),
        ('{"events": {"event_id": "e1"}}', "application/json", 400, [("events", "not_a_list")]),
        ('{"events": []}', "application/json", 400, [("events", "min_length")]),
        ("event_id,user_id\ne1,u1", "text/csv", 415, [(None, "unsupported_media_type")]),
    ],
    ids=["broken json", "empty body", "NaN", "deep nesting", "bare array", "events not an array", "empty batch", "csv"],
)
def test_a_body_that_is_not_a_batch_is_a_clear_4xx(ours, body, content_type, status, fields):
    response = ours.client.generic("POST", URL, body, content_type=content_type)
    assert response.status_code == status, response.content
    assert error_fields(response) == fields
    assert not BehaviorEvent.objects.exists()


# --- bounds: values the database or NumPy cannot hold never get in (issue 14, items 2, 3, 7, 12) ---


def rejected_by_index(response) -> dict[int, tuple[str, str]]:
    return {item["index"]: (item["field"], item["message"]) for item in response.json()["rejected"]}


def test_an_amount_above_the_business_ceiling_is_rejected_per_item_with_the_ceiling(ours):
    # given two events with an amount the money column holds but whose sum overflows it, and a good one
    items = [
        event(0, kind="course_purchase", amount="999999999999.99"),
        event(1, kind="course_purchase", amount="999999999999.99"),
        event(2, kind="course_purchase", amount="1000000.00"),
    ]

    # when they are sent
    response = post(ours.client, {"events": items})

    # then the two are rejected by index, naming the field and the ceiling, and the one at the ceiling is stored
    assert response.status_code == 200
    rejected = rejected_by_index(response)
    assert set(rejected) == {0, 1}
    assert all(field == "amount" and "1000000.00" in message for field, message in rejected.values())
    assert list(BehaviorEvent.objects.values_list("amount", flat=True)) == [Decimal("1000000.00")]


@pytest.mark.parametrize(
    "occurred_at",
    [*TIMES_OUTSIDE_THE_WINDOW, "1989-12-31T15:59:59Z"],
)
def test_a_time_outside_the_plausible_window_is_rejected_with_the_window(ours, occurred_at):
    # when an event is sent with a time no partner's record can have
    response = post(ours.client, {"events": [event(0, occurred_at=occurred_at), event(1)]})

    # then it is refused as out of the window, which the message names, not as unreadable; the other is stored
    field, message = rejected_by_index(response)[0]
    assert field == "occurred_at"
    assert "not an ISO 8601" not in message and "1990-01-01" in message, message
    assert "outside the accepted window" in message, message
    assert list(BehaviorEvent.objects.values_list("event_id", flat=True)) == ["e00001"]


def test_the_first_moment_of_the_window_is_accepted(ours):
    # 1990-01-01 00:00 in Shanghai (the CDNOW sample, from 1997, imports well inside it)
    response = post(ours.client, {"events": [event(0, occurred_at="1990-01-01T00:00:00+08:00")]})
    assert response.json()["accepted"] == 1, response.content


@pytest.mark.parametrize("amount", ["1,50", "1,000.00", "1.000,50"])
def test_a_comma_in_an_amount_is_refused_not_read_as_thousands(ours, amount):
    # when an amount is written with a decimal comma
    response = post(ours.client, {"events": [event(0, kind="course_purchase", amount=amount)]})

    # then it is refused, saying commas are not accepted, and nothing is stored (it was once stored as 150.00)
    field, message = rejected_by_index(response)[0]
    assert field == "amount" and "comma" in message, message
    assert not BehaviorEvent.objects.exists()


def test_a_decimal_comma_message_says_how_to_write_it(ours):
    response = post(ours.client, {"events": [event(0, kind="course_purchase", amount="1,50")]})
    assert '"1.50"' in rejected_by_index(response)[0][1]


def test_an_event_id_repeated_in_a_batch_with_other_content_is_rejected(ours):
    # given a batch that names e00001 twice with different amounts, and e00002 twice identically
    items = [
        event(1, kind="course_purchase", amount="10.00"),
        event(2),
        event(1, kind="course_purchase", amount="99.00"),
        event(2),
    ]

    # when it is sent
    response = post(ours.client, {"events": items})

    # then the conflicting repeat is rejected, naming the first index; the identical one is a duplicate
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    field, message = rejected_by_index(response)[2]
    assert field == "event_id" and "index 0" in message and "amount" in message, message
    assert BehaviorEvent.objects.get(event_id="e00001").amount == Decimal("10.00")


@pytest.mark.slow
def test_hostile_amounts_and_times_cannot_stop_feature_building_or_scoring(ours):
    # given 60 users with ordinary behaviour, and the values of the report sent among them
    now = timezone.now()
    kinds = ["film_watch", "course_view", "course_purchase", "activity_join"]
    items = []
    for n in range(240):
        kind = kinds[(n * 7 + n // 60) % len(kinds)]
        items.append(
            event(
                n,
                user_id=f"h{n % 60:03d}",
                kind=kind,
                amount="99.00" if kind == "course_purchase" else "0",
                occurred_at=(now - timedelta(days=1 + (n * 13) % 300)).isoformat(),
            )
        )
    hostile = [
        event(1000, user_id="h000", kind="course_purchase", amount="999999999999.99"),
        event(1001, user_id="h000", kind="course_purchase", amount="999999999999.99"),
        event(1002, user_id="h001", occurred_at="1677-09-21T00:12:44Z"),
        event(1003, user_id="h002", kind="course_purchase", amount="1,50"),
        event(1004, user_id="h003", occurred_at="1900-01-01T00:00:00Z"),
    ]
    response = post(ours.client, {"events": items + hostile})

    # when features are built and users are segmented and scored
    call_command("build_features", "--full", stdout=io.StringIO())
    call_command("train", "--model", "segments", stdout=io.StringIO())
    call_command("score", "--model", "segments", "--no-progress", stdout=io.StringIO())

    # then the hostile items were refused by index, and every user got a segment
    assert [item["index"] for item in response.json()["rejected"]] == list(range(len(items), len(items) + 5))
    scored = UserScore.objects.filter(model="segments")
    assert scored.count() == EndUser.objects.count()
