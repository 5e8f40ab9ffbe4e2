"""Optimise mode: spend the budget on the users an offer changes, at most one offer package each.

The campaign's rules give the candidates: each *package* (a rule, or rules with the same
condition chained by non-exclusive ones, as ``campaigns.selectors.uplift_experiments.rule_packages``
groups them) is one candidate, with its offer kinds, its cost (the sum of its rules' costs)
and its condition as the eligibility filter: a user may get a package only when they match
its condition, and only users with marketing consent are read at all.

The value of giving package ``j`` to user ``u`` is its expected incremental margin in CNY::

    value[u, j] = uplift[u, j] * (order_value - discount[j] + retained[u]) - baseline[u] * discount[j]

where ``uplift`` is the active uplift model's incremental conversion probability for the
package, ``baseline`` its probability of buying anyway, ``order_value`` the mean list price
of the campaign's promoted courses (all courses on sale when it promotes none), ``discount``
the money its coupons take off an order (so buyers who would have paid in full cost the
discount), and ``retained[u] = churn_probability[u] * clv[u]``: the lifetime value at risk
that a purchase keeps, from the churn and lifetime-value scores (0 for a user without them).

``campaign_optimise_plan`` reads every reachable user once, predicts these values and solves
the multiple-choice knapsack (``analytics.stats.allocation.allocate_offers``) for the
remaining budget; what it hands to the issuing chunks is only the multiplier it found, the
price of one CNY of budget. Each chunk then gives each of its users the package with the
largest ``value - multiplier * cost`` when that is positive (``choose_at_multiplier``), so
any worker can take any chunk and together they make the global choice. Values tied between
users (trees predict the same value for many) are broken by the campaign's stable "reach"
draw, so the choice at one multiplier fits the budget instead of taking or dropping a whole
group of equal users.

A holdout is always kept: of the users the optimiser chooses, the campaign's
``holdout_share`` (drawn by the same stable hash as in rules mode) get nothing and are
recorded as held out under the package they would have got, so treated and held-out users
are alike and the report measures the effect of each package. The optimiser is therefore
given ``remaining / (1 - holdout_share)`` to choose for, and issuance goes through
``campaign_issue_chunk`` like any campaign: under the campaign row lock, clamped to the
budget, one offer per user and rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analytics.models import ModelRun
from analytics.selectors import user_frame
from analytics.services.registry import model_run_active, model_run_artifact
from analytics.services.uplift import UpliftBundle, uplift_features
from analytics.stats.allocation import allocate_offers, choose_at_multiplier
from analytics.stats.uplift_validation import ChoiceComparison, RandomisedRows, compare_choices
from campaigns.rules import evaluate_table
from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO

from ..models import Campaign, Course
from ..selectors.uplift_experiments import package_name, rule_packages
from .campaign_planning import ChunkPlan, RulePlan, campaign_chunks, holdout_draw, load_chunk, plan_chunk
from .offer_costs import offer_reservation

# A package a user may not get, or whose uplift no model knows, is worth this: never chosen.
BLOCKED = -1e9
# Breaks ties between users of equal value by the reach draw; a millionth of a fen per CNY.
_TIE_BREAK = 1e-6
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Candidate:
    """One package the optimiser may give: its rules (indexes into the rule plans), kinds, cost and discount."""

    rules: tuple[int, ...]
    package: str
    label: str
    cost: Decimal
    discount: Decimal


def campaign_order_value(campaign: Campaign) -> Decimal:
    """Return the mean list price of the campaign's promoted courses (of every course on sale when it promotes none)."""
    prices = list(campaign.promoted_courses.values_list("price", flat=True)) or list(
        Course.objects.filter(is_active=True).values_list("price", flat=True)
    )
    if not prices:
        raise ApplicationError(
            f"campaign {campaign.slug!r}: no course on sale to price a conversion; add courses first",
            field="promoted_courses",
        )
    return (sum(prices, ZERO) / len(prices)).quantize(CENT)


def campaign_candidates(campaign: Campaign, plans: list[RulePlan], order_value: Decimal) -> list[Candidate]:
    """Return the campaign's offer packages as candidates, each cut to the per-user offer limit."""
    candidates = []
    for members in rule_packages([plan.rule for plan in plans]):
        members = members[: campaign.per_user_limit]
        rules = [plans[index].rule for index in members]
        discount = ZERO
        for rule in rules:
            if rule.offer_kind == rule.OfferKind.COUPON:
                if rule.amount_off is not None:
                    discount += rule.amount_off
                elif rule.percent_off is not None:
                    discount += order_value * rule.percent_off / 100
                else:  # refused by the rule_coupon_has_discount constraint
                    raise ValueError(f"coupon rule {rule.name!r} has neither amount nor percent off")
        candidates.append(
            Candidate(
                rules=tuple(members),
                package=package_name(rule.offer_kind for rule in rules),
                label=" + ".join(rule.name for rule in rules),
                cost=sum((offer_reservation(rule, None) for rule in rules), ZERO),
                discount=min(discount, order_value).quantize(CENT),
            )
        )
    return candidates


def _bundle(run_id: int) -> UpliftBundle:
    """Return a stored run's fitted models, unpickled once per worker."""
    # Keyed by the run's creation time too: an id can come back after a rolled-back transaction.
    created = ModelRun.objects.filter(pk=run_id).values_list("created_at", flat=True).first()
    return _bundle_at(run_id, created)


@lru_cache(maxsize=4)
def _bundle_at(run_id: int, created: datetime | None) -> UpliftBundle:
    # A stored run never changes, so each worker unpickles it once.
    return model_run_artifact(ModelRun.objects.get(pk=run_id))


def trusted_packages(bundle: UpliftBundle) -> set[str]:
    """Return the packages whose model the optimiser may spend on: held-out Qini interval above zero."""
    return set(getattr(bundle, "trusted", ())) & set(bundle.packages)


def _trust_note(bundle: UpliftBundle, package: str) -> str:
    """Say why a package's users are left to the rules."""
    if package not in bundle.packages:
        return f"{package}: the uplift model has not learned it (no past experiment gave it to enough users)"
    interval = getattr(bundle, "qini_intervals", {}).get(package)
    if interval is None:
        return f"{package}: this uplift run has no held-out Qini interval (trained before they existed; retrain)"
    return (
        f"{package}: held-out Qini coefficient {interval['coefficient']:.4f}, "
        f"{round(interval['confidence'] * 100, 3):g}% interval [{interval['lower']:.4f}, {interval['upper']:.4f}] "
        "does not lie above zero, so the model has not shown it ranks users better than chance"
    )


def _worth(uplift: np.ndarray, baseline: np.ndarray, price: float, discount: float, retained) -> np.ndarray:
    """Return the expected incremental margin of a package per user (the module docstring's formula)."""
    gain = np.clip(uplift, -1.0, 1.0)
    worth: np.ndarray = gain * (price - discount + retained) - np.clip(baseline, 0.0, 1.0) * discount
    return worth


def _ruled(allowed: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Return which users the rules choose for: those to whom no package the model may spend on applies.

    ``allowed`` is users x candidates (which packages' conditions each user matches), ``usable``
    per candidate whether its model is trusted. A user to whom some trusted package applies is
    the optimiser's, whatever their first matching rule gives: it chooses among the trusted
    packages that apply to them, or nothing.
    """
    if not len(usable):
        return np.ones(len(allowed), dtype=bool)
    ruled: np.ndarray = ~(allowed & usable[None, :]).any(axis=1)
    return ruled


@dataclass
class ChunkValues:
    """The optimiser's view of one chunk: matched users, who may get which candidate, and what each is worth."""

    user_ids: np.ndarray
    masks: list[np.ndarray]  # per rule, over the matched users
    allowed: np.ndarray  # users x candidates
    values: np.ndarray  # users x candidates, BLOCKED where not allowed, unknown or untrusted, and for ruled users
    forecast: np.ndarray  # users x candidates, the model's value wherever it knows the package (BLOCKED elsewhere)
    draw: np.ndarray
    reach: np.ndarray
    first_candidate: np.ndarray  # the candidate of each user's first (highest-priority) matching rule
    ruled: np.ndarray  # users the rules choose for: no package the model may spend on applies to them


def chunk_values(
    *,
    campaign: Campaign,
    plans: list[RulePlan],
    candidates: list[Candidate],
    bundle: UpliftBundle,
    frame: pd.DataFrame,
    id_range: tuple[int, int],
    now: datetime,
    order_value: Decimal,
) -> ChunkValues:
    """Predict the value of every candidate for every user of a chunk who matches some rule."""
    ids = frame.index.to_numpy(dtype=np.int64)
    masks = [
        np.ones(len(ids), dtype=bool) if plan.condition is None else evaluate_table(plan.condition, frame)
        for plan in plans
    ]
    matched = np.logical_or.reduce(masks) if masks else np.zeros(len(ids), dtype=bool)
    ids, masks = ids[matched], [mask[matched] for mask in masks]
    allowed = (
        np.column_stack([masks[candidate.rules[0]] for candidate in candidates])
        if candidates
        else np.zeros((len(ids), 0), dtype=bool)
    )
    uplift, baseline = bundle.predict(uplift_features(ids, as_of=now))
    scores = user_frame(["churn_probability", "clv"], as_of=now, id_range=id_range, reachable_only=True).reindex(ids)
    retained = (scores["churn_probability"].clip(0, 1) * scores["clv"].clip(lower=0)).fillna(0.0).to_numpy(dtype=float)
    values = np.full((len(ids), len(candidates)), BLOCKED)
    price = float(order_value)
    trusted = trusted_packages(bundle)
    usable = np.array([candidate.package in trusted for candidate in candidates], dtype=bool)
    rule_candidate = {rule: column for column, candidate in enumerate(candidates) for rule in candidate.rules}
    first_rule = np.argmax(np.vstack(masks), axis=0) if masks and len(ids) else np.zeros(len(ids), dtype=np.int64)
    first_candidate = np.array([rule_candidate.get(int(rule), -1) for rule in first_rule], dtype=np.int64)
    ruled = _ruled(allowed, usable)
    forecast = np.full((len(ids), len(candidates)), BLOCKED)
    for column, candidate in enumerate(candidates):
        if candidate.package not in uplift:
            continue
        worth = _worth(uplift[candidate.package], baseline, price, float(candidate.discount), retained)
        forecast[:, column] = np.where(allowed[:, column], worth, BLOCKED)
        if usable[column]:
            values[:, column] = np.where(allowed[:, column] & ~ruled, worth, BLOCKED)
    return ChunkValues(
        user_ids=ids,
        masks=masks,
        allowed=allowed,
        values=values,
        forecast=forecast,
        draw=holdout_draw(campaign, ids),
        reach=holdout_draw(campaign, ids, "reach"),
        first_candidate=first_candidate,
        ruled=ruled,
    )


def _tie_broken(values: np.ndarray, costs: np.ndarray, reach: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values + _TIE_BREAK * reach[:, None] * costs[None, :], values)


@dataclass
class Strategy:
    """What one way of choosing would do: users treated and held out, offers, spend and expected incremental margin."""

    name: str
    users: int = 0
    holdout: int = 0
    offers: int = 0
    spend: Decimal = ZERO
    expected_margin: Decimal | None = ZERO
    unknown_users: int = 0

    @property
    def margin_per_cny(self) -> Decimal | None:
        if self.expected_margin is None or not self.spend:
            return None
        return (self.expected_margin / self.spend).quantize(Decimal("0.001"))

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "users": self.users,
            "holdout": self.holdout,
            "offers": self.offers,
            "spend": str(self.spend),
            "expected_margin": None if self.expected_margin is None else str(self.expected_margin),
            "margin_per_cny": None if self.margin_per_cny is None else str(self.margin_per_cny),
            "unknown_users": self.unknown_users,
        }


@dataclass
class Comparison:
    """The rule-based and the optimised campaign side by side.

    ``rules`` and ``optimised`` say what each would spend on this campaign's users, with the
    model's own forecast of the margin (in sample: the model that chose values its choice).
    ``held_out`` is the claim: both choices made on past experiments' users by models that never
    saw them (cross-fitting) and valued on those users' randomised outcomes, with intervals.
    ``ruled_packages`` are the packages whose model may not be spent on (only the rules give
    them, to ``ruled_users``: the users no trusted package applies to), and ``notes`` say why.
    """

    model: str
    method: str
    order_value: Decimal
    rules: Strategy
    optimised: Strategy
    notes: list[str] = field(default_factory=list)
    held_out: ChoiceComparison | None = None
    held_out_folds: int = 0
    held_out_missing: str | None = None
    ruled_packages: list[str] = field(default_factory=list)
    ruled_users: int = 0  # matched users to whom no trusted package applies: the rules choose for them

    optimised_by_model: int = 0  # users the model chose for (the others of ``optimised`` the rules chose)
    falls_back_to_rules: bool = False  # no package's model may be spent on: the rules choose for everyone

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "order_value": str(self.order_value),
            "rules": self.rules.as_dict(),
            "optimised": self.optimised.as_dict(),
            "optimised_by_model": self.optimised_by_model,
            "falls_back_to_rules": self.falls_back_to_rules,
            "ruled_packages": self.ruled_packages,
            "ruled_users": self.ruled_users,
            "held_out": None
            if self.held_out is None
            else {**self.held_out.to_dict(), "folds": self.held_out_folds, "first": "rules", "second": "optimised"},
            "held_out_missing": self.held_out_missing,
            "notes": self.notes,
        }


@dataclass
class OptimisePlan:
    """The optimiser's decision for a run: the model run and the multiplier every chunk chooses with."""

    run_id: int
    multiplier: float
    candidates: list[Candidate]
    order_value: Decimal
    comparison: Comparison
    # Per user, for checks against a known truth: id, chosen candidate (-1: none), held out, rule-based candidates.
    choices: pd.DataFrame

    def as_task(self) -> dict:
        """Return what an issuing chunk needs, as JSON-safe values."""
        return {"run": self.run_id, "multiplier": self.multiplier}


def _money(amount: float) -> Decimal:
    return Decimal(f"{amount:.2f}")


def campaign_optimise_plan(*, campaign: Campaign, plans: list[RulePlan], now: datetime, on_chunk=None) -> OptimisePlan:
    """Value every candidate for every reachable user, solve the knapsack, and compare with the rules' own choice.

    The optimiser chooses for each user among the packages that apply to them and whose model
    it may spend on (its held-out Qini interval lies above zero), or nothing. Users to whom no
    such package applies are chosen by the rules, which may give them an untrusted package; the
    optimiser spends what they leave of the budget on the others.
    """
    run = model_run_active(model=ModelRun.Model.UPLIFT)
    bundle = _bundle(run.pk)
    order_value = campaign_order_value(campaign)
    candidates = campaign_candidates(campaign, plans, order_value)
    costs = np.array([float(candidate.cost) for candidate in candidates])
    rule_candidate = {rule: column for column, candidate in enumerate(candidates) for rule in candidate.rules}
    share = float(campaign.holdout_share)
    parts: list[tuple[ChunkValues, np.ndarray, np.ndarray]] = []
    chunks = campaign_chunks()
    for done, id_range in enumerate(chunks, 1):
        frame = load_chunk(plans, id_range, now, unassigned_in=campaign)
        values = chunk_values(
            campaign=campaign,
            plans=plans,
            candidates=candidates,
            bundle=bundle,
            frame=frame,
            id_range=id_range,
            now=now,
            order_value=order_value,
        )
        # The rules' own choice for the same users: which candidates each treated user would get.
        rules_plan = plan_chunk(campaign, plans, frame)
        given = np.zeros(values.allowed.shape, dtype=bool)
        position = {user: row for row, user in enumerate(values.user_ids.tolist())}
        rows = np.array([position[user] for user in rules_plan.pick_users.tolist()], dtype=np.int64)
        if len(rows):
            given[rows, [rule_candidate[rule] for rule in rules_plan.pick_rules.tolist()]] = True
        rules_held = np.isin(values.user_ids, rules_plan.user_ids[rules_plan.holdout])
        parts.append((values, given, rules_held))
        if on_chunk:
            on_chunk(done, len(chunks))

    def stacked(pick, empty):
        return np.concatenate([pick(part) for part in parts]) if parts else empty

    user_ids = stacked(lambda part: part[0].user_ids, np.zeros(0, dtype=np.int64))
    matrix = stacked(lambda part: part[0].values, np.zeros((0, len(candidates))))
    forecast = stacked(lambda part: part[0].forecast, np.zeros((0, len(candidates))))
    reach = stacked(lambda part: part[0].reach, np.zeros(0))
    draw = stacked(lambda part: part[0].draw, np.zeros(0))
    ruled = stacked(lambda part: part[0].ruled, np.zeros(0, dtype=bool))
    given = stacked(lambda part: part[1], np.zeros((0, len(candidates)), dtype=bool))
    rules_held = stacked(lambda part: part[2], np.zeros(0, dtype=bool))
    remaining = None if campaign.budget is None else max(campaign.budget - campaign.spent, ZERO)
    # What the rules spend on the users they choose for comes first; the optimiser chooses within the rest.
    ruled_spend = _money(float((given[ruled & ~rules_held] * costs[None, :]).sum())) if len(costs) else ZERO
    broken = _tie_broken(matrix, costs, reach)
    multiplier = 0.0
    if remaining is not None and len(user_ids) and len(candidates):
        # The holdout's share of the chosen users is not issued, so the choice covers a little more than what is left.
        left = max(remaining - ruled_spend, ZERO)
        budget = (left / (1 - campaign.holdout_share)).quantize(CENT, rounding="ROUND_FLOOR")
        multiplier = allocate_offers(broken, [candidate.cost for candidate in candidates], budget).multiplier
    choice = choose_at_multiplier(broken, costs, multiplier) if len(candidates) else np.full(len(user_ids), -1)
    held = (choice >= 0) & (draw < share)
    trusted = trusted_packages(bundle)
    packages = {candidate.package for candidate in candidates}
    ruled_packages = sorted(packages - trusted)
    comparison = Comparison(
        model=f"uplift v{run.version}",
        method=bundle.selected,
        order_value=order_value,
        rules=_rules_strategy(forecast, given, rules_held, reach, costs, candidates, remaining),
        optimised=_optimised_strategy(
            forecast, choice, held, reach, costs, remaining, given & ruled[:, None], rules_held
        ),
        optimised_by_model=int(((choice >= 0) & ~held).sum()),
        ruled_packages=ruled_packages,
        ruled_users=int(ruled.sum()),
        falls_back_to_rules=bool(packages) and not packages & trusted,
    )
    if comparison.falls_back_to_rules:
        comparison.notes.append(
            "the optimiser falls back to the rules: no offer package of this campaign has an uplift model whose "
            f"held-out Qini interval lies above zero, so the rules choose every user ({comparison.ruled_users:,})"
        )
    elif ruled_packages:
        spent_on = sorted(packages & trusted)
        comparison.notes.append(
            f"the optimiser spends only on {', '.join(spent_on)}, whose model's held-out Qini interval lies above "
            f"zero, choosing among the ones that apply to each of {len(user_ids) - comparison.ruled_users:,} users; "
            f"the model of {', '.join(ruled_packages)} is not used: the rules choose for the "
            f"{comparison.ruled_users:,} users to whom no trusted package applies, and only they may get "
            f"{'it' if len(ruled_packages) == 1 else 'those'}"
        )
    comparison.notes.extend(_trust_note(bundle, package) for package in ruled_packages)
    comparison.held_out, comparison.held_out_missing = _held_out_comparison(
        plans=plans, candidates=candidates, bundle=bundle, order_value=order_value, multiplier=multiplier
    )
    crossfit = getattr(bundle, "crossfit", None)
    comparison.held_out_folds = crossfit.k if crossfit is not None else 0
    choices = pd.DataFrame(
        {
            "user_id": user_ids,
            "choice": choice,
            "holdout": held,
            "ruled": ruled,
            "rules_choice": [tuple(np.flatnonzero(row).tolist()) for row in given],
            "rules_holdout": rules_held,
        }
    )
    return OptimisePlan(
        run_id=run.pk,
        multiplier=float(multiplier),
        candidates=candidates,
        order_value=order_value,
        comparison=comparison,
        choices=choices,
    )


def _held_out_comparison(
    *, plans: list[RulePlan], candidates: list[Candidate], bundle: UpliftBundle, order_value: Decimal, multiplier: float
) -> tuple[ChoiceComparison | None, str | None]:
    """Make both choices on past experiments' users by cross-fitted models, and value them on their outcomes.

    The rows are the uplift run's (features as of each experiment's assignment). Each rule's
    condition is evaluated on them, so it may name only fields the uplift features have; the
    rules give each row its first matching rule's package, the optimiser what the fold's model
    (fitted without that fold) values above the plan's price of a CNY among the trusted packages
    that apply to the row; as in the plan, the rules choose for the rows no trusted package
    applies to. The lifetime value a purchase keeps is not counted (no scores as of then): the
    comparison is of the order margin the randomised outcomes show.
    """
    crossfit = getattr(bundle, "crossfit", None)
    if crossfit is None:
        return None, "this uplift run has no cross-fitted models (trained before they existed); retrain uplift"
    if not candidates or not len(crossfit.folds):
        return None, "no offer package to compare"
    fields = {name for plan in plans for name in plan.fields}
    missing = sorted(fields - set(bundle.feature_names))
    if missing:
        return None, (
            f"the rules name {', '.join(missing)}, which past experiments' users have no value of as of their "
            "assignment; only rules on behaviour counts can be compared on held-out outcomes"
        )
    frame = pd.DataFrame(crossfit.features, columns=list(bundle.feature_names))
    masks = [
        np.ones(len(frame), dtype=bool) if plan.condition is None else evaluate_table(plan.condition, frame)
        for plan in plans
    ]
    rule_candidate = {rule: column for column, candidate in enumerate(candidates) for rule in candidate.rules}
    matched = np.logical_or.reduce(masks)
    first_rule = np.argmax(np.vstack(masks), axis=0)
    first_candidate = np.array([rule_candidate.get(int(rule), -1) for rule in first_rule], dtype=np.int64)
    first_candidate = np.where(matched, first_candidate, -1)
    trusted = trusted_packages(bundle)
    usable = np.array([candidate.package in trusted for candidate in candidates], dtype=bool)
    allowed = np.column_stack([masks[candidate.rules[0]] for candidate in candidates])
    ruled = _ruled(allowed, usable)
    costs = np.array([float(candidate.cost) for candidate in candidates])
    price = float(order_value)
    optimised = np.where(ruled, first_candidate, -1)
    for fold, model in enumerate(crossfit.models):
        rows = np.flatnonzero((crossfit.folds == fold) & ~ruled & matched)
        if model is None or not len(rows):
            continue
        # One thread, as UpliftBundle.predict says why.
        with threadpool_limits(limits=1):
            prediction = model.predict(crossfit.features[rows], with_value=False)
            baseline = crossfit.baselines[fold].predict_proba(crossfit.features[rows])[:, 1]
        values = np.full((len(rows), len(candidates)), BLOCKED)
        for column, candidate in enumerate(candidates):
            if usable[column] and candidate.package in prediction.arms:
                uplift = prediction.conversion[:, prediction.arms.index(candidate.package)]
                worth = _worth(uplift, baseline, price, float(candidate.discount), 0.0)
                values[:, column] = np.where(allowed[rows, column], worth, BLOCKED)
        optimised[rows] = choose_at_multiplier(values, costs, multiplier)
    informative, share = crossfit.randomised([candidate.package for candidate in candidates])
    randomised = RandomisedRows(
        treated=crossfit.treated.astype(bool),
        share=share,
        converted=crossfit.converted.astype(float),
        informative=informative,
    )
    result = compare_choices(
        randomised,
        first_candidate,
        optimised,
        price=price,
        discount=[float(candidate.discount) for candidate in candidates],
        cost=costs,
    )
    if result.first.cost == 0 or result.second.cost == 0:
        return result, "too few past experiments' users were randomised to the packages both choices give"
    return result, None


def _clamp(order: np.ndarray, cost: np.ndarray, remaining: Decimal | None) -> np.ndarray:
    """Return which users, taken in ``order``, fit in what is left of the budget (as issuance clamps them)."""
    keep = np.zeros(len(cost), dtype=bool)
    if remaining is None:
        keep[order] = True
        return keep
    fen = np.rint(cost[order] * 100).astype(np.int64)
    keep[order] = np.cumsum(fen) <= int(remaining * 100)
    return keep


def _rules_strategy(matrix, given, held, reach, costs, candidates, remaining) -> Strategy:
    treated = given.any(axis=1) & ~held
    rows = np.flatnonzero(treated)
    cost = (given[rows] * costs[None, :]).sum(axis=1)
    keep = _clamp(np.argsort(reach[rows], kind="stable"), cost, remaining)
    rows, cost = rows[keep], cost[keep]
    worth = np.where(given[rows], matrix[rows], 0.0)
    unknown = (given[rows] & (matrix[rows] <= BLOCKED / 2)).any(axis=1)
    offers = int((given[rows] * np.array([len(candidate.rules) for candidate in candidates])[None, :]).sum())
    strategy = Strategy(
        name="rules",
        users=len(rows),
        holdout=int((given.any(axis=1) & held).sum()),
        offers=offers,
        spend=_money(float(cost.sum())),
        unknown_users=int(unknown.sum()),
    )
    strategy.expected_margin = None if unknown.any() else _money(float(worth.sum()))
    return strategy


def _optimised_strategy(matrix, choice, held, reach, costs, remaining, ruled_given, rules_held) -> Strategy:
    """Return what the optimised campaign spends: the model's choice, and the rules' for the users they choose."""
    by_model = (choice >= 0) & ~held
    by_rules = ruled_given.any(axis=1) & ~rules_held
    rows = np.flatnonzero(by_model | by_rules)
    model_cost = np.where(by_model[rows], costs[np.maximum(choice[rows], 0)], 0.0)
    cost = model_cost + (ruled_given[rows] * costs[None, :]).sum(axis=1)
    keep = _clamp(np.argsort(reach[rows], kind="stable"), cost, remaining)
    rows, cost = rows[keep], cost[keep]
    worth = np.where(by_model[rows], matrix[rows, np.maximum(choice[rows], 0)], 0.0) + np.where(
        ruled_given[rows], matrix[rows], 0.0
    ).sum(axis=1)
    unknown = (ruled_given[rows] & (matrix[rows] <= BLOCKED / 2)).any(axis=1)
    strategy = Strategy(
        name="optimised",
        users=len(rows),
        holdout=int(held.sum() + (ruled_given.any(axis=1) & rules_held).sum()),
        offers=int(by_model[rows].sum() + ruled_given[rows].sum()),
        spend=_money(float(cost.sum())),
        unknown_users=int(unknown.sum()),
    )
    strategy.expected_margin = None if unknown.any() else _money(float(worth.sum()))
    return strategy


def optimised_chunk_plan(
    *,
    campaign: Campaign,
    plans: list[RulePlan],
    frame: pd.DataFrame,
    id_range: tuple[int, int],
    now: datetime,
    optimisation: dict | None,
) -> ChunkPlan:
    """Choose the offers of one chunk with the plan's multiplier: the same choice the plan made for these users.

    Users to whom no package the model may spend on applies get what the rules give them (and
    are held out by the rules' draw), as in a rules-mode campaign.
    """
    if not optimisation or "run" not in optimisation or "multiplier" not in optimisation:
        raise ApplicationError(
            f"campaign {campaign.slug!r} optimises its offers: run it with run_campaign (or the "
            "admin), which plans the allocation before issuing",
            field="mode",
        )
    bundle = _bundle(int(optimisation["run"]))
    order_value = campaign_order_value(campaign)
    candidates = campaign_candidates(campaign, plans, order_value)
    costs = np.array([float(candidate.cost) for candidate in candidates])
    values = chunk_values(
        campaign=campaign,
        plans=plans,
        candidates=candidates,
        bundle=bundle,
        frame=frame,
        id_range=id_range,
        now=now,
        order_value=order_value,
    )
    choice = choose_at_multiplier(
        _tie_broken(values.values, costs, values.reach), costs, float(optimisation["multiplier"])
    )
    chosen = choice >= 0
    holdout = chosen & (values.draw < float(campaign.holdout_share))
    first_match = (
        np.argmax(np.vstack(values.masks), axis=0)
        if values.masks and len(values.user_ids)
        else np.zeros(len(values.user_ids), dtype=np.int64)
    )
    first_rule = (
        np.array([candidates[column].rules[0] for column in np.maximum(choice, 0)], dtype=np.int64)
        if len(candidates)
        else first_match
    )
    matched_rule = np.where(chosen, first_rule, first_match)
    users, rules, sequences = [], [], []
    for column, candidate in enumerate(candidates):
        take = values.user_ids[chosen & ~holdout & (choice == column)]
        for sequence, rule in enumerate(candidate.rules):
            users.append(take)
            rules.append(np.full(len(take), rule, dtype=np.int64))
            sequences.append(np.full(len(take), sequence, dtype=np.int64))
    empty = np.empty(0, dtype=np.int64)
    # Only the chosen users take part in the run: the treated and, held out under the package
    # they would have got, the holdout; the others are left for a later run to reach.
    optimised = ChunkPlan(
        user_ids=values.user_ids[chosen],
        draw=values.draw[chosen],
        holdout=holdout[chosen],
        matched_rule=matched_rule[chosen],
        pick_users=np.concatenate(users) if users else empty,
        pick_rules=np.concatenate(rules) if rules else empty,
        pick_sequence=np.concatenate(sequences) if sequences else empty,
    )
    if not values.ruled.any():
        return optimised
    # The users no trusted package applies to: the rules' own plan for them.
    ruled_ids = values.user_ids[values.ruled]
    by_rules = plan_chunk(campaign, plans, frame)
    users_kept = np.isin(by_rules.user_ids, ruled_ids)
    picks_kept = np.isin(by_rules.pick_users, ruled_ids)
    return ChunkPlan(
        user_ids=np.concatenate([optimised.user_ids, by_rules.user_ids[users_kept]]),
        draw=np.concatenate([optimised.draw, by_rules.draw[users_kept]]),
        holdout=np.concatenate([optimised.holdout, by_rules.holdout[users_kept]]),
        matched_rule=np.concatenate([optimised.matched_rule, by_rules.matched_rule[users_kept]]),
        pick_users=np.concatenate([optimised.pick_users, by_rules.pick_users[picks_kept]]),
        pick_rules=np.concatenate([optimised.pick_rules, by_rules.pick_rules[picks_kept]]),
        pick_sequence=np.concatenate([optimised.pick_sequence, by_rules.pick_sequence[picks_kept]]),
    )
