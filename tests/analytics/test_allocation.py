"""The budget allocation stays within 2% of the exact optimum, never overspends and knows its gap."""

import itertools
import json
from decimal import Decimal

import numpy as np
import pytest

from analytics.stats.allocation import allocate_offers, allocate_offers_exactly, allocation_summary


def _random_instance(seed: int) -> tuple[np.ndarray, list[Decimal], Decimal, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_users, n_offers = int(rng.integers(8, 13)), int(rng.integers(2, 5))
    values = np.round(rng.normal(5.0, 6.0, (n_users, n_offers)), 2)
    costs = [Decimal(int(fen)) / 100 for fen in rng.integers(100, 2001, n_offers)]
    budget = Decimal(int(rng.integers(500, 6001))) / 100
    holdout = rng.random(n_users) < 0.1
    return values, costs, budget, holdout


def _brute_force(values: np.ndarray, costs: list[Decimal], budget: Decimal) -> float:
    best = 0.0
    for choice in itertools.product(range(-1, values.shape[1]), repeat=values.shape[0]):
        spend = sum((costs[offer] for offer in choice if offer >= 0), Decimal(0))
        if spend <= budget:
            best = max(best, sum(values[user, offer] for user, offer in enumerate(choice) if offer >= 0))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_exact_solver_agrees_with_brute_force(seed):
    # given a tiny instance that can be enumerated
    rng = np.random.default_rng(100 + seed)
    values = np.round(rng.normal(3.0, 5.0, (6, 2)), 2)
    costs = [Decimal("3.50"), Decimal("7.25")]
    budget = Decimal("15.00")

    # when it is solved exactly
    exact = allocate_offers_exactly(values, costs, budget)

    # then it finds the enumerated optimum, within the budget
    assert exact.value == pytest.approx(_brute_force(values, costs, budget))
    assert exact.spend <= budget


def test_lagrangian_allocation_is_within_two_percent_of_the_optimum_and_never_overspends():
    worst_gap = 0.0
    for seed in range(300):
        # given a random instance with 8-12 users, 2-4 offers, values of either sign and a holdout
        values, costs, budget, holdout = _random_instance(seed)

        # when it is allocated by the Lagrangian heuristic and exactly
        allocation = allocate_offers(values, costs, budget, holdout)
        exact = allocate_offers_exactly(values, costs, budget, holdout)

        # then the budget holds, holdout users get nothing, the dual bound covers the optimum
        # and the heuristic's value is within 2% of it
        assert allocation.spend <= budget, seed
        assert all(allocation.choice[user] == -1 for user in np.flatnonzero(holdout)), seed
        assert allocation.upper_bound >= exact.value - 1e-9, seed
        assert allocation.value <= exact.value + 1e-9, seed
        assert allocation.value >= 0.98 * exact.value, (seed, allocation.value, exact.value)
        worst_gap = max(worst_gap, (exact.value - allocation.value) / max(exact.value, 1e-12))
    assert worst_gap < 0.02


def test_reported_spend_and_value_match_the_choice():
    # given an instance and its allocation
    values, costs, budget, holdout = _random_instance(7)
    allocation = allocate_offers(values, costs, budget, holdout)

    # when the choice is re-priced from the inputs
    chosen = [(user, offer) for user, offer in enumerate(allocation.choice) if offer >= 0]

    # then value, spend and gap agree with it and the result is JSON data
    assert allocation.value == pytest.approx(sum(values[user, offer] for user, offer in chosen))
    assert allocation.spend == sum((costs[offer] for _, offer in chosen), Decimal(0))
    assert allocation.gap == pytest.approx(allocation.upper_bound - allocation.value)
    assert json.loads(json.dumps(allocation.to_dict()))["spend"] == str(allocation.spend)
    names = [f"offer-{offer}" for offer in range(len(costs))]
    assert allocation_summary(allocation, names) == {
        name: sum(offer == index for _, offer in chosen) for index, name in enumerate(names)
    }


def test_an_ample_budget_gives_every_user_their_best_positive_offer_and_nothing_negative():
    # given values where one user gains from no offer and the budget covers everyone
    values = [[Decimal("5.00"), Decimal("8.00")], [Decimal("-1.00"), Decimal("-2.00")], [Decimal("3.00"), 1]]
    costs = ["2.00", "4.00"]

    # when it is allocated
    # Decimal cells are converted like floats; npt.ArrayLike has no Decimal, hence the ignore.
    allocation = allocate_offers(values, costs, Decimal("100.00"))  # type: ignore[arg-type]

    # then each user takes their best offer, the losing user nothing, and the gap is zero
    assert allocation.choice == (1, -1, 0)
    assert allocation.value == pytest.approx(11.0)
    assert allocation.spend == Decimal("6.00")
    assert allocation.multiplier == 0.0
    assert allocation.gap == pytest.approx(0.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="costs"):
        allocate_offers([[1.0, 2.0]], ["1.00"], "5.00")
    with pytest.raises(ValueError, match=">= 0"):
        allocate_offers([[1.0]], ["-1.00"], "5.00")
    with pytest.raises(ValueError, match="holdout"):
        allocate_offers([[1.0]], ["1.00"], "5.00", holdout=[True, False])
