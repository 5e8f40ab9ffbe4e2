"""The admin dashboard: KPI cards and server-drawn charts, in bounded queries, seen in a real headless Chromium."""

import re
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from campaigns.dashboard import charts
from campaigns.models import Campaign, CampaignAssignment, Deal, DealGrant, Offer
from campaigns.reports.campaign_report import campaign_report
from campaigns.selectors.settlement import period_bounds, period_last_closed
from campaigns.services.settlement import settlement_issue
from conftest import ROOT, skip_or_fail
from tests.factories import CampaignFactory, DealFactory, PartnerFactory, RuleFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches out of this machine or depends on a GPU or a large /dev/shm.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2600",
]


def build_campaign(
    name: str,
    *,
    users: int = 200,
    treated_rate: float = 0.3,
    holdout_rate: float = 0.15,
    seed: int = 0,
    ended_days_ago: int | None = None,
):
    """Run a small experiment: half treated with an offer, half held out; purchases and cancellations after it.

    With ``ended_days_ago`` the campaign ended that many days ago, after a month.
    """
    rng = np.random.default_rng(seed)
    owner = PartnerFactory.create()
    ended = {}
    if ended_days_ago is not None:
        ended = {
            "status": Campaign.Status.ENDED,
            "starts_at": timezone.now() - timedelta(days=ended_days_ago + 30),
            "ends_at": timezone.now() - timedelta(days=ended_days_ago),
        }
    campaign = CampaignFactory.create(
        **{
            "name": name,
            "owner": owner,
            "holdout_share": Decimal("0.500"),
            "budget": Decimal("2000.00"),
            "starts_at": timezone.now() - timedelta(days=20),
        }
        | ended
    )
    rule = RuleFactory.create(campaign=campaign, condition={})
    people = EndUser.objects.bulk_create(
        EndUser(external_id=f"{campaign.slug}-{i}", home_partner=owner, marketing_consent=True) for i in range(users)
    )
    arms = ["treatment" if i % 2 else "holdout" for i in range(users)]
    CampaignAssignment.objects.bulk_create(
        CampaignAssignment(campaign=campaign, user=user, arm=arm, rule=rule)
        for user, arm in zip(people, arms, strict=True)
    )
    assigned_at = timezone.now() - timedelta(days=18)
    CampaignAssignment.objects.filter(campaign=campaign).update(assigned_at=assigned_at)
    offers = Offer.objects.bulk_create(
        Offer(
            campaign=campaign,
            rule=rule,
            user=user,
            kind="coupon",
            amount_off=Decimal("20.00"),
            cost=Decimal("2.50"),
            issued_at=assigned_at + timedelta(days=i % 5),
            expires_at=assigned_at + timedelta(days=30),
        )
        for i, (user, arm) in enumerate(zip(people, arms, strict=True))
        if arm == "treatment"
    )
    Offer.objects.filter(pk__in=[offer.pk for offer in offers[:10]]).update(status=Offer.Status.REDEEMED)
    campaign.spent = Decimal("2.50") * len(offers)
    campaign.issued_count = len(offers)
    campaign.save()
    treated = np.array(arms) == "treatment"
    buys = rng.random(users) < np.where(treated, treated_rate, holdout_rate)
    cancels = rng.random(users) < np.where(treated, 0.2, 0.4)
    events = [
        BehaviorEvent(
            partner=owner,
            event_id=f"{campaign.slug}-p{i}",
            user=user,
            kind="course_purchase",
            item_id="C1",
            amount=Decimal("99.00"),
            occurred_at=assigned_at + timedelta(days=1 + i % 7),
        )
        for i, (user, buy) in enumerate(zip(people, buys, strict=True))
        if buy
    ]
    events += [
        BehaviorEvent(
            partner=owner,
            event_id=f"{campaign.slug}-c{i}",
            user=user,
            kind="membership_cancel",
            occurred_at=assigned_at + timedelta(days=1 + i % 15),
        )
        for i, (user, cancel) in enumerate(zip(people, cancels, strict=True))
        if cancel
    ]
    BehaviorEvent.objects.bulk_create(events)
    return campaign


def build_deal(slug: str, *, grants: int, spent: str) -> Deal:
    """A deal with confirmed grants in the last finished month and spending of the first user at the target."""
    period = period_last_closed(zone=SHANGHAI)
    start, _end = period_bounds(period, SHANGHAI)
    deal = DealFactory.create(
        slug=slug,
        status=Deal.Status.ACTIVE,
        settlement_price=Decimal("8.00"),
        revenue_share=Decimal("0.2000"),
        starts_at=start - timedelta(days=40),
    )
    people = EndUser.objects.bulk_create(
        EndUser(external_id=f"{slug}-{i}", home_partner=deal.source_partner) for i in range(grants)
    )
    when = start + timedelta(days=2)
    DealGrant.objects.bulk_create(
        DealGrant(
            deal=deal,
            user=user,
            triggered_at=when,
            status=DealGrant.Status.CONFIRMED,
            amount=deal.settlement_price,
            reserved_at=when,
            confirmed_at=when,
        )
        for user in people
    )
    BehaviorEvent.objects.create(
        partner=deal.target_partner,
        event_id=f"{slug}-spend",
        user=people[0],
        kind="membership_start",
        amount=Decimal(spent),
        occurred_at=when + timedelta(hours=1),
    )
    return deal


@pytest.fixture
def world(db):
    campaigns = [build_campaign("经济学与电影", seed=1), build_campaign("Coding drama <b>bold</b>", seed=2)]
    deals = [
        build_deal("course-buy-video-month", grants=5, spent="100.00"),
        build_deal("doc-week", grants=2, spent="500.00"),
    ]
    return campaigns, deals


def found(pattern: str, text: str) -> re.Match[str]:
    """Return the first match of a pattern the text must contain."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found"
    return match


def svg_charts(page: str) -> list[str]:
    return re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S)


def cards_of(page: str) -> dict[str, str]:
    return dict(
        re.findall(r'data-kpi="([\w-]+)">\s*<h3>.*?</h3>\s*<div class="kpi-value">(.*?)</div>', page, flags=re.S)
    )


def scopes_of(page: str) -> dict[str, str]:
    """Return each card row's scope heading, by row."""
    return dict(re.findall(r'data-scope="(\w+)">\s*<h2 class="kpi-scope">(.*?)</h2>', page, flags=re.S))


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_dashboard_shows_kpis_and_charts_with_data(manager_client, world, language):
    manager_client.cookies["django_language"] = language

    response = manager_client.get(reverse("admin-dashboard"))

    assert response.status_code == 200
    page = response.content.decode()
    assert f'lang="{language}"' in page
    cards = cards_of(page)
    # every figure of the first row is over the two running campaigns, and the row says so
    assert cards["running-campaigns"] == "2"
    assert cards["running-offers"] == "200 / 20"
    assert cards["running-budget"] == "500.00 / 4,000.00"
    assert cards["ended-campaigns"] == "0"
    assert set(scopes_of(page)) == {"running", "ended", "settlement"}
    if language == "en":
        assert scopes_of(page)["running"].startswith("Running now")
    drawn = svg_charts(page)
    # two uplift charts and the balances, then funnel, retention, budget and experiment statistics per campaign
    assert [found(r'data-chart="(\w+)"', svg).group(1) for svg in drawn] == [
        "interval",
        "interval",
        "bar",
        "bar",
        "step",
        "line",
        "interval",
        "bar",
        "step",
        "line",
        "interval",
    ]
    # running campaigns: the interval a manager may check daily, unadjusted and CUPED-adjusted per arm
    if language == "en":
        assert "always-valid interval" in found(r"<title>(.*?)</title>", drawn[6]).group(1)
        assert "safe to check daily" in drawn[6]
        assert "CUPED" in drawn[6]
        title = found(r"<title>(.*?)</title>", drawn[0]).group(1)
        assert "always-valid intervals (mSPRT)" in title and "fixed-horizon" not in title
        assert len(re.findall(r", always-valid</title>", drawn[0])) == 2
    assert len(re.findall(r'class="interval"', drawn[0])) == 2
    assert all(re.search(r'data-value="[-0-9.]+"', svg) for svg in drawn)
    # a campaign's name is text, never markup
    assert "<b>bold</b>" not in page and "Coding drama &lt;b&gt;bold&lt;/b&gt;" in page


def test_the_uplift_chart_shows_the_interval_each_report_shows(manager_client, db):
    # given a running campaign (always-valid while it can still gain conversions) and one settled long ago
    running = build_campaign("Running", seed=1)
    settled = build_campaign("Settled", seed=2, ended_days_ago=30)
    manager_client.cookies["django_language"] = "en"

    page = manager_client.get(reverse("admin-dashboard")).content.decode()

    conversion, revenue = svg_charts(page)[:2]
    assert "intervals, kind per row" in found(r"<title>(.*?)</title>", conversion).group(1)
    assert "Each row names its interval" in conversion
    now = timezone.now()
    for campaign, kind in ((running, "always-valid"), (settled, "fixed-horizon")):
        report = campaign_report(campaign=campaign, now=now).to_dict()
        assert report["intervals"]["kind"] == kind
        comparison = report["uplift"]["comparisons"][0]
        if kind == "always-valid":
            shown = comparison["always_valid"]["conversion"]
            money = comparison["always_valid"]["revenue"]
            lower, upper = shown["lower"], shown["upper"]
            money_lower, money_upper = money["lower"], money["upper"]
        else:
            lower, upper = comparison["conversion"]["difference_lower"], comparison["conversion"]["difference_upper"]
            money_lower, money_upper = comparison["revenue"]["welch_lower"], comparison["revenue"]["welch_upper"]
        row = found(
            rf'<g class="interval"[^>]*data-lower="([-\d.e]+)" data-upper="([-\d.e]+)">\s*<title>{campaign.name}: ',
            conversion,
        )
        assert float(row.group(1)) == pytest.approx(lower) and float(row.group(2)) == pytest.approx(upper)
        assert found(rf"{campaign.name}: [^<]*, {kind}</title>", conversion)
        money_row = found(rf'data-lower="([-\d.]+)" data-upper="([-\d.]+)">\s*<title>{campaign.name}: ', revenue)
        assert (money_row.group(1), money_row.group(2)) == (str(money_lower), str(money_upper))


def test_the_campaigns_that_earned_most_are_shown_whatever_their_start(manager_client, db):
    # given one running campaign and five ended ones; the ones that ended last earned least, and one that bought its
    # margin with offers that cost more than it earned
    build_campaign("Running", seed=1)
    for name, effect, days in (("Best", 0.45, 20), ("Second", 0.35, 30), ("Third", 0.25, 10), ("Flat", 0.15, 2)):
        build_campaign(name, seed=3, treated_rate=effect, ended_days_ago=days)
    costly = build_campaign("Costly", seed=3, treated_rate=0.45, ended_days_ago=1)
    Offer.objects.filter(campaign=costly).update(spent=Decimal("60.00"))
    build_campaign("Long ago", seed=4, treated_rate=0.6, ended_days_ago=200)
    manager_client.cookies["django_language"] = "en"

    page = manager_client.get(reverse("admin-dashboard")).content.decode()

    # then the running one comes first, then the three ended ones that earned the most net of spend, best first,
    # then the one that lost the most
    panels = re.findall(
        r'<section class="campaign-panel module" id="campaign-[^"]+" data-campaign="[^"]+">\s*<h2>(.*?)</h2>', page
    )
    assert panels == [
        "Running (running)",
        "Best (ended, #1 of 5 by net return)",
        "Second (ended, #2 of 5 by net return)",
        "Third (ended, #3 of 5 by net return)",
        "Costly (ended, #5 of 5 by net return)",
    ]
    # and the table lists every campaign of the last 90 days, ranked the same way, and links to all of them
    listed = re.findall(r'<tr data-campaign="[^"]+" data-status="(\w+)">\s*<td><a href="[^"]+">(.*?)</a>', page)
    assert [name for _, name in listed] == ["Running", "Best", "Second", "Third", "Flat", "Costly"]
    nets = [Decimal(value.replace(",", "")) for value in re.findall(r"data-net>([-\d,.]+)</td>", page)]
    assert nets[1:] == sorted(nets[1:], reverse=True) and nets[-1] < 0
    # the costly campaign earned as much margin as the best, and lost money on it
    margins = [Decimal(value.replace(",", "")) for value in re.findall(r"data-margin>([-\d,.]+)", page)]
    assert margins[-1] == margins[1]
    assert "Long ago" not in page
    assert reverse("admin:campaigns_campaign_changelist") in page
    selection = found(r'<p class="selection">(.*?)<a', page).group(1)
    assert "every running campaign (1)" in selection and "the 3 of the 5 campaigns ended since" in selection
    assert "Then the one that lost the most." in selection
    # and the ended row's cards are over the five ended campaigns only
    assert cards_of(page)["ended-campaigns"] == "5" and cards_of(page)["running-campaigns"] == "1"


def test_the_funnel_narrows_step_by_step_and_says_why_it_has_no_delivered_step(manager_client, world):
    manager_client.cookies["django_language"] = "en"

    page = manager_client.get(reverse("admin-dashboard")).content.decode()

    funnel = svg_charts(page)[3]
    steps = [int(value) for value in re.findall(r'<rect class="bar"[^>]*data-value="(\d+)"', funnel)]
    labels = re.findall(r"<title>([^<]*?): ", funnel)
    assert labels == ["treated users", "got an offer", "used an offer", "used one and bought"]
    assert steps == sorted(steps, reverse=True) and steps[0] == 100 and steps[2] == 10
    assert "delivered" not in labels and "No delivered step" in funnel


def test_settlement_balances_net_across_deals_per_partner(manager_client, world):
    _campaigns, (first, second) = world
    # given the first deal's month issued, the second only computed
    settlement_issue(deal=first, period=period_last_closed(zone=SHANGHAI))

    manager_client.cookies["django_language"] = "en"
    page = manager_client.get(reverse("admin-dashboard")).content.decode()

    balances = svg_charts(page)[2]
    values = {label: Decimal(value) for value, label in re.findall(r'data-value="([-0-9.]+)"><title>(.*?): ', balances)}
    # 5 × 8.00 − 20% of 100.00 = 20.00 to the first target; 2 × 8.00 − 20% of 500.00 = −84.00 from the second
    assert values[first.target_partner.name] == Decimal("20.00")
    assert values[first.source_partner.name] == Decimal("-20.00")
    assert values[second.target_partner.name] == Decimal("-84.00")
    assert values[second.source_partner.name] == Decimal("84.00")
    assert sum(values.values()) == 0
    assert "statements issued: 1; drafts computed now: 1" in page
    # and the card says who owes whom, each direction on its own line, and each pair's net
    card = re.search(r'data-kpi="settlement">.*?</section>', page, flags=re.S)
    assert card is not None
    owes = re.findall(r"<li>(.*?)</li>", card.group(0))
    source, target = first.source_partner.name, first.target_partner.name
    assert f"{source} owes {target} 40.00 (grants 40.00)" in owes
    assert f"{target} owes {source} 20.00 (revenue share 20.00)" in owes
    source, target = second.source_partner.name, second.target_partner.name
    assert f"{target} owes {source} 100.00 (revenue share 100.00)" in owes
    assert f"{source} owes {target} 16.00 (grants 16.00)" in owes
    assert f"net: {first.source_partner.name} pays {first.target_partner.name} 20.00" in page
    assert f"net: {target} pays {source} 84.00" in page


def test_dashboard_queries_do_not_grow_with_deals_or_offers(manager_client, world):
    with CaptureQueriesContext(connection) as before:
        manager_client.get(reverse("admin-dashboard"))
    build_deal("more-1", grants=3, spent="10.00"), build_deal("more-2", grants=4, spent="20.00")
    build_campaign("另一个活动", seed=3, users=300)
    with CaptureQueriesContext(connection) as after:
        manager_client.get(reverse("admin-dashboard"))
    # one more campaign among the latest costs its report's queries once; deals and offers cost nothing more
    one_report = len(after) - len(before)
    assert 0 < one_report <= 12, [query["sql"][:120] for query in after.captured_queries]
    build_deal("more-3", grants=1, spent="1.00"), build_deal("more-4", grants=2, spent="2.00")
    with CaptureQueriesContext(connection) as more_deals:
        manager_client.get(reverse("admin-dashboard"))
    assert len(more_deals) == len(after)


def test_a_bad_month_falls_back_to_the_last_one_with_a_message(manager_client, world):
    response = manager_client.get(reverse("admin-dashboard"), {"period": "2026-13"})
    assert response.status_code == 200
    assert "period must be a calendar month" in response.content.decode().lower()


def test_admin_index_links_to_the_dashboard(manager_client):
    page = manager_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin-dashboard") in page


def test_the_dashboard_is_for_staff_only(client, django_user_model):
    assert client.get(reverse("admin-dashboard")).status_code == 302
    user = django_user_model.objects.create_user("partner", "p@example.com", "a-long-password-1", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin-dashboard")).status_code == 403


# --------------------------------------------------------------------------- the chart module


def test_bar_chart_draws_signed_bars_either_side_of_zero_and_escapes_labels():
    svg = charts.bar_chart(
        title="Balances <1>",
        bars=[charts.Bar("A&B", Decimal("20.00"), "+20.00"), charts.Bar("<C>", Decimal("-5.50"), "-5.50")],
        signed=True,
        empty="none",
    )
    assert "A&amp;B" in svg and "&lt;C&gt;" in svg and "<C>" not in svg and "Balances &lt;1&gt;" in svg
    bars = re.findall(
        r'<rect class="bar" x="([\d.]+)" y="[\d.]+" width="([\d.]+)".*?fill="(#\w+)" data-value="([-\d.]+)"', svg
    )
    (x_pos, width_pos, color_pos, value_pos), (x_neg, width_neg, color_neg, value_neg) = bars
    assert (value_pos, value_neg) == ("20.00", "-5.50")
    assert color_pos == charts.COLORS["positive"] and color_neg == charts.COLORS["negative"]
    # the negative bar ends where the positive one starts (the zero line), 20 : 5.5 in length
    assert float(x_neg) + float(width_neg) == pytest.approx(float(x_pos))
    assert float(width_pos) / float(width_neg) == pytest.approx(20 / 5.5, rel=1e-3)


def test_interval_chart_places_whiskers_around_the_point():
    svg = charts.interval_chart(
        title="Uplift", intervals=[charts.Interval("x", 0.05, 0.02, 0.08, "+5.0 pp")], axis_label="pp", empty="none"
    )
    group = found(r'<g class="interval" data-value="0.05" data-lower="0.02" data-upper="0.08">.*?</g>', svg).group(0)
    lower, upper = (float(v) for v in found(r'<line x1="([\d.]+)" x2="([\d.]+)"', group).groups())
    point = float(found(r'<circle cx="([\d.]+)"', group).group(1))
    assert lower < point < upper
    assert (point - lower) == pytest.approx(upper - point, abs=0.02)


def test_step_chart_thins_long_curves_and_keeps_the_last_value():
    times = list(range(5000))
    survival = [1 - t / 10000 for t in times]
    svg = charts.step_chart(
        title="KM",
        series=[charts.Series("treated", list(zip(times, survival, strict=True)))],
        x_label="days",
        y_label="share",
        empty="none",
    )
    path = found(r'<path class="curve" d="([^"]+)"[^>]*data-value="([\d.]+)" data-points="(\d+)"', svg)
    assert path.group(3) == "5000" and path.group(2) == "0.5001"
    assert path.group(1).count("H") == charts.MAX_POINTS - 1


def test_a_legend_too_long_for_one_row_wraps_and_keeps_every_key_above_the_plot():
    # given a Qini chart of three learners and random targeting, more keys than fit the dashboard's width
    labels = [f"{name}: AUUC 0.0123, Qini +0.0045" for name in ("t_learner", "x_learner", "transformed_outcome")]
    labels.append("random targeting")
    series = [charts.Series(label, [(0, 0), (50, 0.01), (100, 0.02)]) for label in labels]
    one_row = charts.line_chart(
        title="Qini", series=series[:1], x_ticks=[(0, "0%"), (100, "100%")], y_label="", empty="-"
    )

    # when it is drawn
    svg = charts.line_chart(title="Qini", series=series, x_ticks=[(0, "0%"), (100, "100%")], y_label="", empty="-")

    # then every key is drawn, none cut off
    assert len(re.findall(r'<line class="key"', svg)) == len(labels)
    for label in labels:
        assert f">{label}</text>" in svg
    # and the chart grows by the extra rows, the plot starting below the last one
    keys_y = sorted({float(y) for y in re.findall(r'<line class="key"[^>]* y1="([\d.]+)"', svg)})
    assert len(keys_y) >= 2
    height = float(found(r'viewBox="0 0 \d+ ([\d.]+)"', svg).group(1))
    assert height == float(found(r'viewBox="0 0 \d+ ([\d.]+)"', one_row).group(1)) + 16 * (len(keys_y) - 1)
    axis_top = min(float(y) for y in re.findall(r'<line x1="56" x2="56" y1="([\d.]+)"', svg))
    assert axis_top > keys_y[-1] + 8


def test_empty_charts_say_so_instead_of_drawing_nothing():
    for svg in (
        charts.bar_chart(title="t", bars=[], empty="nothing yet"),
        charts.step_chart(title="t", series=[], x_label="", y_label="", empty="nothing yet"),
        charts.line_chart(title="t", series=[], x_ticks=[], y_label="", empty="nothing yet"),
    ):
        assert "nothing yet" in svg and "data-value" not in svg


def test_notes_without_spaces_wrap_instead_of_being_cut():
    note = (
        "每行注明其区间类型，与该活动报告一致：在活动的最后转化计入之前（活动结束加转化窗口）为始终有效区间，"
        "之后为固定样本区间。"
    )
    svg = charts.interval_chart(
        title="t",
        intervals=[charts.Interval("x", 0.05, 0.02, 0.08, "+5.0 pp")],
        axis_label="pp",
        empty="-",
        notes=[note],
    )
    lines = re.findall(r'class="note"[^>]*>(.*?)</text>', svg)
    assert len(lines) > 1 and "".join(lines) == note


def test_nice_ticks_cover_the_range_in_round_steps():
    assert charts.nice_ticks(0, 87, 4) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(-0.013, 0.042, 4) == [-0.02, -0.01, 0.0, 0.01, 0.02, 0.03, 0.04, 0.05]


# --------------------------------------------------------------------------- a real browser


@pytest.fixture
def chromium(tmp_path):
    """Start Debian's headless Chromium through its chromedriver, with a fresh profile; yield the selenium driver."""
    driver_path = shutil.which("chromedriver")
    if not CHROMIUM.exists() or driver_path is None:
        skip_or_fail("needs Chromium and its driver: apt-get install chromium chromium-driver (.ci/run installs them)")
    try:
        from selenium import webdriver
    except ImportError:
        skip_or_fail("needs selenium: pip install -r requirements-dev.txt")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chromium_opens_the_dashboard_finds_the_charts_drawn_and_no_javascript_errors(
    chromium, live_server, world, manager, client
):
    # given a logged-in manager's session cookie in the browser
    client.force_login(manager)
    chromium.get(f"{live_server.url}/admin/login/")
    chromium.add_cookie(
        {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "path": "/"}
    )
    # The admin's own language, whatever the browser's Accept-Language says.
    chromium.add_cookie({"name": settings.LANGUAGE_COOKIE_NAME, "value": "zh-hans", "path": "/"})

    # when the manager opens the dashboard from the admin index
    chromium.get(f"{live_server.url}/admin/")
    chromium.find_element("css selector", "#crossmkt-dashboard-link a").click()

    # then every chart is drawn with its data, nothing failed to load or threw, and a screenshot is kept
    assert chromium.current_url.endswith(reverse("admin-dashboard"))
    drawn = chromium.execute_script("""
        return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
            const box = svg.getBoundingClientRect();
            return {kind: svg.dataset.chart, width: box.width, height: box.height,
                    shapes: svg.querySelectorAll('[data-value]').length};
        });
    """)
    assert [chart["kind"] for chart in drawn] == [
        "interval",
        "interval",
        "bar",
        "bar",
        "step",
        "line",
        "interval",
        "bar",
        "step",
        "line",
        "interval",
    ]
    assert all(chart["width"] > 200 and chart["height"] > 50 and chart["shapes"] > 0 for chart in drawn), drawn
    assert chromium.execute_script("return document.documentElement.lang") == "zh-hans"
    # The browser asks for /favicon.ico by itself; the admin has none, and that 404 is not the page's doing.
    errors = [
        entry
        for entry in chromium.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico " not in entry["message"]
    ]
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    chromium.set_window_size(1400, max(chromium.execute_script("return document.body.scrollHeight"), 900))
    assert chromium.save_screenshot(str(ARTIFACTS / "dashboard.png"))


@pytest.mark.parametrize("period", ["", "2020-01"])
def test_a_campaign_with_one_user_per_arm_shows_not_enough_data_instead_of_a_500(manager_client, db, period):
    # given a measurable campaign and one whose arms hold one user each (issue 14, item 4)
    build_campaign("Measured", seed=1)
    build_campaign("Tiny", users=2, treated_rate=1.0, holdout_rate=0.0)
    manager_client.raise_request_exception = False
    manager_client.cookies["django_language"] = "en"

    response = manager_client.get(reverse("admin-dashboard"), {"period": period} if period else {})

    assert response.status_code == 200
    page = response.content.decode()
    conversion, revenue = svg_charts(page)[:2]
    # both run, so both charts show the always-valid interval their reports show; it needs two users per arm for
    # conversion as for revenue, so the tiny campaign is a note in each, saying why
    for chart in (conversion, revenue):
        assert chart.count('class="interval"') == 1
        note = found(r'<text[^>]*class="note"[^>]*>(.*?)</text>', chart).group(1)
        assert note.startswith("Tiny: not enough data") and "at least two users" in note


@pytest.mark.parametrize(("language", "phrase"), [("en", "Tiny: not enough data ("), ("zh-hans", "Tiny：数据不足（")])
def test_the_revenue_chart_is_a_note_when_no_campaign_has_enough_users(manager_client, db, language, phrase):
    build_campaign("Tiny", users=2, treated_rate=1.0, holdout_rate=0.0)
    manager_client.cookies["django_language"] = language

    response = manager_client.get(reverse("admin-dashboard"))

    assert response.status_code == 200
    revenue = svg_charts(response.content.decode())[1]
    assert 'class="interval"' not in revenue
    assert phrase in revenue
