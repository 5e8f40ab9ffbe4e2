"""Movie tickets and trial codes come from partners' pools: one item per offer, never shared, returned when unused."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from campaigns.models import Offer, Partner, Rule, StockItem
from campaigns.services.campaign_run import campaign_issue_chunk, campaign_run
from campaigns.services.offers import offer_expire_due, offer_revoke
from campaigns.services.redemption import offer_redeem
from campaigns.tasks import expire_offers
from tests.campaigns.test_concurrency import run_in_processes
from tests.factories import CampaignFactory, EndUserFactory, PartnerFactory, RuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def cinema():
    return PartnerFactory.create(slug="wanda", kind=Partner.Kind.CINEMA)


def tickets(partner, count, *, days=60, prefix="T", kind="movie_ticket"):
    expires_at = timezone.now() + timedelta(days=days)
    return StockItem.objects.bulk_create(
        StockItem(
            partner=partner, kind=kind, code=f"{prefix}{n:04d}", face_value=Decimal("45.00"), expires_at=expires_at
        )
        for n in range(count)
    )


def ticket_campaign(cinema, users, **kwargs):
    """A campaign giving every reachable user a free movie ticket honoured by the cinema, 10 CNY each."""
    owner = kwargs.pop("owner", None) or PartnerFactory.create()
    for _ in range(users):
        EndUserFactory.create(home_partner=owner)
    campaign = CampaignFactory.create(owner=owner, holdout_share=Decimal("0"), budget=Decimal("10000.00"), **kwargs)
    RuleFactory.create(
        campaign=campaign,
        condition={},
        offer_kind=Rule.OfferKind.MOVIE_TICKET,
        benefit_partner=cinema,
        amount_off=None,
        cost=Decimal("10.00"),
    )
    return campaign


def test_each_ticket_offer_takes_its_own_item_and_none_is_issued_without_one(cinema):
    # given five users and three tickets in the cinema's pool
    campaign = ticket_campaign(cinema, users=5)
    tickets(cinema, 3)

    # when the campaign runs
    result = campaign_run(campaign=campaign)

    # then three offers are issued, each with its own ticket, and the two without one are counted as clamped
    offers = Offer.objects.filter(campaign=campaign)
    assert (result["issued"], result["clamped"], offers.count()) == (3, 2, 3)
    assert StockItem.objects.filter(status="assigned", offer__in=offers).count() == 3
    campaign.refresh_from_db()
    # each issued ticket holds its code's 45 CNY (more than the rule's 10), none for offers never issued
    assert campaign.spent == Decimal("135.00")

    # and once more tickets are loaded, a new run reaches the two users left out
    tickets(cinema, 2, prefix="U")
    again = campaign_run(campaign=campaign)
    assert again["issued"] == 2 and offers.count() == 5
    assert StockItem.objects.filter(status="assigned").count() == 5


def test_tickets_expiring_before_the_offer_are_not_handed_out_and_the_soonest_valid_goes_first(cinema):
    campaign = ticket_campaign(cinema, users=1)  # offers valid for 14 days
    tickets(cinema, 1, days=3, prefix="SHORT")
    tickets(cinema, 1, days=90, prefix="LATE")
    tickets(cinema, 1, days=30, prefix="SOON")

    campaign_run(campaign=campaign)

    assert StockItem.objects.get(status="assigned").code == "SOON0000"


def test_a_rule_without_a_benefit_partner_needs_no_stock(cinema):
    campaign = ticket_campaign(cinema, users=2)
    Rule.objects.filter(campaign=campaign).update(benefit_partner=None)

    assert campaign_run(campaign=campaign)["issued"] == 2
    assert not StockItem.objects.exists()


def test_unused_tickets_return_to_the_pool_when_offers_are_revoked_or_expire(cinema):
    # given four issued ticket offers, one ticket of which runs out sooner than the offers
    campaign = ticket_campaign(cinema, users=4)
    tickets(cinema, 3, days=60)
    tickets(cinema, 1, days=20, prefix="EARLY")
    campaign_run(campaign=campaign)
    by_code: dict[str, Offer] = {}
    for item in StockItem.objects.select_related("offer"):
        assert item.offer is not None  # four tickets for four users: every one went out
        by_code[item.code] = item.offer
    early_offer = by_code["EARLY0000"]
    others = [offer for code, offer in by_code.items() if code != "EARLY0000"]
    revoked, redeemed, expiring = others

    # when one offer is revoked, one redeemed, and the rest expire 30 days on (past the early ticket's own date)
    offer_revoke(code=revoked.code)
    offer_redeem(code=redeemed.code, partner=cinema, order_amount=Decimal("0.00"))
    assert offer_expire_due(now=timezone.now() + timedelta(days=30)) == 2

    # then the revoked and expired offers' tickets are back in the pool, the used one stays, the stale one expired
    items = {item.code: item for item in StockItem.objects.all()}
    status = {item.offer_id if item.status == "assigned" else item.code: item.status for item in items.values()}
    assert status[redeemed.pk] == "assigned"
    back = [item for item in items.values() if item.status == "returned"]
    assert len(back) == 2 and all(item.offer_id is None and item.returned_at for item in back)
    assert items["EARLY0000"].status == "expired" and items["EARLY0000"].offer_id == early_offer.pk
    assert Offer.objects.get(pk=expiring.pk).status == "expired"

    # and the returned tickets go to the next offers that need one
    other = ticket_campaign(cinema, users=0, owner=campaign.owner)
    assert campaign_run(campaign=other)["issued"] == 2
    assert StockItem.objects.filter(status="assigned", offer__campaign=other).count() == 2


def test_pool_items_past_their_date_expire_on_schedule_and_are_never_handed_out(cinema):
    # given two tickets already past their date and one still good
    tickets(cinema, 2, days=-1, prefix="OLD")
    tickets(cinema, 1, days=60, prefix="OK")

    # when the periodic expiry runs, and then a campaign wants three tickets
    assert expire_offers.delay().get()["stock_expired"] == 2
    result = campaign_run(campaign=ticket_campaign(cinema, users=3))

    # then only the good ticket is handed out
    assert result["issued"] == 1
    assert dict(StockItem.objects.values_list("code", "status")) == {
        "OLD0000": "expired",
        "OLD0001": "expired",
        "OK0000": "assigned",
    }


def test_a_stock_file_loads_all_or_nothing(cinema, tmp_path):
    good = tmp_path / "tickets.csv"
    good.write_text("code,value,expires_at\nW-1,45.00,2099-12-31\nW-2,45,2099-12-31T20:00:00+08:00\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("code,value,expires_at\nW-3,45.00,2099-12-31\nW-3,abc,2001-01-01\n,1,soon\n", encoding="utf-8")

    call_command("load_stock", "wanda", str(good), "--kind", "movie_ticket")
    call_command("load_stock", "wanda", str(good), "--kind", "movie_ticket")  # loading again adds nothing
    with pytest.raises(CommandError) as refused:
        call_command("load_stock", "wanda", str(bad), "--kind", "movie_ticket")

    assert sorted(StockItem.objects.values_list("code", flat=True)) == ["W-1", "W-2"]
    message = str(refused.value)
    assert "nothing loaded" in message
    for problem in (
        "line 3: code: 'W-3' already on line 2",
        "line 3: value",
        "line 3: expires_at: already past",
        "line 4: code: missing",
        "line 4: expires_at: not an ISO 8601",
    ):
        assert problem in message
    end_of_day = StockItem.objects.get(code="W-1").expires_at.astimezone(timezone.get_default_timezone())
    assert (end_of_day.date().isoformat(), end_of_day.hour) == ("2099-12-31", 23)


def issue_in_random_order(campaign_id, seed):
    from campaigns.services.campaign_planning import campaign_chunks

    chunks = campaign_chunks(chunk_users=10)
    random.Random(seed).shuffle(chunks)
    return sum(campaign_issue_chunk(campaign_id=campaign_id, id_range=chunk).issued for chunk in chunks)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_two_offers_share_a_ticket_when_many_issuers_draw_on_one_pool(cinema, report_line):
    # given three campaigns that each want a ticket for all 40 users, and 50 tickets between them
    owner = PartnerFactory.create()
    users = [EndUserFactory.create(home_partner=owner) for _ in range(40)]
    campaigns = [ticket_campaign(cinema, users=0, owner=owner) for _ in range(3)]
    tickets(cinema, 50)

    # when six processes (two per campaign) issue at the same time, chunk by chunk in different orders
    outcomes = run_in_processes(issue_in_random_order, [(c.pk, seed) for seed, c in enumerate(campaigns * 2)])

    # then every ticket offer holds exactly one ticket, no ticket is held twice, and the pool was not overdrawn
    offers = Offer.objects.filter(kind="movie_ticket")
    assigned = StockItem.objects.filter(status="assigned")
    assert offers.count() == assigned.count() == sum(issued for _, issued in outcomes) <= 50
    assert set(assigned.values_list("offer_id", flat=True)) == set(offers.values_list("pk", flat=True))
    assert offers.count() >= 40  # skipped locks may leave a few tickets for a later run, but not most of them
    for campaign in campaigns:
        assert (
            offers.filter(campaign=campaign).values("user").distinct().count()
            == offers.filter(campaign=campaign).count()
        )
    assert len(users) == 40
    report_line(
        f"stock pool of 50 tickets shared by 3 campaigns and 6 issuers: {offers.count()} offers, no ticket twice"
    )


def test_a_nul_byte_in_a_stock_file_is_named_by_line_and_column(cinema, tmp_path):
    # given a stock file with a NUL byte in one code (PostgreSQL refuses NUL in text)
    bad = tmp_path / "bad.csv"
    bad.write_text("code,value,expires_at\nW-1,45.00,2099-12-31\nW-\x002,45.00,2099-12-31\n", encoding="utf-8")

    with pytest.raises(CommandError, match="line 3: code: contains a NUL byte"):
        call_command("load_stock", "wanda", str(bad), "--kind", "movie_ticket")

    assert not StockItem.objects.exists()
