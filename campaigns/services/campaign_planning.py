"""Planning a campaign's run: validated rules, chunks of user ids, the holdout draw, each chunk's picks, fresh codes.

Both ways of running a campaign build on this module: rules mode (``campaign_run``) gives
every matching rule's offer as ``plan_chunk`` picks it, and optimise mode
(``campaign_optimise``) chooses among the same rules' packages for the same chunks, loaded
by ``load_chunk`` and split by the same stable holdout draw. Nothing here writes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection

from analytics.models import PendingUser
from analytics.selectors import sql_columns, user_frame, user_id_ranges
from campaigns.rules import (
    AnyOf,
    Condition,
    ConditionError,
    Registry,
    SqlFragment,
    compile_sql,
    evaluate_table,
    referenced_fields,
    validate,
)
from crossmkt_site.bulk import ids_in_sql
from crossmkt_site.errors import ApplicationError

from ..models import Campaign, CampaignAssignment, Rule
from ..models.offers import CODE_ALPHABET, CODE_LENGTH
from ..selectors.rule_fields import condition_registry, item_category_sources

# Users per chunk: about 0.5 s of evaluation and one COPY of at most this many offers on
# the benchmark machine, short enough that a killed worker's retry costs little.
CHUNK_USERS = 50_000


@dataclass(frozen=True)
class RulePlan:
    rule: Rule
    condition: Condition | None  # a validated condition, or None: everyone reachable qualifies

    @property
    def fields(self) -> tuple[str, ...]:
        return referenced_fields(self.condition) if self.condition is not None else ()


def rule_condition(rule: Rule, registry: Registry | None = None) -> Condition | None:
    """Validate a rule's stored condition; an empty condition means every reachable user."""
    if not rule.condition:
        return None
    try:
        return validate(rule.condition, registry or condition_registry())
    except ConditionError as error:
        raise ApplicationError(f"rule {rule.name!r}: {error}", field="condition") from None


def campaign_rule_plans(campaign: Campaign) -> list[RulePlan]:
    """Return the campaign's rules, validated, highest priority first."""
    rules = list(campaign.rules.order_by("-priority", "pk"))
    if not rules:
        raise ApplicationError(f"campaign {campaign.slug!r} has no rules; add one in the admin", field="rules")
    registry = condition_registry()
    return [RulePlan(rule, rule_condition(rule, registry)) for rule in rules]


def _campaign_seed(campaign: Campaign, purpose: str) -> np.uint64:
    name = f"crossmkt:{campaign.pk}:{campaign.slug}" + (f":{purpose}" if purpose != "holdout" else "")
    return np.uint64(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big"))


def holdout_draw(campaign: Campaign, user_ids: np.ndarray, purpose: str = "holdout") -> np.ndarray:
    """Return a stable uniform number in [0, 1) per user for this campaign (splitmix64 of seed and id).

    ``purpose`` gives an independent draw for another use: "reach" orders users when the
    budget cannot serve them all.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids, dtype=np.uint64) + _campaign_seed(campaign, purpose)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class ChunkPlan:
    """What one chunk would do: eligible users, holdout, and (user, rule, sequence) picks for the treated."""

    user_ids: np.ndarray
    draw: np.ndarray
    holdout: np.ndarray
    matched_rule: np.ndarray  # index of the first (highest-priority) matching rule per eligible user
    pick_users: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    pick_rules: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    pick_sequence: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def plan_chunk(campaign: Campaign, plans: list[RulePlan], frame: pd.DataFrame) -> ChunkPlan:
    """Evaluate every rule over a frame of reachable users and pick offers, all column-wise."""
    user_ids = frame.index.to_numpy(dtype=np.int64)
    n = len(user_ids)
    masks = [
        np.ones(n, dtype=bool) if plan.condition is None else evaluate_table(plan.condition, frame) for plan in plans
    ]
    any_match = np.logical_or.reduce(masks) if masks else np.zeros(n, dtype=bool)
    first_rule = np.where(any_match, np.argmax(np.vstack(masks), axis=0) if masks else -1, -1)
    draw = holdout_draw(campaign, user_ids)
    holdout = any_match & (draw < float(campaign.holdout_share))
    treated = any_match & ~holdout

    count = np.zeros(n, dtype=np.int64)
    blocked = np.zeros(n, dtype=bool)
    users, rules, sequences = [], [], []
    for index, (plan, mask) in enumerate(zip(plans, masks, strict=True)):
        take = treated & mask & ~blocked & (count < campaign.per_user_limit)
        users.append(user_ids[take])
        rules.append(np.full(int(take.sum()), index, dtype=np.int64))
        sequences.append(count[take])
        count[take] += 1
        if plan.rule.exclusive:
            blocked |= mask
    eligible = any_match
    return ChunkPlan(
        user_ids=user_ids[eligible],
        draw=draw[eligible],
        holdout=holdout[eligible],
        matched_rule=first_rule[eligible],
        pick_users=np.concatenate(users) if users else np.empty(0, dtype=np.int64),
        pick_rules=np.concatenate(rules) if rules else np.empty(0, dtype=np.int64),
        pick_sequence=np.concatenate(sequences) if sequences else np.empty(0, dtype=np.int64),
    )


def load_chunk(
    plans: list[RulePlan],
    id_range: tuple[int, int],
    as_of: datetime,
    unassigned_in: Campaign | None = None,
    *,
    user_ids: Sequence[int] | None = None,
    skip_pending: bool = False,
) -> pd.DataFrame:
    """Load the reachable users of a range that match some rule (and, given a campaign, have no assignment in it).

    Where every rule's condition has an SQL form, the database does the first cut, so a
    run reads only the users it may act on; ``plan_chunk`` then evaluates each rule exactly.
    ``user_ids`` narrows the range to those users (the live path). ``skip_pending`` leaves out
    users with events the live path has not evaluated yet: their features and scores predate
    their latest events, and the live path decides for them once it has refreshed both.
    """
    fields = sorted({name for plan in plans for name in plan.fields})
    return user_frame(
        fields,
        as_of=as_of,
        id_range=id_range,
        user_ids=user_ids,
        reachable_only=True,
        where=_chunk_filter(plans, unassigned_in, id_range, skip_pending=skip_pending),
        item_categories=item_category_sources(),
    )


def users_unassigned(campaign: Campaign, user_ids: Sequence[int]) -> list[int]:
    """Return those of ``user_ids`` with no assignment in ``campaign``, in order.

    A few scattered users (the live path's) are looked up by the (campaign, user) unique index, not
    left out by ``NOT EXISTS`` in the read: for a campaign newer than the planner's statistics,
    PostgreSQL scanned its every assignment once per user (11 s for 1,000 users at 80k assignments).
    """
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return ids
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id FROM {CampaignAssignment._meta.db_table} "
            f"WHERE campaign_id = %s AND {ids_in_sql('user_id', ids)}",
            [campaign.pk],
        )
        assigned = {user_id for (user_id,) in cursor.fetchall()}
    return [pk for pk in ids if pk not in assigned]


def _chunk_filter(
    plans: list[RulePlan], unassigned_in: Campaign | None, id_range: tuple[int, int], *, skip_pending: bool = False
) -> SqlFragment | None:
    parts: list[SqlFragment] = []
    if skip_pending:
        parts.append(
            SqlFragment(
                f"NOT EXISTS (SELECT 1 FROM {PendingUser._meta.db_table} p "
                "WHERE p.user_id = u.id AND p.user_id >= %s AND p.user_id < %s)",
                tuple(id_range),
            )
        )
    columns = sql_columns({name for plan in plans for name in plan.fields})
    conditions = [plan.condition for plan in plans if plan.condition is not None]
    if columns is not None and len(conditions) == len(plans):
        parts.append(compile_sql(AnyOf(tuple(conditions)), columns))
    if unassigned_in is not None:
        parts.append(
            SqlFragment(
                f"NOT EXISTS (SELECT 1 FROM {CampaignAssignment._meta.db_table} a "
                "WHERE a.campaign_id = %s AND a.user_id = u.id AND a.user_id >= %s AND a.user_id < %s)",
                (unassigned_in.pk, *id_range),
            )
        )
    if not parts:
        return None
    return SqlFragment(" AND ".join(part.sql for part in parts), tuple(p for part in parts for p in part.params))


def campaign_chunks(*, chunk_users: int = CHUNK_USERS) -> list[tuple[int, int]]:
    """Split the reachable users' id space into ranges of about ``chunk_users`` ids."""
    return user_id_ranges(size=chunk_users, reachable_only=True)


def new_codes(count: int) -> list[str]:
    """Return ``count`` fresh unguessable codes (80 random bits each), drawn in one go."""
    if count == 0:
        return []
    # 256 is a multiple of 32, so taking each byte modulo 32 keeps every symbol equally likely.
    symbols = np.frombuffer(secrets.token_bytes(count * CODE_LENGTH), dtype=np.uint8) % len(CODE_ALPHABET)
    alphabet = np.frombuffer(CODE_ALPHABET.encode(), dtype=np.uint8)
    return alphabet[symbols].view(f"S{CODE_LENGTH}").astype(str).tolist()
