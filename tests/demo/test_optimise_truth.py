"""Optimise mode against the planted truth: it earns more only where heterogeneity was planted, and says so otherwise.

The demo campaigns are played (outcomes drawn from the planted effects); the uplift models
learn from their holdouts; then the next member day is run four ways through the campaign
engine, each with the same two offer packages of the article's member-day campaign (a 20 CNY
coupon with a free week of films, or a 10 CNY coupon with a movie ticket) and the same
budget: three rule-based campaigns and one in optimise mode. What each campaign issued is
valued by the planted per-segment effects of its packages in the member-day setting, never by
a model, and only on users the uplift models never learned from (the stable 30% held out of
training), so the comparison is out of sample.

One demo world is loaded; each replication plays its campaigns with other outcome draws (a
seed of its own), trains and runs inside a savepoint rolled back afterwards. The suite runs
five replications with the demo's heterogeneity planted three times as strong (``amplified_uplift``)
and one with none planted (``homogeneous_uplift``).
"""

import datetime as dt
import os
from decimal import Decimal

import numpy as np
import pytest
from django.db import transaction

from demo.world.truth import amplified_uplift, campaign_effects, homogeneous_uplift, planted_package_effects
from tests.demo.conftest import pin_ids

DATABASE_USERS = 20_000
SEED = 5
PIN_IDS = True  # the same world whichever tests ran before (see conftest)
PLAYED_AT = dt.datetime(2026, 12, 10, tzinfo=dt.UTC)
NEXT_MEMBER_DAY = dt.datetime(2026, 12, 11, 1, 0, tzinfo=dt.UTC)
SETTING = "member-day-rewards"
BUDGET = Decimal("20000.00")
ACTIVE = "purchasing_count >= 1 or watching_count >= 1"
HEAVY = "purchasing_count > 5 and watching_count > 10"
NOBODY = "purchasing_count < 0"
OUTCOME_SEEDS = (101, 102, 103, 104, 105)
# The demo's own heterogeneity is too weak to learn at this size (its member-day packages' held-out
# Qini intervals straddle zero), so the learnable world plants it three times as strong.
LEARNABLE = 3.0
PACKAGE_A = frozenset({"coupon", "free_viewing"})
PACKAGE_B = frozenset({"coupon", "movie_ticket"})


def _campaign(slug: str, *, mode: str, package_a: str, package_b: str):
    """Create a next member day with the article's two packages, each for the users its condition names."""
    from campaigns.models import Campaign, Rule
    from campaigns.rules import to_json, validate_text
    from campaigns.selectors.rule_fields import condition_registry

    registry = condition_registry()
    source = Campaign.objects.get(slug=SETTING)
    campaign = Campaign.objects.create(
        slug=slug,
        name=slug,
        owner=source.owner,
        starts_at=NEXT_MEMBER_DAY - dt.timedelta(hours=1),
        ends_at=NEXT_MEMBER_DAY + dt.timedelta(days=1),
        budget=BUDGET,
        holdout_share=Decimal("0.100"),
        per_user_limit=2,
        mode=mode,
        status=Campaign.Status.RUNNING,
    )
    campaign.promoted_courses.set(source.promoted_courses.all())
    a, b = (to_json(validate_text(text, registry)) for text in (package_a, package_b))
    for name, priority, exclusive, condition, kind, extra in (
        ("A 20 CNY coupon", 400, False, a, "coupon", {"amount_off": Decimal("20.00"), "cost": Decimal("20.00")}),
        ("A free week of films", 399, True, a, "free_viewing", {"days": 7, "cost": Decimal("3.00")}),
        ("B 10 CNY coupon", 300, False, b, "coupon", {"amount_off": Decimal("10.00"), "cost": Decimal("10.00")}),
        ("B movie ticket", 299, True, b, "movie_ticket", {"cost": Decimal("25.00")}),
    ):
        Rule.objects.create(
            campaign=campaign,
            name=name,
            priority=priority,
            exclusive=exclusive,
            condition=condition,
            offer_kind=kind,
            **extra,
        )
    return campaign


def _true_margin_per_cny(campaign, uplift_by_kind) -> tuple[float, float, int]:
    """Return the planted incremental margin per CNY of what the campaign issued to users no model learned from.

    Also returns what it spent on them and how many they are.
    """
    from analytics.services.training.uplift import HELD_OUT_SHARE
    from analytics.services.uplift import held_out_mask
    from campaigns.models import CampaignAssignment, Offer
    from demo.models import PlantedUser

    offers = list(Offer.objects.filter(campaign=campaign).values_list("user_id", "kind", "amount_off", "rule__cost"))
    packages: dict[int, list] = {}
    for user, kind, amount, cost in offers:
        packages.setdefault(user, []).append((kind, amount or Decimal(0), cost))
    held = set(
        CampaignAssignment.objects.filter(campaign=campaign, arm=CampaignAssignment.HOLDOUT).values_list(
            "user_id", flat=True
        )
    )
    assert not held & set(packages), "a held-out user got an offer"
    users = sorted(packages)
    unseen = [
        user
        for user, out in zip(users, held_out_mask(np.array(users, dtype=np.int64), HELD_OUT_SHARE), strict=True)
        if out
    ]
    segment = dict(PlantedUser.objects.filter(user_id__in=unseen).values_list("user_id", "segment"))
    margin, spent = 0.0, 0.0
    for user in unseen:
        package = packages[user]
        effect = planted_package_effects(
            SETTING,
            [kind for kind, _, _ in package],
            float(sum(a for _, a, _ in package)),
            uplift_by_kind=uplift_by_kind,
        )
        margin += effect["segments"][segment[user]]["revenue_uplift_per_user"]
        spent += float(sum(cost for _, _, cost in package))
    return margin / spent, spent, len(unseen)


def _replicate(seed: int, uplift_by_kind=None) -> dict:
    """Play, train and run the four member days with this outcome seed; measure; roll everything back."""
    from campaigns.models import Offer
    from campaigns.services.campaign_run import campaign_dry_run, campaign_run
    from campaigns.services.training import uplift_train
    from demo.models import DemoWorld
    from demo.services.play import demo_campaigns_play

    with transaction.atomic():
        if uplift_by_kind is not None:
            world = DemoWorld.objects.get()
            world.truth = {**world.truth, "campaign_effects": campaign_effects(uplift_by_kind)}
            world.save(update_fields=["truth"])
        demo_campaigns_play(now=PLAYED_AT, seed=seed)
        run = uplift_train()
        # The member days' holdout draws hash their campaign ids: the same seed draws the same whatever ran before.
        pin_ids(tables=("campaigns_campaign", "campaigns_rule"), offset=1_000_000 + seed * 100)
        rule_based = {
            "article's rules (heavy: A, others: B)": _campaign(
                "rules-article", mode="rules", package_a=HEAVY, package_b=ACTIVE
            ),
            "everyone active: A": _campaign("rules-all-a", mode="rules", package_a=ACTIVE, package_b=NOBODY),
            "everyone active: B": _campaign("rules-all-b", mode="rules", package_a=NOBODY, package_b=ACTIVE),
        }
        optimised = _campaign("optimised", mode="optimise", package_a=ACTIVE, package_b=ACTIVE)
        forecast = campaign_dry_run(campaign=optimised, now=NEXT_MEMBER_DAY)
        for campaign in [*rule_based.values(), optimised]:
            campaign_run(campaign=campaign, now=NEXT_MEMBER_DAY)
        rules_per_cny = {name: _true_margin_per_cny(c, uplift_by_kind)[0] for name, c in rule_based.items()}
        optimised_per_cny, unseen_spend, unseen_users = _true_margin_per_cny(optimised, uplift_by_kind)
        optimised.refresh_from_db()
        kinds: dict[int, set[str]] = {}
        for user, kind in Offer.objects.filter(campaign=optimised).values_list("user_id", "kind"):
            kinds.setdefault(user, set()).add(kind)
        result = {
            "seed": seed,
            "method": run.metrics["selected_method"],
            "qini_intervals": run.metrics["qini_intervals"],
            "trusted": set(run.metrics["trusted_packages"]),
            "comparison": forecast.comparison,
            "rules_per_cny": rules_per_cny,
            "optimised_per_cny": optimised_per_cny,
            "ratio": optimised_per_cny / max(rules_per_cny.values()),
            "spent": optimised.spent,
            "unseen_spend": unseen_spend,
            "unseen_users": unseen_users,
            "packages": set(map(frozenset, kinds.values())),
        }
        transaction.set_rollback(True)
    return result


def _trained_gate(seed: int, uplift_by_kind) -> dict:
    """Play the demo campaigns with this outcome seed and train the uplift models; return the gate; roll back."""
    from campaigns.services.training import uplift_train
    from demo.models import DemoWorld
    from demo.services.play import demo_campaigns_play

    with transaction.atomic():
        world = DemoWorld.objects.get()
        world.truth = {**world.truth, "campaign_effects": campaign_effects(uplift_by_kind)}
        world.save(update_fields=["truth"])
        demo_campaigns_play(now=PLAYED_AT, seed=seed)
        run = uplift_train()
        gate = {
            "seed": seed,
            "method": run.metrics["selected_method"],
            "qini_intervals": run.metrics["qini_intervals"],
            "trusted": set(run.metrics["trusted_packages"]),
        }
        transaction.set_rollback(True)
    return gate


# Recorded on 2026-12-06 on PostgreSQL: 1 of 40 draws (seeds 1000-1039, 32 minutes beside other work) and
# 2 of 60 (1040-1099, 63 minutes at nice 19) trusted a package: 3 of 100, exact 95% interval 0.006 to 0.085.
@pytest.mark.skipif(
    not os.environ.get("CROSSMKT_LONG_SIMULATIONS"), reason="long simulation: set CROSSMKT_LONG_SIMULATIONS=1"
)
@pytest.mark.django_db
def test_with_no_heterogeneity_planted_the_gate_trusts_a_package_in_at_most_one_world_in_twenty(
    demo_world, report_line
):
    # given worlds in which every offer changes everyone's chance to buy by the same amount: the same users,
    # played with WORLDS outcome draws (about 35 s each: play and train, no member day run)
    from scipy.stats import binomtest

    worlds = int(os.environ.get("CROSSMKT_NULL_WORLDS", "40"))
    first = int(os.environ.get("CROSSMKT_NULL_FIRST_SEED", "1000"))
    gates = [_trained_gate(seed, homogeneous_uplift()) for seed in range(first, first + worlds)]
    false_trust = [gate for gate in gates if gate["trusted"]]
    interval = binomtest(len(false_trust), worlds).proportion_ci(confidence_level=0.95, method="exact")
    report_line(
        f"no heterogeneity planted, {worlds} outcome draws (seeds {first} to {first + worlds - 1}): a package "
        f"trusted in {len(false_trust)} "
        f"({len(false_trust) / worlds:.3f}, exact 95% interval {interval.low:.3f} to {interval.high:.3f}); "
        + "; ".join(
            f"seed {gate['seed']} ({gate['method']}) trusted {', '.join(sorted(gate['trusted']))} at "
            + ", ".join(
                f"[{gate['qini_intervals'][package]['lower']:.4f}, {gate['qini_intervals'][package]['upper']:.4f}]"
                for package in sorted(gate["trusted"])
            )
            for gate in false_trust
        )
    )
    # then the gate's family-wise error holds: the rate at which it trusts any package is consistent with at
    # most 5% (the exact interval's lower end is at or below 0.05)
    assert interval.low <= 0.05, (len(false_trust), worlds)


@pytest.mark.django_db
# In every suite run: one world, the mechanism end to end ("falls back and says so"). How often the gate
# trusts a package when there is nothing to learn is a rate, measured over many worlds by the opt-in test
# above. This world's result is the same in every run (on 2026-12-06 the same four intervals to the fourth
# digit on SQLite and PostgreSQL, the highest lower end -0.0044): its ids are pinned, its rows read in user
# order and its draws keyed by users, deals and spells (before 2026-12-06 rows were read in heap order, and a
# clean-clone CI run of this world trusted coupon + free week at [0.0005, 0.0229] where other runs did not).
def test_with_no_heterogeneity_planted_the_optimiser_falls_back_to_the_rules_and_says_why(demo_world, report_line):
    # given a world where every offer changes everyone's chance to buy by the same amount
    # when uplift is learned from the played campaigns and the next member day is previewed and run
    result = _replicate(OUTCOME_SEEDS[0], homogeneous_uplift())
    comparison = result["comparison"]
    report_line(
        "no heterogeneity planted: held-out Qini "
        + ", ".join(
            f"{package} {interval['coefficient']:.4f} [{interval['lower']:.4f}, {interval['upper']:.4f}]"
            for package, interval in result["qini_intervals"].items()
        )
    )

    # then no package's held-out Qini interval lies above zero, so the optimiser falls back to the rules
    assert not any(interval["lower"] > 0 for interval in result["qini_intervals"].values())
    assert comparison.falls_back_to_rules
    assert comparison.optimised_by_model == 0
    # and the dry run says so, naming each package and its interval
    notes = " ".join(comparison.notes)
    assert "falls back to the rules" in notes
    assert "coupon+free_viewing" in notes and "does not lie above zero" in notes
    # and the campaign gave what its rules give: every active user's first matching rule is package A
    assert result["packages"] == {PACKAGE_A}


# Five replications of a 20,000-user world take four to six minutes on the 2-core machine (259 s alone on
# PostgreSQL, 341 s beside another simulation): run on request (CROSSMKT_LONG_SIMULATIONS=1), not in every
# suite run. Recorded on 2026-12-06 on PostgreSQL, with trust per package and user, the gate over packages and
# methods, rows in user order and each replication's member days at ids its seed fixes: ratios to the best
# rule 2.20, 2.12, 2.42, 2.29, 2.34 (5 of 5; coupon + movie ticket trusted in every seed, coupon in 102, 103
# and 105, coupon + free week in 102), the same to the last digit alone and after the no-heterogeneity world.
# Before trust per user (a user's first rule decided it) 0 of 5 on PostgreSQL.
@pytest.mark.skipif(
    not os.environ.get("CROSSMKT_LONG_SIMULATIONS"), reason="long simulation: set CROSSMKT_LONG_SIMULATIONS=1"
)
@pytest.mark.django_db
def test_with_heterogeneity_planted_the_optimiser_beats_the_best_rules_one_and_a_half_times_in_four_of_five_seeds(
    demo_world, report_line
):
    # given strong planted heterogeneity (bargain hunters and film buffs moved by offers, others not at all),
    # played five times with other outcome draws
    from campaigns.selectors.uplift_experiments import package_name

    planted = amplified_uplift(LEARNABLE)
    results = [_replicate(seed, planted) for seed in OUTCOME_SEEDS]

    for result in results:
        held = result["comparison"].held_out
        report_line(
            f"optimise acceptance, seed {result['seed']} ({result['method']}): optimised "
            f"{result['optimised_per_cny']:.3f} CNY of planted incremental margin per CNY on "
            f"{result['unseen_users']} unseen users ({result['unseen_spend']:.0f} CNY); rule-based "
            + ", ".join(f"{name} {value:.3f}" for name, value in result["rules_per_cny"].items())
            + f"; ratio to the best {result['ratio']:.2f}; trusted {', '.join(sorted(result['trusted'])) or 'none'}"
            + "; held-out Qini "
            + ", ".join(
                f"{package} [{interval['lower']:.4f}, {interval['upper']:.4f}]"
                for package, interval in result["qini_intervals"].items()
            )
            + (
                ""
                if held is None or held.difference_per_cny is None
                else f"; dry run's cross-fitted optimised - rules {held.difference_per_cny:+.3f} per CNY "
                f"[{held.difference_lower:.3f}, {held.difference_upper:.3f}]"
            )
        )

    # then in every seed a member-day package's held-out Qini interval lies above zero, so its model chooses
    # for every active user (both packages apply to all of them), and only trusted packages' models are used:
    # every package the optimised campaign gave is one whose interval lies above zero
    for result in results:
        assert result["trusted"] & {"coupon+free_viewing", "coupon+movie_ticket"}, result["seed"]
        for package in result["trusted"]:
            assert result["qini_intervals"][package]["lower"] > 0, (result["seed"], package)
        assert not result["comparison"].falls_back_to_rules
        assert result["comparison"].ruled_users == 0, result["seed"]
        given = {package_name(package) for package in result["packages"]}
        assert given <= result["trusted"], (result["seed"], given)
    # and, by the planted truth on users no model learned from, the optimised campaign earns at least
    # 1.5x per CNY of the best rule-based one in at least four of the five seeds
    wins = sum(result["ratio"] >= 1.5 for result in results)
    assert wins >= 4, [round(result["ratio"], 2) for result in results]
    for result in results:
        # and it spent the same budget as well as the rules could: within it, and most of it
        assert Decimal("0.9") * BUDGET <= result["spent"] <= BUDGET
        # and every treated user got exactly one package: both offers of A, or both of B
        assert result["packages"] <= {PACKAGE_A, PACKAGE_B}
