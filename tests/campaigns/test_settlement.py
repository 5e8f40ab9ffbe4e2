"""Settlement of a deal's month: grants × price and the revenue share, netted to the fen; frozen once issued."""

import csv
import io
import json
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.models import BehaviorEvent
from campaigns.models import Deal, DealGrant, Direction, SettlementLine, SettlementStatement
from campaigns.selectors.settlement import (
    period_bounds,
    period_last_closed,
    period_parse,
    settlement_compute,
    settlement_get,
)
from campaigns.services.partners import partner_api_key_create
from campaigns.services.settlement import settlement_correct, settlement_issue
from crossmkt_site.errors import ApplicationError
from tests.api.conftest import client_with_key
from tests.factories import BehaviorEventFactory, DealFactory, EndUserFactory, PartnerFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOVEMBER = date(2026, 11, 1)
DECEMBER = date(2026, 12, 1)
AFTER_NOVEMBER = datetime(2026, 12, 15, 12, 0, tzinfo=SHANGHAI)


def at(day: int, hour: int = 12, minute: int = 0, month: int = 11, zone: ZoneInfo = SHANGHAI) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=zone)


def grant(deal: Deal, when: datetime, *, status: str = DealGrant.Status.CONFIRMED, user=None) -> DealGrant:
    """Record a grant of the deal triggered at ``when``, in the given saga state."""
    return DealGrant.objects.create(
        deal=deal,
        user=user or EndUserFactory.create(),
        triggered_at=when,
        status=status,
        amount=deal.settlement_price,
        reserved_at=when,
        confirmed_at=when if status == DealGrant.Status.CONFIRMED else None,
        compensated_at=when if status == DealGrant.Status.COMPENSATED else None,
    )


def spend(partner, user, amount: str, when: datetime) -> BehaviorEvent:
    return BehaviorEventFactory.create(
        partner=partner, user=user, kind=BehaviorEvent.Kind.MEMBERSHIP_START, amount=Decimal(amount), occurred_at=when
    )


@pytest.fixture
def deal() -> Deal:
    return DealFactory.create(
        slug="course-buy-video-month",
        settlement_price=Decimal("8.00"),
        revenue_share=Decimal("0.1500"),
        starts_at=at(1, 0, month=10),
        ends_at=at(1, 0, month=12) + timedelta(days=90),
    )


def test_grants_times_price_and_revenue_share_net_to_the_fen(deal):
    # given three grants confirmed in November, and others that must not be billed
    granted = [grant(deal, at(day)) for day in (3, 10, 20)]
    grant(deal, at(21), status=DealGrant.Status.RESERVED)
    compensated = grant(deal, at(22), status=DealGrant.Status.COMPENSATED)
    october = grant(deal, at(15, month=10))
    grant(deal, at(2, month=12))
    target, source = deal.target_partner, deal.source_partner
    # and spending at the target partner by granted users after their grant (October's user too) ...
    spend(target, granted[0].user, "100.05", at(4))
    spend(target, granted[1].user, "200.00", at(10, 13))
    spend(target, october.user, "33.32", at(1, 9))
    # ... but not before a grant, not at the source, not by ungranted or compensated users, not in December
    spend(target, granted[2].user, "999.00", at(19))
    spend(source, granted[0].user, "500.00", at(5))
    spend(target, EndUserFactory.create(), "700.00", at(6))
    spend(target, compensated.user, "50.00", at(23))
    spend(target, granted[0].user, "80.00", at(1, 0, month=12))

    sheet = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)

    statement = sheet.statement
    assert sheet.is_draft and statement.pk is None
    assert (statement.grants_count, statement.grants_amount) == (3, Decimal("24.00"))
    assert statement.revenue_base == Decimal("333.37")
    # 333.37 × 0.15 = 50.0055: rounded half-up once, on the month's total
    assert statement.revenue_share_amount == Decimal("50.01")
    assert (statement.net_amount, statement.net_direction) == (Decimal("26.01"), Direction.TARGET_TO_SOURCE)
    assert sheet.balance == (Decimal("26.01"), Direction.TARGET_TO_SOURCE)
    grants_line, share_line = sheet.lines
    assert (grants_line.quantity, grants_line.unit_amount, grants_line.amount) == (3, Decimal("8.00"), Decimal("24.00"))
    assert (share_line.quantity, share_line.unit_amount, share_line.amount) == (
        Decimal("333.37"),
        Decimal("0.1500"),
        Decimal("50.01"),
    )


def test_an_event_at_2359_shanghai_on_the_last_day_falls_in_that_month(deal):
    # given a grant and a purchase at 23:59 Shanghai time on 30 November, and a grant at midnight after it
    last_minute = at(30, 23, 59)
    first_minute = at(1, 0, 0, month=12)
    late_user = grant(deal, last_minute).user
    spend(deal.target_partner, late_user, "10.00", last_minute)
    grant(deal, first_minute)
    # (in UTC both are still 30 November: a month counted in UTC would put them together)
    assert last_minute.astimezone(ZoneInfo("UTC")).day == first_minute.astimezone(ZoneInfo("UTC")).day == 30

    november = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER).statement
    december = settlement_compute(deal=deal, period=DECEMBER, now=AFTER_NOVEMBER).statement

    assert (november.grants_count, november.revenue_base) == (1, Decimal("10.00"))
    assert (december.grants_count, december.revenue_base) == (1, Decimal("0.00"))
    assert period_bounds(NOVEMBER, SHANGHAI) == (at(1, 0), first_minute)


def test_the_month_is_counted_in_the_deals_own_time_zone(deal):
    # given a deal counted in UTC, with a grant at 00:30 Shanghai time on 1 December (16:30 UTC on 30 November)
    deal.timezone = ZoneInfo("UTC")
    deal.save()
    grant(deal, at(1, 0, 30, month=12))

    november = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER).statement

    assert november.grants_count == 1
    assert november.timezone == "UTC"


money = st.decimals(
    min_value=Decimal("0.00"), max_value=Decimal("99999.99"), places=2, allow_nan=False, allow_infinity=False
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    price=money,
    share=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4, allow_nan=False, allow_infinity=False),
    spending=st.lists(st.lists(money, max_size=3), max_size=4),
    ungranted=st.integers(min_value=0, max_value=2),
)
def test_totals_are_grants_times_price_and_the_share_of_revenue_to_the_fen(price, share, spending, ungranted):
    # given one confirmed grant per spending list, each user spending those amounts at the target after the grant
    deal = DealFactory.create(settlement_price=price, revenue_share=share, starts_at=at(1, 0, month=10))
    for amounts in spending:
        user = grant(deal, at(2)).user
        for amount in amounts:
            spend(deal.target_partner, user, str(amount), at(3))
    for _ in range(ungranted):
        grant(deal, at(4), status=DealGrant.Status.RESERVED)

    statement = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER).statement

    # then the grants are count × price exactly, and the share is of the exact total, rounded half-up once
    revenue = sum((amount for amounts in spending for amount in amounts), Decimal("0"))
    owed_back = (revenue * share).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert statement.grants_count == len(spending)
    assert statement.grants_amount == price * len(spending)
    assert statement.revenue_base == revenue
    assert statement.revenue_share_amount == owed_back
    signed = price * len(spending) - owed_back
    assert statement.net_amount == abs(signed)
    assert statement.net_direction == (Direction.SOURCE_TO_TARGET if signed >= 0 else Direction.TARGET_TO_SOURCE)
    for value in (statement.grants_amount, statement.revenue_share_amount, statement.net_amount):
        assert isinstance(value, Decimal) and value == value.quantize(Decimal("0.01"))


def test_an_issued_statement_is_frozen_and_issuing_again_changes_nothing(deal):
    # given November with two confirmed grants and some spending, issued in December
    users = [grant(deal, at(day)).user for day in (5, 6)]
    spend(deal.target_partner, users[0], "120.00", at(7))
    sheet = settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER, issued_by="tester")
    statement = sheet.statement

    # when late data arrives for November and the month is issued again
    grant(deal, at(8))
    spend(deal.target_partner, users[1], "80.00", at(9))
    again = settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER + timedelta(days=1))

    # then the issued statement stayed as it was, while a fresh computation sees the new data
    assert again.statement.pk == statement.pk
    assert SettlementStatement.objects.count() == 1 and SettlementLine.objects.count() == 2
    statement.refresh_from_db()
    assert (statement.status, statement.grants_count, statement.revenue_base) == ("issued", 2, Decimal("120.00"))
    assert statement.issued_at == AFTER_NOVEMBER and statement.issued_by == "tester"
    fresh = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER).statement
    assert (fresh.grants_count, fresh.revenue_base) == (3, Decimal("200.00"))
    # and neither the statement nor its lines can be edited or deleted
    statement.net_amount = Decimal("0.00")
    with pytest.raises(ValueError, match="frozen"):
        statement.save()
    line = SettlementLine.objects.first()
    assert line is not None
    with pytest.raises(ValueError, match="append-only"):
        line.save()
    with pytest.raises(ValueError, match="append-only"):
        line.delete()


def test_late_data_is_booked_as_correction_lines_pointing_at_what_they_correct(deal):
    # given an issued November, then a grant confirmed late and a late purchase
    user = grant(deal, at(5)).user
    spend(deal.target_partner, user, "100.00", at(6))
    issued = settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)
    grants_line, share_line = issued.lines
    late = grant(deal, at(20), status=DealGrant.Status.RESERVED)
    DealGrant.objects.filter(pk=late.pk).update(status=DealGrant.Status.CONFIRMED, confirmed_at=AFTER_NOVEMBER)
    spend(deal.target_partner, user, "33.33", at(21))

    booked = settlement_correct(statement=issued.statement, now=AFTER_NOVEMBER, reason="late partner data")

    grant_fix, share_fix = booked
    assert (grant_fix.kind, grant_fix.corrects_id, grant_fix.quantity, grant_fix.amount) == (
        "correction",
        grants_line.pk,
        Decimal("1"),
        Decimal("8.00"),
    )
    assert grant_fix.direction == Direction.SOURCE_TO_TARGET and "late partner data" in grant_fix.description
    # 133.33 × 0.15 = 19.9995 → 20.00, of which 15.00 was issued: the correction brings it to the fresh figure
    assert (share_fix.corrects_id, share_fix.quantity, share_fix.amount) == (
        share_line.pk,
        Decimal("33.33"),
        Decimal("5.00"),
    )
    assert share_fix.direction == Direction.TARGET_TO_SOURCE
    statement = SettlementStatement.objects.get()
    assert statement.net_amount == Decimal("7.00") and statement.net_direction == Direction.TARGET_TO_SOURCE
    fresh = settlement_compute(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)
    corrected = settlement_get(deal=deal, period=NOVEMBER)
    assert not corrected.is_draft
    assert corrected.balance == fresh.balance == (Decimal("4.00"), Direction.TARGET_TO_SOURCE)
    # and correcting again without new data books nothing
    assert settlement_correct(statement=statement, now=AFTER_NOVEMBER) == []


def test_a_grant_compensated_after_issue_is_taken_back_by_a_negative_line(deal):
    # given an issued November with two grants
    first = grant(deal, at(5))
    grant(deal, at(6))
    issued = settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)
    assert issued.balance == (Decimal("16.00"), Direction.SOURCE_TO_TARGET)
    # when one of them is compensated afterwards
    DealGrant.objects.filter(pk=first.pk).update(status=DealGrant.Status.COMPENSATED, compensated_at=AFTER_NOVEMBER)

    (line,) = settlement_correct(statement=issued.statement, now=AFTER_NOVEMBER)

    assert (line.quantity, line.unit_amount, line.amount) == (Decimal("-1"), Decimal("8.00"), Decimal("-8.00"))
    assert line.corrects_id == issued.lines[0].pk
    assert settlement_get(deal=deal, period=NOVEMBER).balance == (Decimal("8.00"), Direction.SOURCE_TO_TARGET)


def test_a_month_is_issued_only_once_it_is_over_and_not_before_the_deal(deal):
    with pytest.raises(ApplicationError) as open_month:
        settlement_issue(deal=deal, period=NOVEMBER, now=at(30, 23, 59))
    assert (open_month.value.code, open_month.value.field) == ("period_open", "period")
    with pytest.raises(ApplicationError) as too_early:
        settlement_issue(deal=deal, period=date(2026, 9, 1), now=AFTER_NOVEMBER)
    assert too_early.value.field == "period"
    assert not SettlementStatement.objects.exists()


# The full-width digits are deliberate: a period typed with a Chinese input method is refused too.
@pytest.mark.parametrize(
    "value",
    ["2026-13", "2026-00", "2026-1", "26-11", "", "1999-12", "2026-11 ", "2026/11", "２０２６-11"],  # noqa: RUF001
)
def test_a_bad_period_is_refused_naming_the_field(value):
    with pytest.raises(ApplicationError) as error:
        period_parse(value)
    assert error.value.field == "period"


def test_last_closed_month_turns_over_at_midnight_in_the_zone():
    assert period_last_closed(zone=SHANGHAI, now=at(30, 23, 59)) == date(2026, 10, 1)
    assert period_last_closed(zone=SHANGHAI, now=at(1, 0, 0, month=12)) == NOVEMBER
    assert period_last_closed(zone=SHANGHAI, now=datetime(2027, 1, 5, tzinfo=SHANGHAI)) == date(2026, 12, 1)


@pytest.mark.postgres
def test_the_database_itself_refuses_to_change_an_issued_statement(deal):
    grant(deal, at(5))
    issued = settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)
    for sql in (
        f"UPDATE campaigns_settlementstatement SET grants_count = 0 WHERE id = {issued.statement.pk}",
        f"DELETE FROM campaigns_settlementline WHERE id = {issued.lines[0].pk}",
        f"UPDATE campaigns_settlementline SET amount = 0 WHERE id = {issued.lines[0].pk}",
    ):
        with pytest.raises(DatabaseError, match="frozen"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)


def test_the_database_checks_that_the_balance_is_the_difference(deal):
    with pytest.raises(DatabaseError), transaction.atomic():
        SettlementStatement.objects.create(
            deal=deal,
            period=NOVEMBER,
            timezone="Asia/Shanghai",
            period_start=at(1, 0),
            period_end=at(1, 0, month=12),
            source_partner=deal.source_partner,
            target_partner=deal.target_partner,
            grants_amount=Decimal("10.00"),
            revenue_share_amount=Decimal("3.00"),
            net_amount=Decimal("7.01"),
            net_direction=Direction.SOURCE_TO_TARGET,
        )


# --------------------------------------------------------------------------- the command


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("settlement", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def november_with_data(deal):
    user = grant(deal, at(5)).user
    grant(deal, at(6))
    spend(deal.target_partner, user, "100.00", at(7))
    return deal


def test_command_prints_a_draft_then_issues_and_exports_csv(november_with_data, time_machine_after_november):
    text = run_command("course-buy-video-month", "--period", "2026-11")
    assert "DRAFT" in text and "pays" in text
    assert not SettlementStatement.objects.exists()

    issued = json.loads(run_command("course-buy-video-month", "--period", "2026-11", "--issue", "--format", "json"))
    assert issued["status"] == "issued" and issued["draft"] is False
    assert issued["totals"]["grants_amount"] == "16.00" and issued["totals"]["revenue_share_amount"] == "15.00"
    assert issued["balance"] == {
        "amount": "1.00",
        "direction": "source_to_target",
        "payer": november_with_data.source_partner.slug,
        "payee": november_with_data.target_partner.slug,
    }

    rows = list(
        csv.DictReader(io.StringIO(run_command("course-buy-video-month", "--period", "2026-11", "--format", "csv")))
    )
    assert [row["kind"] for row in rows] == ["grants", "revenue_share", "balance"]
    assert [row["amount"] for row in rows] == ["16.00", "15.00", "1.00"]
    assert all(row["status"] == "issued" for row in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["no-such-deal", "--period", "2026-11"], "no deal 'no-such-deal'"),
        (["course-buy-video-month", "--period", "2026-13"], "period must be"),
        (["course-buy-video-month", "--period", "2026-11", "--correct"], "not issued yet"),
    ],
)
def test_command_errors_are_one_clear_line(deal, args, message):
    with pytest.raises(CommandError, match=message) as error:
        run_command(*args)
    assert "\n" not in str(error.value)


@pytest.fixture
def time_machine_after_november(monkeypatch):
    """Make "now" a day in December 2026, so November is over."""
    from django.utils import timezone as django_timezone

    monkeypatch.setattr(django_timezone, "now", lambda: AFTER_NOVEMBER.astimezone(ZoneInfo("UTC")))


# --------------------------------------------------------------------------- the API


def test_api_shows_a_draft_clearly_marked_then_the_issued_statement_to_both_partners(november_with_data):
    deal = november_with_data
    source = client_with_key(partner_api_key_create(partner=deal.source_partner)[1])
    target = client_with_key(partner_api_key_create(partner=deal.target_partner)[1])
    url = f"/api/v1/deals/{deal.slug}/settlement/?period=2026-11"

    draft = source.get(url).json()
    assert (draft["status"], draft["draft"]) == ("draft", True) and draft["note"].startswith("draft")
    assert [line["line"] for line in draft["lines"]] == [None, None]

    settlement_issue(deal=deal, period=NOVEMBER, now=AFTER_NOVEMBER)
    for client in (source, target):
        issued = client.get(url).json()
        assert (issued["status"], issued["draft"]) == ("issued", False)
        assert issued["balance"]["amount"] == "1.00" and issued["totals"]["grants"] == 2
        assert issued["period_start"] == "2026-11-01T00:00:00+08:00" and issued["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("query", ["?period=2026-13", "?period=November", "", "?period="])
def test_api_refuses_a_bad_period_naming_it(deal, query):
    client = client_with_key(partner_api_key_create(partner=deal.source_partner)[1])
    response = client.get(f"/api/v1/deals/{deal.slug}/settlement/{query}")
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["period"]


def test_api_hides_the_deal_from_a_partner_who_is_not_a_side_of_it(deal):
    stranger = client_with_key(partner_api_key_create(partner=PartnerFactory.create())[1])
    assert stranger.get(f"/api/v1/deals/{deal.slug}/settlement/?period=2026-11").status_code == 404


# --------------------------------------------------------------------------- the admin


def test_admin_issues_last_month_and_exports_statements_as_csv(
    time_machine_after_november, manager_client, november_with_data
):
    deal = november_with_data
    response = manager_client.post(
        reverse("admin:campaigns_deal_changelist"),
        {"action": "issue_last_month_settlement", "_selected_action": [deal.pk]},
    )
    assert response.status_code == 302
    statement = SettlementStatement.objects.get()
    assert (statement.period, statement.issued_by) == (NOVEMBER, "admin:manager")

    export = manager_client.post(
        reverse("admin:campaigns_settlementstatement_changelist"),
        {"action": "export_csv", "_selected_action": [statement.pk]},
    )
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [row["amount"] for row in rows] == ["16.00", "15.00", "1.00"]
    page = manager_client.get(reverse("admin:campaigns_settlementstatement_change", args=[statement.pk]))
    assert page.status_code == 200 and "16.00" in page.content.decode()
