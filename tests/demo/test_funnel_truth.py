"""The planted funnel's money: the demo's draws average to what the truth says a campaign earns and spends."""

import numpy as np
import pytest

from demo.world import parameters
from demo.world.truth import planted_campaign_roi, planted_truth, simulate_campaign_money

TRUTH = planted_truth(n_users=1_000, seed=3)
USERS = 200_000


@pytest.mark.parametrize(
    ("campaign", "package"),
    [
        ("economics-in-movies", "coupon"),
        ("strategy-documentary", "free_viewing+coupon"),
        ("member-day-rewards", "coupon+movie_ticket"),
        ("course-buy-membership", "membership_grant"),
    ],
)
def test_simulated_revenue_and_spend_average_to_the_planted_roi(campaign, package):
    # given many users of every segment, half of them treated with one of the campaign's packages
    rng = np.random.default_rng(7)
    segments = rng.choice(parameters.SEGMENT_NAMES, USERS, p=[segment.share for segment in parameters.SEGMENTS])
    treated = rng.random(USERS) < 0.5
    packages = np.full(USERS, package, dtype=object)

    # when their outcomes are drawn as the demo plays them
    converted, revenue, spent, discount = simulate_campaign_money(TRUTH, campaign, segments, treated, packages, rng)

    # then untreated users cost nothing, and only converted users pay
    assert not spent[~treated].any() and not revenue[~converted].any()
    # and the treated users' spend and incremental revenue are the planted ones, within sampling error
    planted = planted_campaign_roi(TRUTH, campaign, segments[treated], packages[treated])
    users = int(treated.sum())
    assert spent[treated].sum() == pytest.approx(planted["spent"], rel=0.03)
    holdout_mean = revenue[~treated].mean()
    incremental = revenue[treated].sum() - holdout_mean * users
    standard_error = users * np.sqrt(revenue[treated].var() / users + revenue[~treated].var() / (~treated).sum())
    assert abs(incremental - planted["incremental_revenue"]) < 4 * standard_error
    # and only treated users who converted got a discount, which the planted discount is, within sampling error
    assert not discount[~treated | ~converted].any()
    assert discount[treated].sum() == pytest.approx(planted["discount"], rel=0.03, abs=1.0)
    # and the ROI is on what was spent, under the truth's cost model, with the margin gross of the coupon's discount
    # (the discount is in spent, counted once there)
    earned = planted["incremental_revenue"] + planted["discount"]
    assert planted["incremental_margin"] == pytest.approx(earned, abs=0.02)
    assert planted["roi"] == pytest.approx((earned - planted["spent"]) / planted["spent"], abs=1e-5)


def test_the_planted_rois_include_a_campaign_that_earns_and_one_that_loses():
    effects = TRUTH["campaign_effects"]
    coupon = effects["economics-in-movies"]["offers"]["coupon"]["segments"]["bargain_hunter"]
    tickets = effects["member-day-rewards"]["offers"]["coupon+movie_ticket"]["segments"]["bargain_hunter"]
    assert coupon["roi"] > 0 > tickets["roi"]
    # a coupon costs only when used: its expected cost is the redemption probability times conversion times discount
    assert coupon["spent_per_treated_user"] == pytest.approx(
        parameters.COUPON_REDEMPTION_PROBABILITY * coupon["treated_conversion"] * 30.0, abs=1e-6
    )


def test_the_coverage_harness_counts_intervals_that_hold_the_planted_roi():
    from demo.comparison import roi_compare, roi_interval_coverage

    segments = np.array(["film_buff", "bargain_hunter"] * 500, dtype=object)
    packages = np.full(len(segments), "coupon", dtype=object)

    def around(planted_offset: float):
        def interval(treated_margin, holdout_margin, treated_spent, treated_discount):
            # a fixed interval, whatever the draw
            return (-10.0 + planted_offset, 10.0 + planted_offset)

        return interval

    # an interval wide enough always covers it, one far off never does
    def coverage(offset: float) -> dict:
        return roi_interval_coverage(
            truth=TRUTH,
            campaign_slug="economics-in-movies",
            segments=segments,
            packages=packages,
            holdout_share=0.15,
            roi_interval=around(offset),
            seeds=range(5),
        )

    wide, off = coverage(0.0), coverage(100.0)
    assert {key: wide[key] for key in ("draws", "without_interval", "coverage")} == {
        "draws": 5,
        "without_interval": 0,
        "coverage": 1.0,
    }
    assert wide["planted_below_lower"] == wide["planted_above_upper"] == 0.0
    # an interval far above the planted ROI misses it every time, on the side that overstates the ROI
    assert off["coverage"] == 0.0
    assert (off["planted_below_lower"], off["planted_above_upper"]) == (1.0, 0.0)
    # and one report's interval is held against the planted ROI
    compared = roi_compare(estimate=2.1, lower=1.5, upper=2.8, planted={"roi": 2.6})
    assert compared["covered"] and compared["same_sign"]
    assert roi_compare(estimate=-0.2, lower=-0.5, upper=0.1, planted={"roi": 2.6})["covered"] is False


def test_while_prepaid_tickets_are_valid_the_planted_spend_counts_each_at_its_value():
    # given treated users of a campaign that gives a coupon and a prepaid movie ticket
    rng = np.random.default_rng(2)
    segments = rng.choice(parameters.SEGMENT_NAMES, 3_000, p=[segment.share for segment in parameters.SEGMENTS])
    packages = np.full(len(segments), "coupon+movie_ticket", dtype=object)

    # when the planted ROI is read once every offer has ended, and while the tickets are still valid
    ended = planted_campaign_roi(TRUTH, "script-workshop", segments, packages)
    open_ = planted_campaign_roi(TRUTH, "script-workshop", segments, packages, prepaid_tickets_open=True)

    # then an unused ticket's code has gone back to the pool with its cost in the first, and is still spent in the
    # second (25 CNY a ticket, used or not); the coupons and the margin are the same
    ticket = TRUTH["campaign_effects"]["script-workshop"]["offers"]["coupon+movie_ticket"]["offer_costs"][
        "movie_ticket"
    ]
    assert ended["spent_by_kind"]["movie_ticket"] == pytest.approx(
        parameters.TICKET_USE_PROBABILITY * ticket * len(segments), abs=0.05
    )
    assert open_["spent_by_kind"]["movie_ticket"] == pytest.approx(ticket * len(segments), abs=0.05)
    assert open_["spent_by_kind"]["coupon"] == ended["spent_by_kind"]["coupon"]
    assert open_["incremental_margin"] == ended["incremental_margin"]
    assert open_["spent"] == pytest.approx(sum(open_["spent_by_kind"].values()), abs=0.05)
    assert open_["roi"] < ended["roi"] and open_["prepaid_tickets_open"] and not ended["prepaid_tickets_open"]
