"""The bounds at the door are configurable, and a ceiling the money column cannot hold is refused."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from crossmkt_site.bounds import event_time_problem, max_amount, money_parse, money_problem

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_defaults_admit_the_ceiling_and_the_window_and_nothing_beyond():
    assert money_parse("1000000.00") == Decimal("1000000.00")
    assert money_problem("1000000.01") == "above the largest amount accepted, 1000000.00: 1000000.01"
    assert event_time_problem(datetime(1997, 1, 1, tzinfo=UTC), now=NOW) is None
    assert event_time_problem(NOW + timedelta(hours=23), now=NOW) is None
    assert "in the future" in str(event_time_problem(NOW + timedelta(days=2), now=NOW))
    assert "too early" in str(event_time_problem(datetime(1989, 12, 31, tzinfo=UTC), now=NOW))


@override_settings(
    CROSSMKT_MAX_AMOUNT="50000",
    CROSSMKT_EARLIEST_EVENT_TIME=datetime(2020, 1, 1, tzinfo=UTC),
    CROSSMKT_FUTURE_TOLERANCE=timedelta(hours=2),
)
def test_the_ceiling_and_the_window_follow_the_settings():
    assert money_problem("50000.00") is None
    assert "50000.00" in str(money_problem("50000.01"))
    problem = str(event_time_problem(datetime(2019, 12, 31, tzinfo=UTC), now=NOW))
    assert "2020-01-01T08:00:00+08:00 to 2026-12-06T22:00:00+08:00 (now plus 2 hours)" in problem
    assert str(event_time_problem(NOW + timedelta(hours=3), now=NOW)).startswith("in the future")


@pytest.mark.parametrize("ceiling", ["1000000000000.00", "0"])
def test_a_ceiling_the_money_column_cannot_hold_is_a_configuration_error(ceiling):
    with override_settings(CROSSMKT_MAX_AMOUNT=ceiling), pytest.raises(ImproperlyConfigured, match="money column"):
        max_amount()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1,50", 'decimal commas are not accepted: write "1.50", not "1,50"'),
        ("12,000", "commas are not accepted in amounts"),
        ("-1.00", "negative amount: -1.00"),
        ("1.005", "not an amount in CNY with at most two decimals: 1.005"),
        ("1e3", "not an amount in CNY with at most two decimals: 1e3"),
        ("١٢", "not a number: '١٢'"),
    ],
)
def test_money_text_is_refused_with_what_is_wrong(text, problem):
    assert (money_problem(text) or "").startswith(problem)
    with pytest.raises(ValueError, match=re.escape(problem)):
        money_parse(text)
