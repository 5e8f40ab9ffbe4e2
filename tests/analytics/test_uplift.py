"""Uplift models recover the demo world's planted heterogeneous effects, and budgets follow them."""

import json
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from analytics.stats.allocation import allocate_offers
from analytics.stats.uplift import evaluate_uplift, fit_uplift, uplift_curves
from demo.world.catalog import demo_catalog
from demo.world.generator import iter_world
from demo.world.truth import EVENT_KINDS, planted_truth, simulate_campaign_outcomes

N_USERS = 40_000
SEED = 3
CAMPAIGN = "member-day-rewards"
CONTROL = "control"


@dataclass(frozen=True)
class Experiment:
    """A randomised two-arm campaign on the demo world, split into training and held-out users."""

    features: np.ndarray
    segments: np.ndarray
    arm: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray
    train: np.ndarray
    effects: dict
    costs: dict


def _observable_features(users: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
    """Build what a model may see: event counts per kind, total amount and age, never latent columns."""
    counts = pd.crosstab(events["user_id"], events["kind"]).reindex(
        index=users["user_id"], columns=list(EVENT_KINDS), fill_value=0
    )
    amount = events["amount"].astype(float).groupby(events["user_id"]).sum().reindex(users["user_id"], fill_value=0.0)
    return np.column_stack([counts.to_numpy(dtype=float), amount.to_numpy(), users["age"].to_numpy(dtype=float)])


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    chunks = list(iter_world(n_users=N_USERS, seed=SEED))
    users = pd.concat([chunk.users for chunk in chunks], ignore_index=True)
    events = pd.concat([chunk.events for chunk in chunks], ignore_index=True)
    truth = planted_truth(n_users=N_USERS, seed=SEED)
    campaign = demo_catalog().campaign(CAMPAIGN)
    costs = {
        rule.effect_key: sum((Decimal(offer.cost_per_issue) for offer in rule.offers), Decimal(0))
        for rule in campaign.rules
    }
    arms = sorted(costs)
    rng = np.random.default_rng(0)
    # Half of the users are held out; the other half is split evenly between the two packages.
    draw = rng.random(N_USERS)
    arm = np.where(draw < 0.5, CONTROL, np.where(draw < 0.75, arms[0], arms[1])).astype(object)
    segments = users["latent_segment"].to_numpy()
    offer_key = np.where(arm == CONTROL, arms[0], arm)
    converted, revenue = simulate_campaign_outcomes(truth, CAMPAIGN, segments, arm != CONTROL, offer_key, rng)
    return Experiment(
        features=_observable_features(users, events),
        segments=segments,
        arm=arm,
        converted=converted,
        revenue=revenue,
        train=rng.random(N_USERS) < 0.6,
        effects=truth["campaign_effects"][CAMPAIGN],
        costs=costs,
    )


def _planted(experiment: Experiment, arm: str, key: str, rows: np.ndarray) -> np.ndarray:
    per_segment = experiment.effects["offers"][arm]["segments"]
    return np.array([per_segment[segment][key] for segment in experiment.segments[rows]])


@pytest.fixture(scope="module")
def models(experiment: Experiment) -> dict:
    train = experiment.train
    return {
        method: fit_uplift(
            experiment.features[train],
            experiment.arm[train],
            experiment.converted[train],
            experiment.revenue[train],
            control=CONTROL,
            method=method,
        )
        for method in ("t_learner", "transformed_outcome")
    }


@pytest.mark.parametrize("method", ["t_learner", "transformed_outcome"])
def test_the_top_uplift_decile_has_markedly_more_planted_uplift_than_the_average(experiment, models, method):
    # given a model fitted on training users, scoring held-out users for each package
    held_out = np.flatnonzero(~experiment.train)
    prediction = models[method].predict(experiment.features[held_out])

    for column, arm in enumerate(prediction.arms):
        # when the top decile by predicted conversion uplift is targeted
        score = prediction.conversion[:, column]
        top = score >= np.quantile(score, 0.9)
        planted = _planted(experiment, arm, "conversion_uplift", held_out)

        # then its planted conversion uplift is at least 1.3 times the held-out average
        assert planted[top].mean() >= 1.3 * planted.mean(), (arm, planted[top].mean(), planted.mean())


def test_t_learner_auuc_beats_random_rankings(experiment, models):
    # given the T-learner's Qini and uplift curves on held-out users
    held_out = ~experiment.train
    evaluations = evaluate_uplift(
        models["t_learner"],
        experiment.features[held_out],
        experiment.arm[held_out],
        experiment.converted[held_out],
        experiment.revenue[held_out],
    )
    rng = np.random.default_rng(1)

    for evaluation in evaluations:
        # when the same held-out users are ranked at random 100 times
        pair = held_out & np.isin(experiment.arm, [CONTROL, evaluation.arm])
        treated = experiment.arm[pair] == evaluation.arm
        random_auuc = [
            uplift_curves(rng.random(pair.sum()), treated, experiment.converted[pair]).auuc for _ in range(100)
        ]

        # then the model's AUUC beats 95% of the random rankings (a one-sided permutation test
        # at 5%) and the random expectation
        assert evaluation.conversion.auuc > np.quantile(random_auuc, 0.95), (evaluation.arm, evaluation.conversion.auuc)
        assert evaluation.conversion.auuc_lift > 0
        assert evaluation.value is not None and evaluation.value.auuc_lift > 0
        # and the curves are chart-ready JSON data
        data = json.loads(json.dumps(evaluation.to_dict()))
        assert len(data["conversion"]["fraction"]) == len(data["conversion"]["qini"]) == 101


def test_uplift_allocation_earns_at_least_one_and_a_half_times_per_cny_of_propensity_targeting(experiment, models):
    # given held-out users, a 10% holdout among them, and a budget for a tenth of them
    held_out = np.flatnonzero(~experiment.train)
    model = models["t_learner"]
    features = experiment.features[held_out]
    arms = model.arm_names
    costs = [experiment.costs[arm] for arm in arms]
    planted_margin = np.column_stack([_planted(experiment, arm, "revenue_uplift_per_user", held_out) for arm in arms])
    holdout = np.random.default_rng(2).random(len(held_out)) < 0.1
    budget = Decimal(len(held_out) // 10) * min(costs)

    # when the budget is allocated by predicted incremental margin
    allocation = allocate_offers(model.predict(features).value, costs, budget, holdout)
    choice = np.asarray(allocation.choice)
    offered = np.flatnonzero(choice >= 0)
    optimised_per_cny = planted_margin[offered, choice[offered]].sum() / float(allocation.spend)

    # and, as the rule-based baseline, by the propensity to buy anyway, one package for all
    propensity = np.where(holdout, -np.inf, model.arms[0].predict_control_conversion(features))
    rule_per_cny = []
    for column, cost in enumerate(costs):
        reached = np.argsort(-propensity, kind="stable")[: int(budget // cost)]
        rule_per_cny.append(planted_margin[reached, column].sum() / float(cost * len(reached)))

    # then, against the planted truth, the allocation earns at least 1.5x per CNY of the best rule
    assert allocation.spend <= budget
    assert not (choice[holdout] >= 0).any()
    assert optimised_per_cny > 0
    assert optimised_per_cny >= 1.5 * max(rule_per_cny), (optimised_per_cny, rule_per_cny)


def test_uplift_curves_follow_their_definitions_on_a_hand_worked_ranking():
    # given four users ranked best first: treated converter, control, treated, control
    score = [4.0, 3.0, 2.0, 1.0]
    treated = [True, False, True, False]
    outcome = [1.0, 0.0, 0.0, 0.0]

    # when the curves are drawn at every depth
    curves = uplift_curves(score, treated, outcome, n_points=5)

    # then Q(k) = y_t - y_c n_t / n_c and U(k) = (y_t / n_t - y_c / n_c) k, per user, 0 until both arms appear
    assert curves.fraction == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curves.qini == pytest.approx((0.0, 0.0, 0.25, 0.25, 0.25))
    assert curves.uplift == pytest.approx((0.0, 0.0, 0.5, 0.375, 0.5))
    assert curves.auuc_random == pytest.approx(0.25)
    assert curves.auuc == pytest.approx(np.trapezoid([0.0, 0.0, 0.5, 0.375, 0.5], [0, 0.25, 0.5, 0.75, 1.0]))


def test_fit_refuses_data_without_a_control_arm():
    with pytest.raises(ValueError, match="control"):
        fit_uplift(np.zeros((4, 1)), ["a", "a", "b", "b"], [0, 1, 0, 1])
