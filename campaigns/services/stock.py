"""Stock pools: partners' movie-ticket and free-viewing codes, handed to offers at issuance and taken back unused.

An offer of kind ``movie_ticket`` or ``free_viewing`` whose rule names a benefit partner
takes one item of that partner's pool of the same kind, inside the issuing chunk's
transaction. Items are locked ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so issuers of
different campaigns drawing on one pool never wait for each other nor take the same item;
the soonest-expiring item that is still valid when the offer expires goes first. An
offer that finds no item is not issued. When an offer expires or is revoked unused its
item returns to the pool, unless the item is itself past its date, in which case it
expires with it.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

import numpy as np
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from analytics.services.csvfiles import CsvStream
from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import to_cny

from ..models import Offer, Partner, Rule, StockItem

STOCK_KINDS = frozenset(StockItem.Kind.values)
CSV_COLUMNS = ("code", "value", "expires_at")
MAX_FACE_VALUE = Decimal(10) ** 12  # what a MoneyField holds
# Stock assignments written per UPDATE statement (a CASE per field, one line per item).
ASSIGN_BATCH = 500


def rule_needs_stock(rule: Rule) -> bool:
    """Tell whether a rule's offers each take an item from its benefit partner's pool."""
    return rule.offer_kind in STOCK_KINDS and rule.benefit_partner_id is not None


class HeldItem(NamedTuple):
    """A pool item locked for an offer: its id, the partner's code, its value and whether it is paid on use."""

    pk: int
    code: str
    face_value: Decimal
    paid_on_use: bool


@dataclass
class StockHold:
    """Pool items locked for one chunk's picks, and which picks they cover."""

    covered: np.ndarray
    pool_of_rule: dict[int, tuple[int, str]] = field(default_factory=dict)
    items: dict[tuple[int, str], list[HeldItem]] = field(default_factory=dict)

    def hand_out(self, pick_rules: np.ndarray) -> list[HeldItem | None]:
        """Return the item each pick gets, in order, or None for picks that need no stock."""
        if not self.pool_of_rule:
            return [None] * len(pick_rules)
        taken: dict[tuple[int, str], int] = defaultdict(int)
        handed: list[HeldItem | None] = []
        for rule_index in pick_rules.tolist():
            pool = self.pool_of_rule.get(rule_index)
            if pool is None:
                handed.append(None)
                continue
            handed.append(self.items[pool][taken[pool]])
            taken[pool] += 1
        return handed


def stock_hold(*, rules: Sequence[Rule], pick_rules: np.ndarray, valid_until: datetime) -> StockHold:
    """Lock pool items for the picks that need one, in pick order; mark the picks left without one.

    Call inside the issuing transaction; the locks last until it ends. Items are only
    locked here, so those of picks dropped later (budget, offer cap) stay in the pool.
    """
    hold = StockHold(covered=np.ones(len(pick_rules), dtype=bool))
    rules_by_pool: dict[tuple[int, str], list[int]] = defaultdict(list)
    for index, rule in enumerate(rules):
        benefit_partner_id = rule.benefit_partner_id
        if rule_needs_stock(rule) and benefit_partner_id is not None:  # needing stock implies a benefit partner
            pool = (benefit_partner_id, rule.offer_kind)
            rules_by_pool[pool].append(index)
            hold.pool_of_rule[index] = pool
    for (partner_id, kind), rule_indexes in rules_by_pool.items():
        needing = np.flatnonzero(np.isin(pick_rules, rule_indexes))
        if not len(needing):
            continue
        items = [
            HeldItem(*row)
            for row in StockItem.objects.select_for_update(skip_locked=True)
            .filter(partner_id=partner_id, kind=kind, status__in=StockItem.IN_POOL, expires_at__gte=valid_until)
            .order_by("expires_at", "pk")
            .values_list("pk", "code", "face_value", "paid_on_use")[: len(needing)]
        ]
        hold.items[(partner_id, kind)] = items
        hold.covered[needing[len(items) :]] = False
    return hold


def stock_assign(
    *,
    campaign_id: int,
    id_range: tuple[int, int],
    issued_at: datetime,
    codes: Sequence[str],
    items: Sequence[HeldItem | None],
) -> int:
    """Record which offer (by code, issued in this chunk) each held item went to; return how many."""
    pairs = [(code, item[0]) for code, item in zip(codes, items, strict=True) if item is not None]
    if not pairs:
        return 0
    low, high = id_range
    offer_ids = dict(
        Offer.objects.filter(
            campaign_id=campaign_id, user_id__gte=low, user_id__lt=high, issued_at=issued_at, kind__in=STOCK_KINDS
        ).values_list("code", "pk")
    )
    # One statement run over the rows: bulk_update's CASE per row costs more Python than the writes.
    meta = StockItem._meta
    assigned_at = meta.get_field("assigned_at").get_db_prep_save(issued_at, connection)
    with connection.cursor() as cursor:
        for start in range(0, len(pairs), ASSIGN_BATCH):
            cursor.executemany(
                f"UPDATE {meta.db_table} SET offer_id = %s, status = %s, assigned_at = %s, returned_at = NULL "
                "WHERE id = %s",
                [
                    (offer_ids[code], StockItem.Status.ASSIGNED.value, assigned_at, item_id)
                    for code, item_id in pairs[start : start + ASSIGN_BATCH]
                ],
            )
    return len(pairs)


def stock_release(*, offer_ids: Sequence[int], now: datetime | None = None) -> int:
    """Give the items of offers that ended unused back to the pool; an item past its own date expires instead.

    Return how many went back to the pool. Call in the transaction that ends the offers.
    """
    now = now or timezone.now()
    assigned = StockItem.objects.filter(offer_id__in=list(offer_ids), status=StockItem.Status.ASSIGNED)
    assigned.filter(expires_at__lte=now).update(status=StockItem.Status.EXPIRED)
    return assigned.filter(expires_at__gt=now).update(status=StockItem.Status.RETURNED, offer=None, returned_at=now)


def stock_expire_due(*, now: datetime | None = None) -> int:
    """Mark pool items past their date as expired so no offer gets them; return how many."""
    now = now or timezone.now()
    return StockItem.objects.filter(status__in=StockItem.IN_POOL, expires_at__lte=now).update(
        status=StockItem.Status.EXPIRED
    )


@dataclass
class StockLoad:
    loaded: int = 0
    already_present: int = 0


def _parse_expiry(text: str) -> datetime | None:
    """Read an ISO time or date; without an offset it is in TIME_ZONE, and a bare date means the end of that day."""
    try:
        day = parse_date(text)
        moment = datetime.combine(day, time.max) if day is not None else parse_datetime(text)
    except ValueError:
        return None
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


def stock_load_file(
    *, partner: Partner, kind: str, path, now: datetime | None = None, paid_on_use: bool = False
) -> StockLoad:
    """Load a partner's codes from a CSV (code, value, expires_at), all or nothing; codes already loaded are skipped.

    Any bad row stops the whole file, with every bad row named by line and column. ``paid_on_use``
    marks codes the partner bills only when used (otherwise a ticket was bought in advance).
    """
    if kind not in STOCK_KINDS:
        raise ApplicationError(
            f"unknown stock kind {kind!r}; use one of {', '.join(sorted(STOCK_KINDS))}", field="kind"
        )
    now = now or timezone.now()
    max_code = StockItem.CODE_MAX_LENGTH
    items: list[StockItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with CsvStream(path, required=CSV_COLUMNS) as stream:
        for batch in stream.batches():
            for line, code, value, expires in zip(
                batch.lines, *(batch.columns[name] for name in CSV_COLUMNS), strict=True
            ):
                if not code:
                    problems.append(f"line {line}: code: missing")
                elif len(code) > max_code:
                    problems.append(f"line {line}: code: longer than {max_code} characters")
                elif code in seen:
                    problems.append(f"line {line}: code: {code!r} already on line {seen[code]}")
                seen.setdefault(code, line)
                try:
                    face_value = to_cny(value or "0")
                    if not 0 <= face_value < MAX_FACE_VALUE:
                        raise InvalidOperation
                except (InvalidOperation, ValueError):
                    problems.append(f"line {line}: value: not an amount in CNY from 0 to {MAX_FACE_VALUE}: {value!r}")
                    face_value = Decimal(0)
                expires_at = _parse_expiry(expires)
                if expires_at is None:
                    problems.append(f"line {line}: expires_at: not an ISO 8601 date or time: {expires!r}")
                    continue  # the file is refused, so the row needs no item
                if expires_at <= now:
                    problems.append(f"line {line}: expires_at: already past: {expires}")
                items.append(
                    StockItem(
                        partner=partner,
                        kind=kind,
                        code=code,
                        face_value=face_value,
                        expires_at=expires_at,
                        paid_on_use=paid_on_use,
                    )
                )
        problems.extend(
            f"line {row.line}: {row.reason}" if row.column == "*" else f"line {row.line}: {row.column}: {row.reason}"
            for row in stream.malformed
        )
    if problems:
        shown = problems[:20]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise ApplicationError(f"nothing loaded from {path}: " + "; ".join(shown) + more, code="invalid_rows")
    existing = {
        code
        for start in range(0, len(items), 5_000)
        for code in StockItem.objects.filter(
            partner=partner, code__in=[i.code for i in items[start : start + 5_000]]
        ).values_list("code", flat=True)
    }
    fresh = [item for item in items if item.code not in existing]
    try:
        with transaction.atomic():
            StockItem.objects.bulk_create(fresh, batch_size=1_000)
    except IntegrityError:
        raise ApplicationError(
            "some of these codes were loaded by someone else meanwhile; run the load again", code="conflict", status=409
        ) from None
    return StockLoad(loaded=len(fresh), already_present=len(items) - len(fresh))
